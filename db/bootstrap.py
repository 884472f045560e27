"""Open the database and bring an installation to a working state (``shadowline init``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.auth import generate_password
from core.settings import Settings
from core.vocabulary import Role
from db import audit, locks
from db.engine import ConnectionOptions, Database
from db.lines import add_line, list_lines, set_active_model
from db.migrate import require_schema, upgrade
from db.registry import register_model_version
from db.users import add_user, count_users

DEFAULT_LINE = "line-1"


def open_database(settings: Settings, *, migrate: bool | None = None, wait_s: float = 0.0) -> Database:
    """The database of ``settings``, at the latest schema.

    Args:
        migrate: Upgrade the schema (under the migration lock, see :mod:`db.migrate`). None (the
            default): on SQLite (one machine) yes; on PostgreSQL no, migrating is ``shadowline
            migrate``'s job, and the schema is only checked.
        wait_s: When not migrating, how long to wait for a migration under way elsewhere.

    Raises:
        SchemaError: Not migrating, and the schema is not at this code's head (one line saying what to run).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url, connection_options(settings))
    if migrate is None:
        migrate = database.is_sqlite
    try:
        if migrate:
            upgrade(database.engine, models_dir=settings.models_dir)
        else:
            require_schema(database.engine, wait_s=wait_s)
    except BaseException:
        database.dispose()
        raise
    return database


def connection_options(settings: Settings) -> ConnectionOptions:
    return ConnectionOptions(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        connect_timeout_s=settings.db_connect_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
        idle_in_transaction_timeout_s=settings.db_idle_in_transaction_timeout_s,
    )


@dataclass(frozen=True)
class InitReport:
    model_version: str | None
    model_problem: str | None
    lines: list[str]
    #: The first admin's generated password, set only on the run that created the admin.
    admin_password: str | None = None


FIRST_ADMIN = "admin"
ADMIN_PASSWORD_ENV = "SHADOWLINE_ADMIN_PASSWORD"


def initialize(database: Database, settings: Settings) -> InitReport:
    """Register the shipped model and create ``line-1`` (idempotent)."""
    from core.detector.card import ModelError

    model_id = None
    model_version = None
    problem = None
    try:
        with database.write() as session:
            # Several processes may run `init` (or `up`) on a new database at once: each unit holds a
            # named lock, so the later ones find the model, line-1 and the admin already there.
            locks.advisory_xact_lock(session=session, name=locks.INIT)
            registered = register_model_version(session=session, model_dir=settings.shipped_model_dir, actor=audit.SYSTEM_ACTOR, models_dir=settings.models_dir)
            model_id, model_version = registered.id, registered.version
    except ModelError as error:
        problem = str(error)
    with database.write() as session:
        locks.advisory_xact_lock(session=session, name=locks.INIT)
        if not list_lines(session=session):
            add_line(session=session, name=DEFAULT_LINE, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
        for line in list_lines(session=session):
            if line.active_model_id is None and model_id is not None:
                set_active_model(session=session, line_id=line.id, model_id=model_id, actor=audit.SYSTEM_ACTOR, note="the shipped model")
        lines = [line.name for line in list_lines(session=session)]
    admin_password = None
    with database.write() as session:
        locks.advisory_xact_lock(session=session, name=locks.INIT)
        if count_users(session=session) == 0:
            given = os.environ.get(ADMIN_PASSWORD_ENV)
            password = given or generate_password()
            add_user(session=session, name=FIRST_ADMIN, role=Role.ADMIN, password=password, actor=audit.SYSTEM_ACTOR)
            admin_password = None if given else password
    return InitReport(model_version, problem, lines, admin_password)
