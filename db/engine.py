"""The engine, made once per process, and the two kinds of unit of work.

SQLite runs in WAL mode with a busy timeout and foreign keys on, so the app reads while the
worker writes. Write units start with ``BEGIN IMMEDIATE``: they take SQLite's write lock up front
and wait for it (busy timeout) instead of failing half-way when a read turns into a write.
Read units use a plain deferred ``BEGIN`` and never block the writer.

Threads of one process take turns for SQLite's write lock on a lock of the process (one per
database file) before ``BEGIN IMMEDIATE``. Left to SQLite, a thread that finds the write lock
taken sleeps in growing steps (1, 2, 5, 10, 15, 20, 25 ms...) and checks again, so another thread
that writes often can take the lock back every time it looks: measured with two writer threads
(``scripts/bench_sqlite_writers.py``), waits of p99 100-180 ms for a lock held 4 ms at a time. On
the process's lock a waiting thread is woken as soon as the lock is free. Other processes (the
app, a worker beside the service) still meet SQLite's own busy timeout.

Usage::

    database = Database(url)
    with database.write() as session:   # commits at the end, rolls back on error
        ...
    with database.read() as session:
        ...
"""

from __future__ import annotations

import sqlite3
import threading
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


#: One write lock per SQLite file and process (see the module's docstring), by the file's resolved path.
_SQLITE_WRITE_LOCKS: dict[str, threading.RLock] = {}
_SQLITE_WRITE_LOCKS_GUARD = threading.Lock()


def _sqlite_write_lock(database: str | None) -> threading.RLock:
    key = str(Path(database).resolve()) if database and database != ":memory:" else ":memory:"
    with _SQLITE_WRITE_LOCKS_GUARD:
        return _SQLITE_WRITE_LOCKS.setdefault(key, threading.RLock())


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
        #: SQLite: this process's threads take turns here before SQLite's write lock (module docstring).
        self._write_lock = _sqlite_write_lock(self.engine.url.database) if self.is_sqlite else None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A unit of work that changes data: committed at the end, rolled back on any error."""
        with self._write_turn(), self._writer.begin() as session:
            yield session

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """SQLite: wait for this process's other writers, as long as SQLite's busy timeout would wait."""
        lock = self._write_lock
        if lock is None:
            yield
            return
        if not lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(f"database is locked: another thread of this process has been writing for {SQLITE_BUSY_TIMEOUT_MS / 1000:.0f} s"),
            )
        try:
            yield
        finally:
            lock.release()

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
