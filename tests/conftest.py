"""Shared fixtures: a fresh installation (data folder, migrated database) per test, the shipped model.

The database is SQLite unless a test asks for the ``backend`` fixture's ``postgres`` value: a
module or test marked ``@pytest.mark.both_backends`` runs once on each (``[sqlite]``,
``[postgres]``), on a throw-away PostgreSQL server started once per session (``db/throwaway_postgres.py``).
``SHADOWLINE_DATABASE_URL`` is removed from the environment so a developer's own database is
never touched; the tests set it themselves where a subprocess needs it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Before anything reads settings: the session's own data folder, never the developer's data/.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="shadowline-tests-"))
os.environ["SHADOWLINE_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.pop("SHADOWLINE_DATABASE_URL", None)
os.environ.pop("SHADOWLINE_MODELS_DIR", None)

import pytest  # noqa: E402

from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION, Settings, load_settings  # noqa: E402
from db.bootstrap import initialize, open_database  # noqa: E402
from db.engine import Database  # noqa: E402

SHIPPED_MODEL_DIR = PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION


BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` that use a database run once on SQLite and once on PostgreSQL."""
    chosen = any("backend" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))  # one backend named
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server, started on first use; a server that cannot start fails the test with why."""
    from db.throwaway_postgres import PostgresUnavailable, remove, start_server

    try:
        server = start_server()
    except PostgresUnavailable as error:
        pytest.fail(f"the PostgreSQL test server could not start: {error}", pytrace=False)
    yield server
    remove(server)


@contextmanager
def postgres_stopped(server) -> Iterator[None]:
    """The session's test server stopped for the block (``pg_ctl stop -m immediate``), started again after it whatever happens."""
    server.stop()
    try:
        yield
    finally:
        server.start()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` unless parametrised (``both_backends``, or ``@pytest.mark.parametrize("backend", ["postgres"], indirect=True)``)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """A fresh PostgreSQL database's URL for the ``postgres`` backend; None (the data folder's SQLite file) otherwise.

    It is already at the latest schema (a copy of a template migrated once per session, much faster
    than migrating each test's database), except for tests of the migrations (``empty_database``).
    """
    if backend == "sqlite":
        return None
    return request.getfixturevalue("postgres_server").new_database(migrated="empty_database" not in request.fixturenames)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    """Settings of a fresh, independent installation in ``tmp_path`` (on the test's backend)."""
    env = {"SHADOWLINE_DATA_DIR": str(tmp_path / "data"), "SHADOWLINE_MODELS_DIR": str(PROJECT_ROOT / "models")}
    if database_url:
        env["SHADOWLINE_DATABASE_URL"] = database_url
    return load_settings(env)


@pytest.fixture
def database(settings: Settings):
    """The installation's database, migrated to head, with the shipped model and line-1."""
    db = open_database(settings)
    initialize(db, settings)
    yield db
    db.dispose()


@pytest.fixture
def empty_database(settings: Settings):
    db = Database(settings.database_url)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    assert (SHIPPED_MODEL_DIR / "card.json").is_file(), f"the shipped model is missing at {SHIPPED_MODEL_DIR}"
    return SHIPPED_MODEL_DIR


@pytest.fixture(scope="session")
def detector(shipped_model_dir: Path):
    from core.detector.adapter import Detector

    return Detector(shipped_model_dir)


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``shadowline`` subprocess working on ``settings``' installation."""
    env = dict(os.environ)
    env["SHADOWLINE_DATA_DIR"] = str(settings.data_dir)
    env["SHADOWLINE_MODELS_DIR"] = str(settings.models_dir)
    env.pop("SHADOWLINE_DATABASE_URL", None)
    if not settings.database_url.startswith("sqlite"):
        env["SHADOWLINE_DATABASE_URL"] = settings.database_url
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", *args]


@pytest.fixture(scope="session")
def drift_reference(shipped_model_dir: Path):
    """The shipped model's drift reference, resampled as the monitor does."""
    from core.drift.metrics import DriftConfig
    from core.drift.reference import load_model_reference, stratify

    return stratify(load_model_reference(shipped_model_dir), DriftConfig().reference_defect_rate)


@pytest.fixture(scope="session")
def plant_best_pt(tmp_path_factory) -> Path:
    """A plant lab's own ``best.pt``: a tiny Ultralytics detector of ``crack`` and ``stain``, trained here (seconds)."""
    pytest.importorskip("ultralytics", reason="training a plant's model needs Ultralytics")
    from tests.plant_data import train_tiny_plant_model

    return train_tiny_plant_model(tmp_path_factory.mktemp("plant-lab"))
