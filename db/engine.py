"""The engine, made once per process, and the two kinds of unit of work.

SQLite runs in WAL mode with a busy timeout and foreign keys on, so the app reads while the
worker writes. Write units start with ``BEGIN IMMEDIATE``: they take SQLite's write lock up front
and wait for it (busy timeout) instead of failing half-way when a read turns into a write.
Read units use a plain deferred ``BEGIN`` and never block the writer.

Usage::

    database = Database(url)
    with database.write() as session:   # commits at the end, rolls back on error
        ...
    with database.read() as session:
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class ConnectionOptions:
    """How a PostgreSQL connection behaves (``SHADOWLINE_DB_*`` settings; SQLite ignores them).

    Attributes:
        pool_size: Connections kept open per process.
        max_overflow: Extra connections a process may open at a peak.
        connect_timeout_s: Give up connecting after this long (a worker then retries, see core.worker).
        statement_timeout_s: The server cancels a statement running longer (0: never).
        idle_in_transaction_timeout_s: The server ends a session idle inside a transaction this long,
            releasing its locks (a process frozen mid-transaction cannot hold a line forever).
        keepalive_idle_s: TCP keepalives after this long idle, so a dead peer is noticed.
    """

    pool_size: int = 5
    max_overflow: int = 5
    connect_timeout_s: int = 10
    statement_timeout_s: int = 120
    idle_in_transaction_timeout_s: int = 60
    keepalive_idle_s: int = 30


def safe_url(url: str) -> str:
    """``url`` with its password masked (``***``), for anything printed or logged."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: print nothing of it
        return "(SHADOWLINE_DATABASE_URL)"


def is_transient(error: BaseException) -> bool:
    """A database error a process should ride out (server restarting, network blip), not a bug."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, OperationalError | InterfaceError)


def database_now(session: Session) -> datetime:
    """Now on the database server's clock (PostgreSQL), this machine's on SQLite.

    Leases and heartbeats written by several machines are compared with each other: on one clock,
    a machine whose clock runs ahead can neither steal phones early nor look alive when it is not.
    """
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.scalar(text("SELECT statement_timestamp()"))
        return value.astimezone(UTC)
    return datetime.now(UTC)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (pysqlite's own is unreliable).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, options: ConnectionOptions | None = None) -> Engine:
    """Create an engine for ``url``; for SQLite, make the file's folder and set the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    options = options or ConnectionOptions()
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {
            "connect_timeout": options.connect_timeout_s,
            "keepalives": 1,
            "keepalives_idle": options.keepalive_idle_s,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": (
                f"-c statement_timeout={options.statement_timeout_s * 1000} "
                f"-c idle_in_transaction_session_timeout={options.idle_in_transaction_timeout_s * 1000}"
            ),
        }
    # pre-ping: a connection the server dropped (restart, failover) is replaced at checkout, not
    # handed to a unit of work; recycle: none lives longer than half an hour (load balancers).
    return create_engine(url, pool_pre_ping=True, pool_size=options.pool_size, max_overflow=options.max_overflow, pool_recycle=1800, connect_args=connect_args)


class Database:
    """One database: its engine and the read and write units of work."""

    def __init__(self, url: str, options: ConnectionOptions | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, options)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(writer, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A unit of work that changes data: committed at the end, rolled back on any error."""
        with self._writer.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that only reads. It ends like any other (nothing to write), and objects
        loaded in it keep their values afterwards (no expiry), though pages get plain data anyway."""
        with self._reader() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Ask the server for nothing (``SELECT 1``); raises what a connection attempt raises when it does not answer."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
