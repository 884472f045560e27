"""Create or upgrade the schema with Alembic, one process at a time; check the schema before working.

``shadowline migrate`` and ``shadowline init`` upgrade. Migrating is a step of its own: the
upgrade holds a lock (a PostgreSQL advisory lock inside the migrating transaction, or a lock
file beside the SQLite file), so processes that start together on a new database upgrade one
after the other and the later ones find nothing left to do. On PostgreSQL the worker, the
inspection service and the app do not migrate at all: they check the schema's revision on start
(:func:`require_schema`), wait a while for a migration under way, and refuse with one line
saying what to run. On SQLite (one machine) opening the database still upgrades it, under the lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from db import locks

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: How long a process waits for the SQLite migration lock file before giving up.
SQLITE_LOCK_TIMEOUT_S = 300.0


class SchemaError(RuntimeError):
    """The database's schema is not the one this code needs (the message says what to run)."""


def _quiet_alembic() -> None:
    """Alembic says at INFO which plugins it set up and that it uses SQLite's implementation, in every
    process at every start (about ten lines in `up`'s log); its warnings and errors still show."""
    logger = logging.getLogger("alembic")
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))


def alembic_config() -> Config:
    _quiet_alembic()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    from filelock import FileLock

    with FileLock(f"{database}.migrate.lock", timeout=SQLITE_LOCK_TIMEOUT_S):
        yield


def upgrade(engine: Engine, revision: str = "head", *, models_dir: Path | None = None) -> None:
    """Bring the database at ``engine`` to ``revision`` (idempotent), holding the migration lock.

    Args:
        models_dir: This machine's models folder, for data migrations that address model versions
            (0014); the process's settings when omitted.
    """
    config = alembic_config()
    if models_dir is not None:
        config.attributes["models_dir"] = models_dir
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            # Held until this transaction commits; PostgreSQL's DDL is transactional, so the next
            # process in line reads the new revision and has nothing left to do.
            # No statement timeout here: waiting for another process's migration, or converting a big table, may take long.
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": locks.lock_key(locks.MIGRATIONS)})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return
    with _sqlite_file_lock(engine) if engine.dialect.name == "sqlite" else _no_lock(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def current_revision(engine: Engine) -> str | None:
    _quiet_alembic()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_problem(engine: Engine) -> str | None:
    """Why the schema cannot be worked on now (None when it is at this code's head)."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return None
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is None:
        return "the database has no Shadowline schema yet: run `shadowline migrate` (or `shadowline init`) once, from one machine"
    if current not in known:
        return f"the database's schema ({current}) is newer than this Shadowline ({head}): upgrade Shadowline on this machine"
    return f"the database's schema is at {current}, this Shadowline needs {head}: run `shadowline migrate` once, from one machine"


def require_schema(engine: Engine, *, wait_s: float = 0.0, poll_s: float = 1.0) -> None:
    """Return once the schema is at head; wait up to ``wait_s`` for a migration under way, then refuse.

    Raises:
        SchemaError: Still not at head after ``wait_s`` (or newer than this code: at once).
    """
    deadline = time.monotonic() + wait_s
    while True:
        problem = schema_problem(engine)
        if problem is None:
            return
        if "newer" in problem or time.monotonic() >= deadline:
            raise SchemaError(problem)
        time.sleep(poll_s)
