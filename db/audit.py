"""The append-only audit log: every state change, with who, when, what, before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from db.models import AuditEntry, Inspection

#: A search names at most this many phones by serial (a short text can match thousands of serials).
SERIAL_MATCHES = 1000

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


#: Kinds of action people filter the log by: name -> action prefixes (None: every action but the per-phone ones).
ACTION_KINDS: dict[str, tuple[str, ...] | None] = {
    "changes (all but per-phone decisions)": None,
    "automation levels and line settings": ("line.",),
    "requests and approvals": ("request.",),
    "models and training": ("model.", "training."),
    "drift: alarms, references, settings": ("drift.",),
    "gates": ("gates.",),
    "users, sign-ins and keys": ("user.", "auth.", "session.", "api_key."),
    "labels": ("label.",),
    "per-phone decisions and corrections": ("phone.",),
    "everything": (),
}
#: Actions of single phones: thousands a day, kept out of the default view of the log.
PER_PHONE_PREFIXES = ("phone.",)


def kind_condition(kind: str) -> Any:
    """The SQL condition of a kind of action (see :data:`ACTION_KINDS`), None for everything."""
    if kind not in ACTION_KINDS:
        raise ValueError(f"no kind of action {kind!r}; kinds: {', '.join(ACTION_KINDS)}")
    prefixes = ACTION_KINDS[kind]
    if prefixes is None:
        return ~or_(*(AuditEntry.action.startswith(p) for p in PER_PHONE_PREFIXES))
    if not prefixes:
        return None
    return or_(*(AuditEntry.action.startswith(p) for p in prefixes))


AUDIT_COLUMNS = ["at", "actor", "action", "entity", "entity_id", "before", "after", "note"]


def search(
    *,
    session: Session,
    text: str = "",
    actor: str | None = None,
    action_prefix: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[pd.DataFrame, int]:
    """Audit entries matching the filters (``kind``: one of :data:`ACTION_KINDS`), newest first, one page of them, and the total count."""
    conditions = []
    if text:
        pattern = f"%{text}%"
        conditions.append(
            or_(
                AuditEntry.action.ilike(pattern),
                AuditEntry.entity.ilike(pattern),
                AuditEntry.entity_id.ilike(pattern),
                AuditEntry.note.ilike(pattern),
                AuditEntry.actor.ilike(pattern),
                # Per-phone entries name the phone by its inspection id; people search by the serial they see.
                and_(
                    AuditEntry.entity == "inspection",
                    AuditEntry.entity_id.in_(select(cast(Inspection.id, String)).where(Inspection.serial.ilike(pattern)).limit(SERIAL_MATCHES)),
                ),
            )
        )
    if actor:
        conditions.append(AuditEntry.actor == actor)
    if action_prefix:
        conditions.append(AuditEntry.action.startswith(action_prefix))
    if kind is not None and (condition := kind_condition(kind)) is not None:
        conditions.append(condition)
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    if until is not None:
        conditions.append(AuditEntry.at < until)
    total = int(session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0)
    rows = session.scalars(select(AuditEntry).where(*conditions).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).offset(offset).limit(limit)).all()
    frame = pd.DataFrame([[r.at, r.actor, r.action, r.entity, r.entity_id, r.before, r.after, r.note] for r in rows], columns=AUDIT_COLUMNS)
    return frame, total


def actors(*, session: Session) -> list[str]:
    return list(session.scalars(select(AuditEntry.actor).distinct().order_by(AuditEntry.actor)))
