"""Named locks for units of work that have no row to lock (PostgreSQL advisory locks).

A count-then-insert such as "at most N training jobs at once" has no single row both writers
would touch, so row locks cannot serialise it and a unique constraint cannot express it. A
transaction-scoped advisory lock on a fixed name does: the second unit waits until the first
commits, then counts again. SQLite needs none: its write units hold the single write lock.
"""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session

#: Names of the plant-wide locks, in one place (each becomes a 32-bit key; the high half says "shadowline").
MIGRATIONS = "shadowline.migrations"
TRAINING_SLOTS = "shadowline.training-slots"
INIT = "shadowline.init"
_NAMESPACE = 0x5348  # "SH"


def lock_key(name: str) -> int:
    """The advisory-lock key of ``name`` (stable across processes and machines)."""
    return (_NAMESPACE << 32) | zlib.crc32(name.encode())


def advisory_xact_lock(*, session: Session, name: str) -> None:
    """Hold the named lock until the transaction ends (PostgreSQL); a no-op on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
