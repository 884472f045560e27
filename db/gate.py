"""Queries of the inspection service: phones posted by a line's station, the answers given to its
gate, and the final decisions the line follows afterwards.

A posted phone is inserted already claimed by the service (status ``processing``, with a lease),
beside a ``gate_answers`` row that makes its serial unique on the line. The answer is written
once (:func:`record_answer` only fills an empty row): whatever the gate was told first stays what
it was told. Functions take ``*, session`` and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.vocabulary import InspectionStatus
from db import audit
from db.corrections import final_verdict
from db.models import AuditEntry, DecisionCorrection, FinalDecision, GateAnswer, HumanDecision, Inspection, Line, ModelVersion, Routing, utcnow

#: Where a posted phone came from (``inspections.source``).
SERVICE_SOURCE = "service"


@dataclass(frozen=True)
class OpenedPhone:
    """A posted phone's inspection: new, or the one a previous post of the same serial made."""

    inspection_id: int
    created: bool
    #: The sha256 of the image the phone was first posted with (to tell a retry from another phone under the same serial).
    image_sha256: str | None = None


def open_posted_phone(
    *,
    session: Session,
    line_id: int,
    serial: str,
    image_path: str,
    image_sha256: str,
    captured_at: datetime | None,
    station: str | None,
    api_key_id: int | None,
    holder: str,
    lease_seconds: float,
) -> OpenedPhone:
    """Insert a posted phone, claimed by ``holder``, unless the line already has this serial.

    On SQLite the caller's write unit holds the write lock, so the look-up and the insert cannot
    interleave with another post; elsewhere the unique (line, serial) constraint decides and the
    loser finds the winner's row.
    """
    existing = posted_phone(session=session, line_id=line_id, serial=serial)
    if existing is not None:
        return existing
    now = utcnow()
    try:
        with session.begin_nested():
            inspection = Inspection(
                line_id=line_id,
                serial=serial,
                image_path=image_path,
                image_sha256=image_sha256,
                source=SERVICE_SOURCE,
                captured_at=captured_at or now,
                status=InspectionStatus.PROCESSING.value,
                claimed_by=holder,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=1,
            )
            session.add(inspection)
            session.flush()
            session.add(GateAnswer(inspection_id=inspection.id, line_id=line_id, serial=serial, station=station, api_key_id=api_key_id, received_at=now))
            session.flush()
    except IntegrityError:
        winner = posted_phone(session=session, line_id=line_id, serial=serial)
        if winner is None:
            raise
        return winner
    return OpenedPhone(inspection.id, created=True, image_sha256=image_sha256)


def posted_phone(*, session: Session, line_id: int, serial: str) -> OpenedPhone | None:
    """The line's phone posted under ``serial`` before, if any."""
    row = session.execute(
        select(GateAnswer.inspection_id, Inspection.image_sha256)
        .join(Inspection, Inspection.id == GateAnswer.inspection_id)
        .where(GateAnswer.line_id == line_id, GateAnswer.serial == serial)
    ).first()
    return OpenedPhone(row[0], created=False, image_sha256=row[1]) if row else None


@dataclass(frozen=True)
class StoredAnswer:
    """What the gate was told about a phone, and its final decision once there is one."""

    inspection_id: int
    line_id: int
    line: str
    serial: str
    station: str | None
    received_at: datetime
    action: str | None
    decided_by: str | None
    level: str | None
    rule: str | None
    model_version: str | None
    failsafe: str | None
    latency_ms: float | None
    answered_at: datetime | None
    status: str
    final_verdict: str | None
    final_decided_by: str | None
    final_decided_at: datetime | None
    #: Why, in words: the routing's reason (None while the phone is not written yet).
    reason: str | None = None
    #: Whether the final verdict is the demo's simulated inspector's rather than a person's.
    final_simulated: bool = False
    #: When a person last corrected the final verdict (an undo, or a correction with a reason), else None.
    final_corrected_at: datetime | None = None


def _final_is_simulated() -> Any:
    """Whether a final decision's verdict is the demo's simulated inspector's (a scalar subquery over ``FinalDecision``)."""
    return select(HumanDecision.is_simulated).where(HumanDecision.id == FinalDecision.human_decision_id).scalar_subquery()


def _answers_query():  # noqa: ANN202 - a Select of (GateAnswer, line name, version, status, final decision, its verdict as it stands, routing's reason, simulated, corrected at)
    return (
        select(
            GateAnswer,
            Line.name,
            ModelVersion.version,
            Inspection.status,
            FinalDecision,
            final_verdict(),
            Routing.reason,
            _final_is_simulated(),
            select(func.max(DecisionCorrection.corrected_at)).where(DecisionCorrection.human_decision_id == FinalDecision.human_decision_id).scalar_subquery(),
        )
        .join(Line, Line.id == GateAnswer.line_id)
        .join(Inspection, Inspection.id == GateAnswer.inspection_id)
        .outerjoin(ModelVersion, ModelVersion.id == GateAnswer.model_version_id)
        .outerjoin(FinalDecision, FinalDecision.inspection_id == GateAnswer.inspection_id)
        .outerjoin(Routing, Routing.inspection_id == GateAnswer.inspection_id)
    )


def _stored(row: tuple[Any, ...]) -> StoredAnswer:
    answer, line_name, version, status, final, verdict, reason, simulated, corrected_at = row
    return StoredAnswer(
        inspection_id=answer.inspection_id,
        line_id=answer.line_id,
        line=line_name,
        serial=answer.serial,
        station=answer.station,
        received_at=answer.received_at,
        action=answer.action,
        decided_by=answer.decided_by,
        level=answer.level,
        rule=answer.rule,
        model_version=version,
        failsafe=answer.failsafe,
        latency_ms=answer.latency_ms,
        answered_at=answer.answered_at,
        status=status,
        final_verdict=verdict if final else None,  # a person's latest correction, where there is one
        final_decided_by=final.decided_by if final else None,
        final_decided_at=final.decided_at if final else None,
        reason=reason,
        final_simulated=bool(simulated),
        final_corrected_at=corrected_at if final else None,
    )


def get_answer(*, session: Session, inspection_id: int) -> StoredAnswer | None:
    row = session.execute(_answers_query().where(GateAnswer.inspection_id == inspection_id)).first()
    return _stored(tuple(row)) if row else None


def find_answer(*, session: Session, line_id: int, serial: str) -> StoredAnswer | None:
    row = session.execute(_answers_query().where(GateAnswer.line_id == line_id, GateAnswer.serial == serial)).first()
    return _stored(tuple(row)) if row else None


def record_answer(
    *,
    session: Session,
    inspection_id: int,
    action: str,
    decided_by: str,
    level: str,
    rule: str,
    model_version_id: int | None,
    failsafe: str | None,
    latency_ms: float,
) -> bool:
    """Write what the gate was told, only if nothing was written yet; returns whether this call wrote it."""
    result = session.execute(
        update(GateAnswer)
        .where(GateAnswer.inspection_id == inspection_id, GateAnswer.action.is_(None))
        .values(
            action=action,
            decided_by=decided_by,
            level=level,
            rule=rule,
            model_version_id=model_version_id,
            failsafe=failsafe,
            latency_ms=latency_ms,
            answered_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def answer_state(*, session: Session, inspection_id: int) -> tuple[str | None, str | None]:
    """The (action, failsafe reason) already given for a phone; (None, None) while unanswered."""
    row = session.execute(select(GateAnswer.action, GateAnswer.failsafe).where(GateAnswer.inspection_id == inspection_id)).first()
    return (row[0], row[1]) if row else (None, None)


#: A place in a line's stream of decisions: ``(time, kind, id)``, kind 0 a phone's final decision
#: (id: its inspection), kind 1 a person's correction of one (id: the correction).
Position = tuple[datetime, int, int]
_DECISION, _CORRECTION = 0, 1
#: A correction of a person's verdict that is a phone's final decision.
_CORRECTED_DECISION = and_(
    FinalDecision.inspection_id == DecisionCorrection.inspection_id, FinalDecision.human_decision_id == DecisionCorrection.human_decision_id
)


@dataclass(frozen=True)
class FinalDecisionEvent:
    """One event of a line's decisions, in the order a hold station follows them: a phone's final
    decision, or a person's correction of one (the phone's verdict from then on)."""

    inspection_id: int
    serial: str
    verdict: str
    decided_by: str
    rule: str
    decided_at: datetime
    #: What the gate was told when the phone was posted to the service; None for phones that came otherwise.
    gate_action: str | None
    #: Where the event lies in the stream (the cursor after it).
    position: Position
    #: For a correction, the verdict it replaces (None for a phone's decision).
    corrects: str | None = None
    #: Whether the verdict is the demo's simulated inspector's, not a person's.
    simulated: bool = False


def _after(at_column: Any, id_column: Any, kind: int, after: Position | None) -> Any:
    """The rows of one kind that lie after ``after`` in the ``(time, kind, id)`` order."""
    if after is None:
        return true()
    at, after_kind, after_id = after
    if kind < after_kind:
        return at_column > at
    if kind > after_kind:
        return at_column >= at
    return or_(at_column > at, and_(at_column == at, id_column > after_id))


def final_decisions_after(*, session: Session, line_id: int, after: Position | None, limit: int = 100) -> list[FinalDecisionEvent]:
    """A line's decisions after the cursor, oldest first: final decisions and people's corrections of them.

    A decision event carries the verdict as it was given; a correction (an undo within seconds, or a
    later correction with a reason) comes as an event of its own, with the verdict it replaces, so a
    hold station that already acted on a phone learns that its verdict changed. Replayed from the
    start, the last event of a serial is its verdict as it stands.

    On SQLite every write unit holds the write lock from its start and stamps its time inside it,
    so decisions and corrections commit in the order of their stamps and a cursor never skips one.
    """
    decisions = session.execute(
        select(FinalDecision, Inspection.serial, GateAnswer.action, _final_is_simulated())
        .join(Inspection, Inspection.id == FinalDecision.inspection_id)
        .outerjoin(GateAnswer, GateAnswer.inspection_id == FinalDecision.inspection_id)
        .where(FinalDecision.line_id == line_id, _after(FinalDecision.decided_at, FinalDecision.inspection_id, _DECISION, after))
        .order_by(FinalDecision.decided_at, FinalDecision.inspection_id)
        .limit(limit)
    )
    events = [
        FinalDecisionEvent(
            final.inspection_id,
            serial,
            final.verdict,
            final.decided_by,
            final.rule,
            final.decided_at,
            action,
            (final.decided_at, _DECISION, final.inspection_id),
            simulated=bool(is_simulated),
        )
        for final, serial, action, is_simulated in decisions
    ]
    corrections = session.execute(
        select(DecisionCorrection, Inspection.serial, GateAnswer.action, HumanDecision.is_simulated)
        .join(FinalDecision, _CORRECTED_DECISION)
        .join(HumanDecision, HumanDecision.id == DecisionCorrection.human_decision_id)
        .join(Inspection, Inspection.id == DecisionCorrection.inspection_id)
        .outerjoin(GateAnswer, GateAnswer.inspection_id == DecisionCorrection.inspection_id)
        .where(FinalDecision.line_id == line_id, _after(DecisionCorrection.corrected_at, DecisionCorrection.id, _CORRECTION, after))
        .order_by(DecisionCorrection.corrected_at, DecisionCorrection.id)
        .limit(limit)
    )
    events += [
        FinalDecisionEvent(
            correction.inspection_id,
            serial,
            correction.verdict,
            "human",
            "undo" if correction.is_undo else "correction",
            correction.corrected_at,
            action,
            (correction.corrected_at, _CORRECTION, correction.id),
            corrects=correction.previous_verdict,
            simulated=bool(is_simulated),
        )
        for correction, serial, action, is_simulated in corrections
    ]
    return sorted(events, key=lambda event: event.position)[:limit]


def latest_decision_cursor(*, session: Session, line_id: int) -> Position | None:
    """The cursor of a line's newest decision or correction (to follow only what comes next)."""
    decision = session.execute(
        select(FinalDecision.decided_at, FinalDecision.inspection_id)
        .where(FinalDecision.line_id == line_id)
        .order_by(FinalDecision.decided_at.desc(), FinalDecision.inspection_id.desc())
        .limit(1)
    ).first()
    correction = session.execute(
        select(DecisionCorrection.corrected_at, DecisionCorrection.id)
        .join(FinalDecision, _CORRECTED_DECISION)
        .where(FinalDecision.line_id == line_id)
        .order_by(DecisionCorrection.corrected_at.desc(), DecisionCorrection.id.desc())
        .limit(1)
    ).first()
    positions = ([(decision[0], _DECISION, decision[1])] if decision else []) + ([(correction[0], _CORRECTION, correction[1])] if correction else [])
    return max(positions) if positions else None


@dataclass(frozen=True)
class AnswerSummary:
    """How the service answered a line's gate lately (the Live line shows it).

    Attributes:
        answers: Answers given in the window (at most the ``limit`` latest).
        p50_ms, p99_ms, max_ms: Time to answer, from arrival; None without answers.
        failsafes: Fail-safe answers by reason.
        actions: Answers by action (``pass``, ``reject``, ``to_person``).
    """

    answers: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    failsafes: dict[str, int]
    actions: dict[str, int]

    @property
    def failsafe_count(self) -> int:
        return sum(self.failsafes.values())


def answer_summary(*, session: Session, line_id: int, since: datetime, limit: int = 2000) -> AnswerSummary:
    """The line's answers since ``since``: latency percentiles, fail-safes and actions (the ``limit`` latest at most)."""
    rows = session.execute(
        select(GateAnswer.latency_ms, GateAnswer.failsafe, GateAnswer.action, GateAnswer.answered_at)
        .where(GateAnswer.line_id == line_id, GateAnswer.action.is_not(None))
        .order_by(GateAnswer.inspection_id.desc())  # along the primary key: bounded however long the line ran
        .limit(limit)
    ).all()
    latencies: list[float] = []
    failsafes: dict[str, int] = {}
    actions: dict[str, int] = {}
    for latency_ms, failsafe, action, answered_at in rows:
        if answered_at is None or answered_at < since:
            continue
        latencies.append(float(latency_ms or 0.0))
        if action is not None:
            actions[action] = actions.get(action, 0) + 1
        if failsafe:
            failsafes[failsafe] = failsafes.get(failsafe, 0) + 1
    latencies.sort()

    def percentile(share: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] if latencies else None

    return AnswerSummary(len(latencies), percentile(0.5), percentile(0.99), latencies[-1] if latencies else None, failsafes, actions)


#: The audit action of a phone the gate sent to its fail-safe under a serial another phone of the line has.
SERIAL_CONFLICT_ACTION = "station.serial_conflict"


@dataclass(frozen=True)
class UnrecordedConflict:
    """A phone that got the line's fail-safe before its serial turned out to be another phone's: not recorded as a phone."""

    at: datetime
    serial: str
    station: str | None
    image_path: str | None


def record_serial_conflict(
    *, session: Session, line_id: int, serial: str, station: str | None, image_path: str | None, image_sha256: str | None, action: str, note: str
) -> None:
    """Say in the audit log that a phone went to the fail-safe under a serial the line already has (see :func:`unrecorded_conflicts`)."""
    audit.record(
        session=session,
        actor=audit.SYSTEM_ACTOR,
        action=SERIAL_CONFLICT_ACTION,
        entity="line",
        entity_id=line_id,
        after={"serial": serial, "station": station, "image_path": image_path, "image_sha256": image_sha256, "action": action},
        note=note,
    )


def _line_station_entries(session: Session, line_id: int, action: str, since: datetime, limit: int) -> list[tuple[datetime, dict[str, Any]]]:
    """(time, after) of the line's audit entries of ``action`` since ``since``, newest first: what the service said of its station."""
    rows = session.execute(
        select(AuditEntry.at, AuditEntry.after)
        .where(AuditEntry.entity == "line", AuditEntry.entity_id == str(line_id), AuditEntry.action == action, AuditEntry.at >= since)
        .order_by(AuditEntry.at.desc())
        .limit(limit)
    )
    return [(at, after or {}) for at, after in rows]


def unrecorded_conflicts(*, session: Session, line_id: int, since: datetime) -> list[UnrecordedConflict]:
    """The line's phones sent to the fail-safe under another phone's serial since ``since``, newest first."""
    return [
        UnrecordedConflict(at, str(after.get("serial")), after.get("station"), after.get("image_path"))
        for at, after in _line_station_entries(session, line_id, SERIAL_CONFLICT_ACTION, since, limit=50)
    ]


#: The audit action of a station's refused posts (4xx: nothing of those phones was recorded), counted by code.
REFUSED_POSTS_ACTION = "station.refused_posts"


def record_refused_posts(*, session: Session, line_id: int | None, line_name: str, counts: dict[str, int]) -> None:
    """Say in the audit log that the service refused this many posts for a line lately, by error code."""
    total = sum(counts.values())
    which = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
    audit.record(
        session=session,
        actor=audit.SYSTEM_ACTOR,
        action=REFUSED_POSTS_ACTION,
        entity="line",
        entity_id=line_id,
        after={"line": line_name, "counts": counts},
        note=f"The service refused {total} post{'s' if total != 1 else ''} of phones for {line_name} ({which}): nothing of those phones was recorded.",
    )


def refused_posts(*, session: Session, line_id: int, since: datetime) -> dict[str, int]:
    """The line's refused posts since ``since``, by error code (e.g. ``unauthorized``, ``not_an_image``)."""
    totals: dict[str, int] = {}
    for _, after in _line_station_entries(session, line_id, REFUSED_POSTS_ACTION, since, limit=1000):  # a minute apart at most: 15 min is 15 or so
        for code, count in (after.get("counts") or {}).items():
            totals[code] = totals.get(code, 0) + int(count)
    return totals
