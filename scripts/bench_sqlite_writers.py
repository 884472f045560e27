"""Two threads of one process writing to one SQLite file: how long the second waits for its turn.

    .venv/bin/python scripts/bench_sqlite_writers.py [ROUNDS]

One thread writes often (each transaction holds SQLite's write lock 4 ms, then 1 ms off), as the
inspection service's threads and its upkeep do under load; the other starts a transaction every
5 ms (holding it 2 ms) and records how long it waited to begin. Two ways to wait, alternating
round by round: SQLite's own busy handler (``BEGIN IMMEDIATE`` straight away: it sleeps 1, 2, 5,
10... ms between looks) and :meth:`db.engine.Database.write` (the process's write lock first).
Prints the waits' median, p99 and maximum per way. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from db.engine import Database

TRANSACTIONS = 300


def _round(unit: Callable[[], AbstractContextManager[Session]]) -> list[float]:
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            with unit() as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
                time.sleep(0.004)
            time.sleep(0.001)

    other = threading.Thread(target=busy)
    other.start()
    waits = []
    try:
        for _ in range(TRANSACTIONS):
            asked = time.perf_counter()
            with unit() as session:
                session.execute(text("SELECT 1"))  # the transaction has begun: the write lock is held
                waits.append((time.perf_counter() - asked) * 1000)
                session.execute(text("INSERT INTO t VALUES (2)"))
                time.sleep(0.002)
            time.sleep(0.003)
    finally:
        stop.set()
        other.join()
    return waits


def _summary(waits: list[float]) -> str:
    ordered = sorted(waits)
    return f"median {statistics.median(ordered):6.2f} ms  p99 {ordered[int(0.99 * len(ordered))]:7.2f} ms  max {ordered[-1]:7.2f} ms"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/writers.db")
        with database.write() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        sqlite_alone = sessionmaker(database.engine.execution_options(sqlite_begin="IMMEDIATE")).begin
        ways: dict[str, Callable[[], AbstractContextManager[Session]]] = {
            "SQLite's busy handler": sqlite_alone,
            "Database.write (process lock)": database.write,
        }
        results: dict[str, list[float]] = {name: [] for name in ways}
        for number in range(rounds):
            for name, unit in ways.items():
                waits = _round(unit)
                results[name] += waits
                print(f"round {number + 1} {name:32} {_summary(waits)}")
        for name, waits in results.items():
            print(f"all     {name:32} {_summary(waits)}")
        database.dispose()


if __name__ == "__main__":
    main()
