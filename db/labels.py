"""Labels in the database: the queue of phones worth a label, saving, adjudicating, and each phone's truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from core.labelling import LabelBox, compare_labels
from core.vocabulary import Verdict
from db import audit
from db.corrections import human_verdict
from db.models import DriftAlarm, DriftCheck, HumanDecision, Inspection, Label, Prediction, Routing, utcnow

#: Reasons a phone is worth a label, best first.
REASONS = ("audit_failure", "disagreement", "drift_window", "low_confidence")
#: The model's uncertain band: phones whose highest confidence lies here are worth a look.
LOW_CONFIDENCE = (0.15, 0.6)


class LabelError(ValueError):
    """A label that cannot be saved or adjudicated as asked."""


@dataclass(frozen=True)
class QueueItem:
    inspection_id: int
    serial: str
    line_id: int
    image_path: str
    processed_at: datetime
    reason: str
    human_verdict: str | None
    model_verdict: str | None
    max_confidence: float | None
    model_boxes: list[dict[str, Any]]
    labels: int


def label_queue(
    *,
    session: Session,
    labeller: str,
    line_id: int | None = None,
    since: datetime | None = None,
    reasons: tuple[str, ...] = REASONS,
    limit: int = 50,
    inspection_id: int | None = None,
) -> list[QueueItem]:
    """Phones worth a label, best first: audit failures, human-model disagreements, phones from drift
    alarm windows, low-confidence predictions. Phones ``labeller`` already labelled, and phones with an
    adjudicated label, are left out. With ``inspection_id``: that phone alone, if it is still in the queue."""
    person = human_verdict()  # the person's latest correction, where there is one
    disagree = and_(person.is_not(None), person != Prediction.verdict)
    audit_failure = and_(disagree, Routing.audit.is_(True), Routing.decider == "model")  # people overrode a decision the model made alone
    low = Prediction.max_confidence.between(*LOW_CONFIDENCE)
    alarm_windows = select(DriftCheck.window_start, DriftCheck.window_end, DriftCheck.line_id).join(DriftAlarm, DriftAlarm.check_id == DriftCheck.id).subquery()
    in_drift = (
        select(alarm_windows.c.line_id)
        .where(
            alarm_windows.c.line_id == Inspection.line_id,
            Inspection.processed_at >= alarm_windows.c.window_start,
            Inspection.processed_at <= alarm_windows.c.window_end,
        )
        .exists()
    )
    conditions = {"audit_failure": audit_failure, "disagreement": disagree, "drift_window": in_drift, "low_confidence": low}
    chosen = [conditions[r] for r in reasons if r in conditions]
    if not chosen:
        return []
    reason = case(*((conditions[r], r) for r in REASONS if r in reasons), else_="other")
    rank = case(*((conditions[r], i) for i, r in enumerate(REASONS) if r in reasons), else_=len(REASONS))
    labelled = select(Label.inspection_id).where(or_(Label.labeller == labeller, Label.adjudicated.is_(True)))
    label_count = select(func.count()).select_from(Label).where(Label.inspection_id == Inspection.id).scalar_subquery()
    query = (
        select(
            Inspection.id,
            Inspection.serial,
            Inspection.line_id,
            Inspection.image_path,
            Inspection.processed_at,
            reason,
            person,
            Prediction.verdict,
            Prediction.max_confidence,
            Prediction.boxes,
            label_count,
        )
        .join(Prediction, and_(Prediction.inspection_id == Inspection.id, Prediction.is_candidate.is_(False)))
        .outerjoin(HumanDecision, HumanDecision.inspection_id == Inspection.id)
        .outerjoin(Routing, Routing.inspection_id == Inspection.id)
        .where(Inspection.status == "done", or_(*chosen), Inspection.id.not_in(labelled))
        .order_by(rank, Inspection.processed_at.desc())
        .limit(limit)
    )
    if line_id is not None:
        query = query.where(Inspection.line_id == line_id)
    if since is not None:
        query = query.where(Inspection.processed_at >= since)
    if inspection_id is not None:
        query = query.where(Inspection.id == inspection_id)
    return [
        QueueItem(
            inspection_id=row[0],
            serial=row[1],
            line_id=row[2],
            image_path=row[3],
            processed_at=row[4],
            reason=row[5],
            human_verdict=row[6],
            model_verdict=row[7],
            max_confidence=row[8],
            model_boxes=row[9] or [],
            labels=int(row[10] or 0),
        )
        for row in session.execute(query)
    ]


@dataclass(frozen=True)
class LabelView:
    id: int
    inspection_id: int
    labeller: str
    verdict: Verdict
    boxes: list[LabelBox]
    adjudicated: bool
    created_at: datetime


def _view(row: Label) -> LabelView:
    return LabelView(row.id, row.inspection_id, row.labeller, Verdict(row.verdict), [LabelBox.from_dict(b) for b in row.boxes], row.adjudicated, row.created_at)


def image_path_of(*, session: Session, inspection_id: int) -> str | None:
    """Where a phone's stored image is (relative to the data folder)."""
    row = session.get(Inspection, inspection_id)
    return row.image_path if row else None


def serials_of(*, session: Session, inspection_ids: list[int]) -> dict[int, str]:
    return {row[0]: row[1] for row in session.execute(select(Inspection.id, Inspection.serial).where(Inspection.id.in_(inspection_ids)))}


def labels_of(*, session: Session, inspection_id: int) -> list[LabelView]:
    return [_view(r) for r in session.scalars(select(Label).where(Label.inspection_id == inspection_id).order_by(Label.created_at))]


def upsert_label(
    *, session: Session, inspection_id: int, labeller: str, verdict: Verdict, boxes: list[LabelBox], reason: str | None, seconds_taken: float | None
) -> int:
    # Lock the phone's row first: the same engineer saving twice at once (two tabs, a double click)
    # would otherwise both find no label and both insert, and the second would end on the unique
    # constraint (one label per engineer and phone) with a database error instead of replacing the
    # first. Serialised on the phone, the second reads the first one's row and updates it.
    if session.get(Inspection, inspection_id, with_for_update=True) is None:
        raise LabelError(f"no inspection with id {inspection_id}")
    row = session.scalar(select(Label).where(Label.inspection_id == inspection_id, Label.labeller == labeller).execution_options(populate_existing=True))
    before = {"verdict": row.verdict, "boxes": row.boxes} if row else None
    if row is None:
        row = Label(inspection_id=inspection_id, labeller=labeller)
        session.add(row)
    row.verdict, row.boxes, row.reason, row.seconds_taken, row.created_at = verdict.value, [b.as_dict() for b in boxes], reason, seconds_taken, utcnow()
    session.flush()
    audit.record(
        session=session,
        actor=labeller,
        action="label.save",
        entity="inspection",
        entity_id=inspection_id,
        before=before,
        after={"verdict": verdict.value, "boxes": [b.as_dict() for b in boxes]},
    )
    return row.id


def mark_adjudicated(*, session: Session, label_id: int, actor: str, note: str | None) -> None:
    row = session.get(Label, label_id)
    if row is None:
        raise LabelError(f"no label with id {label_id}")
    # Lock every label of the phone and read them afresh: two engineers adjudicating the same phone
    # at once would otherwise each mark their own choice and leave two "truths" (the ORM writes only
    # the rows it changed). The second waits, then makes its choice the only one.
    others = session.scalars(select(Label).where(Label.inspection_id == row.inspection_id).with_for_update().execution_options(populate_existing=True))
    for other in others:
        other.adjudicated = other.id == label_id
    audit.record(
        session=session, actor=actor, action="label.adjudicate", entity="inspection", entity_id=row.inspection_id, after={"label": label_id}, note=note
    )


def truth(labels: list[LabelView]) -> LabelView | None:
    """A phone's truth from its labels: the adjudicated one, else the only one, else the first if all agree."""
    if not labels:
        return None
    adjudicated = [label for label in labels if label.adjudicated]
    if adjudicated:
        return adjudicated[0]
    first = labels[0]
    if all(compare_labels((first.verdict, first.boxes), (other.verdict, other.boxes)).agree for other in labels[1:]):
        return first
    return None


def _by_phone(session: Session, query: Any) -> dict[int, list[LabelView]]:
    """The labels the query selects, grouped by phone, each phone's oldest first (phones in the order of their first label)."""
    grouped: dict[int, list[LabelView]] = {}
    for row in session.scalars(query.order_by(Label.created_at)):
        grouped.setdefault(row.inspection_id, []).append(_view(row))
    return grouped


def truths(*, session: Session, inspection_ids: list[int] | None = None, line_id: int | None = None) -> dict[int, LabelView]:
    """The truth of every labelled phone (of a line, or of the given phones) that has one."""
    query = select(Label)
    if inspection_ids is not None:
        query = query.where(Label.inspection_id.in_(inspection_ids))
    if line_id is not None:
        query = query.join(Inspection, Inspection.id == Label.inspection_id).where(Inspection.line_id == line_id)
    return {inspection_id: found for inspection_id, labels in _by_phone(session, query).items() if (found := truth(labels)) is not None}


def awaiting_adjudication(*, session: Session, line_id: int | None = None, limit: int = 100) -> list[int]:
    """Phones (inspection ids, oldest label first) whose labels disagree and that nobody has adjudicated yet."""
    several = select(Label.inspection_id).group_by(Label.inspection_id).having(func.count() > 1, func.max(case((Label.adjudicated.is_(True), 1), else_=0)) == 0)
    if line_id is not None:
        several = several.join(Inspection, Inspection.id == Label.inspection_id).where(Inspection.line_id == line_id)
    grouped = _by_phone(session, select(Label).where(Label.inspection_id.in_(several)))  # one query, however many phones
    return [inspection_id for inspection_id, labels in grouped.items() if truth(labels) is None][:limit]
