"""Lines and their settings (automation level, canary share, confidence band, blue/green models)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session, aliased

from core import validation
from core.routing import PolicySettings
from core.vocabulary import AutomationLevel
from db import audit
from db.models import Line, LineSettings, ModelVersion, utcnow

LINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LineNotFoundError(LookupError):
    """No line of that name."""


@dataclass(frozen=True)
class LineConfig:
    """A line and its settings as plain data."""

    id: int
    name: str
    level: AutomationLevel
    policy: PolicySettings
    active_model_id: int | None
    active_model_version: str | None
    candidate_model_id: int | None
    candidate_model_version: str | None
    previous_model_id: int | None = None
    previous_model_version: str | None = None
    level_since: datetime | None = None
    #: The inspection service's answer budget for this line, in milliseconds.
    answer_budget_ms: int = 300
    #: The gate's action when no answer comes in time: ``to_person`` or ``reject``, never ``pass``.
    failsafe_action: str = "to_person"


def add_line(*, session: Session, name: str, actor: str, active_model_id: int | None = None) -> int:
    """Create a line (shadow mode, the given active model). Idempotent by name; returns its id."""
    if not LINE_NAME.match(name):
        raise ValueError(f"invalid line name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    existing = session.scalar(select(Line).where(Line.name == name))
    if existing is not None:
        return existing.id
    line = Line(name=name)
    session.add(line)
    session.flush()
    session.add(LineSettings(line_id=line.id, level=AutomationLevel.SHADOW.value, active_model_id=active_model_id, updated_by=actor))
    audit.record(
        session=session,
        actor=actor,
        action="line.create",
        entity="line",
        entity_id=name,
        after={"level": AutomationLevel.SHADOW.value, "active_model_id": active_model_id},
    )
    session.flush()
    return line.id


@cache
def _lines_query() -> Select[*tuple[Any, ...]]:
    """Lines with their settings and the names (and the active one's decision threshold) of the three
    model versions, in one statement of plain columns.

    Plain columns rather than ORM objects: the inspection service reads its line twice for every
    posted phone (the key's check, and again when it writes the answer), and loading the rows as
    objects with the versions' whole cards (their JSON decoded) took about 0.7 ms a read against
    0.4 ms for this statement (SQLite, measured on the build machine). Built once: a statement is
    immutable, and building it took longer than running it.
    """
    active, candidate, previous = aliased(ModelVersion), aliased(ModelVersion), aliased(ModelVersion)
    return (
        select(
            Line.id,
            Line.name,
            LineSettings.level,
            LineSettings.confidence_low,
            LineSettings.confidence_high,
            active.card["decision_threshold"].as_float(),
            LineSettings.canary_share,
            LineSettings.audit_share,
            LineSettings.active_model_id,
            active.version,
            LineSettings.candidate_model_id,
            candidate.version,
            LineSettings.previous_model_id,
            previous.version,
            LineSettings.level_since,
            LineSettings.answer_budget_ms,
            LineSettings.failsafe_action,
        )
        .join(LineSettings, LineSettings.line_id == Line.id)
        .outerjoin(active, active.id == LineSettings.active_model_id)
        .outerjoin(candidate, candidate.id == LineSettings.candidate_model_id)
        .outerjoin(previous, previous.id == LineSettings.previous_model_id)
    )


def _config(row: Row[*tuple[Any, ...]]) -> LineConfig:
    """A row of :func:`_lines_query` as a :class:`LineConfig`."""
    from core.detector.adapter import DEFAULT_DECISION_THRESHOLD

    (
        line_id,
        name,
        level,
        low,
        high,
        threshold,
        canary,
        audit_share,
        active_id,
        active_version,
        candidate_id,
        candidate_version,
        previous_id,
        previous_version,
        level_since,
        budget_ms,
        failsafe_action,
    ) = row
    return LineConfig(
        id=line_id,
        name=name,
        level=AutomationLevel(level),
        policy=PolicySettings(
            confidence_low=low,
            confidence_high=high,
            decision_threshold=DEFAULT_DECISION_THRESHOLD if threshold is None else float(threshold),
            canary_share=canary,
            audit_share=audit_share,
        ),
        active_model_id=active_id,
        active_model_version=active_version,
        candidate_model_id=candidate_id,
        candidate_model_version=candidate_version,
        previous_model_id=previous_id,
        previous_model_version=previous_version,
        level_since=level_since,
        answer_budget_ms=budget_ms,
        failsafe_action=failsafe_action,
    )


def list_lines(*, session: Session) -> list[LineConfig]:
    """Every line with its settings, by name."""
    return [_config(row) for row in session.execute(_lines_query().order_by(Line.name))]


def find_line(*, session: Session, name: str | None = None, line_id: int | None = None) -> LineConfig | None:
    """One line with its settings, by name or id (None when there is none): one statement."""
    query = _lines_query()
    if name is not None:
        query = query.where(Line.name == name)
    if line_id is not None:
        query = query.where(Line.id == line_id)
    row = session.execute(query).first()
    return None if row is None else _config(row)


def lock_line(*, session: Session, line_id: int) -> None:
    """Hold the line's settings row until the transaction ends (PostgreSQL ``SELECT ... FOR UPDATE``).

    Every unit of work that reads a line's state, decides, and changes the line (level moves,
    approvals, model switch and rollback, drift checks and their step-downs, automatic rollbacks)
    takes this lock first. A row lock rather than a serializable transaction: the units are short,
    the conflict is always "the same line", and waiting is cheaper than retrying work that loads
    windows of phones. Under READ COMMITTED each later statement sees what the unit before it
    committed, so the second of two overlapping units decides on the first one's result. Always
    lock the line before a request row of it (one order, no deadlock). SQLite ignores FOR UPDATE:
    its write units already hold the database's single write lock (``BEGIN IMMEDIATE``).
    """
    session.execute(select(LineSettings.line_id).where(LineSettings.line_id == line_id).with_for_update())


def get_line(*, session: Session, name: str, for_update: bool = False) -> LineConfig:
    """The line called ``name``; with ``for_update``, locked first (:func:`lock_line`) and read after the lock."""
    if for_update:
        line_id = session.scalar(select(Line.id).where(Line.name == name))
        if line_id is not None:
            lock_line(session=session, line_id=line_id)
    config = find_line(session=session, name=name)
    if config is not None:
        return config
    names = [c.name for c in list_lines(session=session)]
    raise LineNotFoundError(f"no line named {name!r}; lines: {', '.join(names) or 'none (run shadowline init)'}")


def update_settings(*, session: Session, line_id: int, actor: str, note: str | None = None, **changes: object) -> None:
    """Change columns of a line's settings (callers check who may) and audit before and after."""
    settings = session.get(LineSettings, line_id)
    if settings is None:
        raise LineNotFoundError(f"no line with id {line_id}")
    _check_policy(settings, changes)
    before = {key: getattr(settings, key) for key in changes}
    for key, value in changes.items():
        setattr(settings, key, value)
    if any(key in changes and before[key] != changes[key] for key in ("level", "canary_share")):
        # Gates count evidence gathered at the current level (and canary share) only.
        settings.level_since = utcnow()
    settings.updated_at = utcnow()
    settings.updated_by = actor
    action = "line." + "+".join(sorted(changes))
    audit.record(session=session, actor=actor, action=action, entity="line", entity_id=line_id, before=before, after=dict(changes), note=note)


def _check_policy(settings: LineSettings, changes: dict[str, object]) -> None:
    """The policy knobs' ranges, checked before anything is written (pages and the CLI get the same refusals).

    Raises:
        RangeError: A share outside [0, 1], a confidence band upside down, a canary share of 0,
            or an audit share of 0, which would stop people auditing full automation.
    """
    if "canary_share" in changes:
        validation.share("canary_share", changes["canary_share"], allow_zero=False)
    if "audit_share" in changes and validation.share("audit_share", changes["audit_share"]) == 0:
        raise validation.RangeError("audit_share=0 would stop people auditing the phones the model decides in full automation; it must be above 0")
    low = validation.share("confidence_low", changes.get("confidence_low", settings.confidence_low))
    high = validation.share("confidence_high", changes.get("confidence_high", settings.confidence_high))
    if low > high:
        raise validation.RangeError(f"confidence_low ({low:g}) must not be above confidence_high ({high:g})")
    if "level" in changes:
        AutomationLevel(str(changes["level"]))  # an unknown level is refused, not stored


def set_level(*, session: Session, line_id: int, level: AutomationLevel, actor: str, note: str | None = None) -> None:
    """Change a line's automation level (callers check who may) and audit it."""
    update_settings(session=session, line_id=line_id, actor=actor, note=note, level=level.value)


def set_active_model(*, session: Session, line_id: int, model_id: int | None, actor: str, note: str | None = None) -> None:
    """Make ``model_id`` the line's active (blue) model and audit it."""
    update_settings(session=session, line_id=line_id, actor=actor, note=note, active_model_id=model_id)


#: The fail-safe actions a line may choose; ``pass`` is never one of them.
FAILSAFE_ACTIONS = ("to_person", "reject")


def set_answer_settings(
    *, session: Session, line_id: int, actor: str, budget_ms: int | None = None, failsafe_action: str | None = None, note: str | None = None
) -> None:
    """Change a line's answer budget and fail-safe action (audited); callers check who may.

    Raises:
        ValueError: A budget that is not a positive whole number of milliseconds, or a fail-safe
            other than ``to_person`` or ``reject``.
    """
    changes: dict[str, object] = {}
    if budget_ms is not None:
        if not 1 <= budget_ms <= 60_000:
            raise ValueError(f"the answer budget must be 1-60000 ms, got {budget_ms}")
        changes["answer_budget_ms"] = int(budget_ms)
    if failsafe_action is not None:
        if failsafe_action not in FAILSAFE_ACTIONS:
            raise ValueError(f"the fail-safe must be one of {', '.join(FAILSAFE_ACTIONS)} (never pass), got {failsafe_action!r}")
        changes["failsafe_action"] = failsafe_action
    if changes:
        update_settings(session=session, line_id=line_id, actor=actor, note=note, **changes)
