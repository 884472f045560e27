"""The append-only audit log: every state change, with who, when, what, before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import AuditEntry

#: Actor name of changes the system makes by itself (worker, init, automatic fallbacks).
SYSTEM_ACTOR = "system"


def record(
    *,
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Append one entry to the audit log (in the caller's transaction)."""
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            entity=entity,
            entity_id=None if entity_id is None else str(entity_id),
            before=before,
            after=after,
            note=note,
        )
    )
