"""SQLite: the threads of one process take turns for the write lock on a lock of their own (db/engine.py).

SQLite's busy handler sleeps in growing steps between looks at a taken lock, so a thread could
wait hundreds of ms behind another that writes often (``scripts/bench_sqlite_writers.py``
measures it). These tests check the turns themselves, not their timing.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from db import engine as engine_module
from db.engine import Database, is_transient


@pytest.fixture
def two_handles(tmp_path):
    """Two Database objects on one file, as two parts of one process would hold."""
    url = f"sqlite:///{tmp_path}/turns.db"
    first, second = Database(url), Database(url)
    with first.write() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield first, second
    first.dispose()
    second.dispose()


def test_a_second_writer_of_the_process_begins_only_after_the_first_has_committed(two_handles) -> None:
    first, second = two_handles
    inside, leave = threading.Event(), threading.Event()
    seen_by_second: list[int] = []

    def hold() -> None:
        with first.write() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)

    def write_after() -> None:
        with second.write() as session:
            seen_by_second.append(session.execute(text("SELECT count(*) FROM t")).scalar_one())
            session.execute(text("INSERT INTO t VALUES (2)"))

    writer = threading.Thread(target=write_after)
    writer.start()
    writer.join(0.3)
    assert writer.is_alive(), "the second writer waits while the first holds its transaction"
    leave.set()
    holder.join(10)
    writer.join(10)
    assert seen_by_second == [1], "it began after the first had committed, and saw its row"
    with first.read() as session:
        assert session.execute(text("SELECT x FROM t ORDER BY rowid")).scalars().all() == [1, 2]


def test_a_writer_that_waits_longer_than_the_busy_timeout_gets_a_transient_database_error(two_handles, monkeypatch) -> None:
    first, second = two_handles
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with first.write():
            inside.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    try:
        with pytest.raises(Exception) as raised, second.write() as session:
            session.execute(text("INSERT INTO t VALUES (3)"))
    finally:
        leave.set()
        holder.join(10)
    assert is_transient(raised.value), "ridden out like SQLite's own 'database is locked'"
    assert "database is locked" in str(raised.value)
    with second.write() as session:  # the lock is free again once the holder is done
        session.execute(text("INSERT INTO t VALUES (4)"))
    with first.read() as session:
        assert session.execute(text("SELECT x FROM t")).scalars().all() == [4]


def test_a_failed_write_unit_gives_its_turn_back(two_handles) -> None:
    first, second = two_handles
    with pytest.raises(RuntimeError), first.write() as session:
        session.execute(text("INSERT INTO t VALUES (5)"))
        raise RuntimeError("something went wrong half-way")
    done = threading.Event()

    def write() -> None:
        with second.write() as session:
            session.execute(text("INSERT INTO t VALUES (6)"))
        done.set()

    threading.Thread(target=write).start()
    assert done.wait(10), "the next writer was not kept waiting by the failed one"
    with first.read() as session:
        assert session.execute(text("SELECT x FROM t")).scalars().all() == [6]
