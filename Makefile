# Shadowline's two commands: `make up` (install everything, start the product) and `make test`.
# Nothing else needs installing by hand: a virtual environment is made in .venv.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check

.PHONY: up edge test install install-test chromium postgresql lint typecheck pytest clean

up: install
	$(BIN)/shadowline up

test: install-test chromium postgresql lint typecheck pytest

# An edge box beside a line: the runtime only (worker, prediction server, app, CLI without
# training), no torch. `make up` later adds the train extra to the same .venv.
edge: $(VENV)/.edge

$(VENV)/.edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# The heavy part is torch. Lightest first: the CPU-only build (~0.7 GB) from PyTorch's own index;
# where that index cannot be reached, the PyPI build (~5.5 GB with its CUDA libraries, which run
# fine on a CPU). See README, "Installing torch".
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --timeout 15 --retries 1 --index-url https://download.pytorch.org/whl/cpu torch==2.9.1 torchvision==0.24.1 \
	  || $(PIP) install torch==2.14.1 torchvision==0.29.1
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install -e '.[train]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[train,test,postgres]'
	touch $@

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	  else sudo apt-get install -y chromium; fi; }

# The database tests run on SQLite and on a throw-away PostgreSQL server (db/throwaway_postgres.py) made
# with Debian's server binaries; nothing is started here, the tests start and stop their own.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the database tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }; \
	  else sudo apt-get install -y postgresql; fi; }

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data
