"""Queries of the inspection pipeline: queue a phone, claim a batch, record what the worker found.

Functions take ``*, session`` and never commit: the caller's unit of work does
(``with database.write() as session``). A worker's result is written only while it still holds
the inspection's lease; a worker whose lease expired (it was killed or stalled, and another
worker reclaimed the phone) gets :class:`LeaseLostError` and its unit of work rolls back. The
primary key of ``final_decisions`` makes a second final decision for a phone impossible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session

from core.admission import AdmissionResult
from core.image_metrics import InputMetrics
from core.routing import Decider, RoutingDecision
from core.vocabulary import AutomationLevel, DecidedBy, InspectionStatus, Verdict
from db.engine import database_now
from db.models import FinalDecision, ImageMetrics, Inspection, LineSettings, Prediction, ReviewTask, Routing, utcnow

#: After this many claims a phone that keeps killing workers is failed and sent to a person.
MAX_ATTEMPTS = 3


class LeaseLostError(RuntimeError):
    """The worker no longer holds the inspection: another worker reclaimed it."""


@dataclass(frozen=True)
class ClaimedInspection:
    """A queued phone a worker now holds."""

    id: int
    serial: str
    line_id: int
    image_path: str
    attempts: int
    image_sha256: str | None = None


@dataclass(frozen=True)
class PredictionRecord:
    """One model's output on a phone, ready to store."""

    model_version_id: int
    is_candidate: bool
    boxes: list[dict[str, Any]]
    max_confidence: float
    verdict: Verdict
    latency_ms: float


def queue_inspection(
    *,
    session: Session,
    line_id: int,
    serial: str,
    image_path: str,
    image_sha256: str | None,
    source: str,
    captured_at: datetime | None = None,
    scenario: str | None = None,
    truth: dict[str, Any] | None = None,
) -> int:
    """Queue one phone for the worker; returns the inspection id."""
    inspection = Inspection(
        line_id=line_id,
        serial=serial,
        image_path=image_path,
        image_sha256=image_sha256,
        source=source,
        captured_at=captured_at or utcnow(),
        status=InspectionStatus.QUEUED.value,
        scenario=scenario,
        truth=truth,
    )
    session.add(inspection)
    session.flush()
    return inspection.id


def claim_batch(*, session: Session, worker_id: str, limit: int, lease_seconds: float, now: datetime | None = None) -> list[ClaimedInspection]:
    """Atomically claim up to ``limit`` phones: queued ones, and processing ones whose lease expired.

    One UPDATE ... RETURNING statement: two workers can never claim the same phone. Leases are
    set and compared on the database's clock (:func:`db.engine.database_now`).
    """
    now = now or database_now(session)
    claimable = (
        select(Inspection.id)
        .where(
            or_(
                Inspection.status == InspectionStatus.QUEUED.value,
                and_(Inspection.status == InspectionStatus.PROCESSING.value, Inspection.lease_expires_at < now),
            )
        )
        .order_by(Inspection.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        claimable = claimable.with_for_update(skip_locked=True)
    rows = session.execute(
        update(Inspection)
        .where(Inspection.id.in_(claimable.scalar_subquery()))
        .values(
            status=InspectionStatus.PROCESSING.value,
            claimed_by=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Inspection.attempts + 1,
        )
        .returning(Inspection.id, Inspection.serial, Inspection.line_id, Inspection.image_path, Inspection.attempts, Inspection.image_sha256)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((ClaimedInspection(*row) for row in rows), key=lambda c: c.id)


def release_claims(*, session: Session, worker_id: str, inspection_ids: list[int]) -> int:
    """Give phones this worker claimed back to the queue untouched (it cannot read their images); returns how many."""
    released = session.execute(
        update(Inspection)
        .where(Inspection.id.in_(inspection_ids), Inspection.claimed_by == worker_id, Inspection.status == InspectionStatus.PROCESSING.value)
        .values(status=InspectionStatus.QUEUED.value, claimed_by=None, lease_expires_at=None, attempts=Inspection.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount or 0)  # type: ignore[attr-defined]


def repeated_images(*, session: Session, items: list[ClaimedInspection]) -> dict[int, str]:
    """Phones whose image is byte for byte an earlier phone's of another serial on the same line (a frozen camera).

    Returns:
        For each such inspection id, the serial of the earlier phone it repeats.
    """
    hashes = {item.image_sha256 for item in items if item.image_sha256}
    if not hashes:
        return {}
    rows = session.execute(
        select(Inspection.id, Inspection.line_id, Inspection.serial, Inspection.image_sha256).where(
            Inspection.line_id.in_({item.line_id for item in items}), Inspection.image_sha256.in_(hashes)
        )
    ).all()
    repeats: dict[int, str] = {}
    for item in items:
        earlier = [r for r in rows if r[1] == item.line_id and r[3] == item.image_sha256 and r[0] < item.id and r[2] != item.serial]
        if earlier:
            repeats[item.id] = min(earlier)[2]
    return repeats


def record_result(
    *,
    session: Session,
    inspection_id: int,
    line_id: int,
    worker_id: str,
    level: AutomationLevel,
    routing: RoutingDecision,
    metrics: InputMetrics | None,
    predictions: list[PredictionRecord],
    routed_model_id: int | None,
    error: str | None = None,
) -> None:
    """Write everything the worker found about one phone, in the caller's one transaction.

    Marks the inspection done (or failed, with ``error``), stores the metrics and predictions,
    the routing, the final decision when the model decides, and a review task when a person must
    judge or audit.

    Raises:
        LeaseLostError: The worker no longer holds the inspection; nothing was written.
    """
    result = PhoneResult(inspection_id, line_id, level, routing, metrics, predictions, routed_model_id, error)
    _, lost = record_results(session=session, worker_id=worker_id, results=[result])
    if lost:
        raise LeaseLostError(f"inspection {inspection_id} is no longer held by {worker_id}")


@dataclass(frozen=True)
class PhoneResult:
    """Everything the worker found about one phone, ready to be written."""

    inspection_id: int
    line_id: int
    level: AutomationLevel
    routing: RoutingDecision
    metrics: InputMetrics | None
    predictions: list[PredictionRecord]
    routed_model_id: int | None
    error: str | None = None
    #: The line's active model when the phone was inspected (checked again when it is written).
    active_model_id: int | None = None
    #: The admission check's answer on the active model, where it ran.
    admission: AdmissionResult | None = None


def requeue_stale(*, session: Session, worker_id: str, results: list[PhoneResult]) -> list[int]:
    """Give back the phones inspected under a line configuration that has changed since (level or active model).

    A switch, rollback or level change takes effect on the very next phone: a phone inspected
    with the old active model or at the old level is not written but queued again, without
    counting the attempt, so no phone is decided by a version that is not active at the time.
    """
    line_ids = {r.line_id for r in results}
    current = {
        line_id: (level, model_id)
        for line_id, level, model_id in session.execute(
            select(LineSettings.line_id, LineSettings.level, LineSettings.active_model_id).where(LineSettings.line_id.in_(line_ids))
        )
    }
    stale = [r.inspection_id for r in results if current.get(r.line_id) != (r.level.value, r.active_model_id)]
    if stale:
        session.execute(
            update(Inspection)
            .where(Inspection.id.in_(stale), Inspection.claimed_by == worker_id, Inspection.status == InspectionStatus.PROCESSING.value)
            .values(status=InspectionStatus.QUEUED.value, claimed_by=None, lease_expires_at=None, attempts=Inspection.attempts - 1)
            .execution_options(synchronize_session=False)
        )
    return stale


def record_results(*, session: Session, worker_id: str, results: list[PhoneResult]) -> tuple[list[int], list[int]]:
    """Write a batch of results in bulk, in the caller's one transaction (what :func:`record_result`
    does for one phone, with a handful of statements for the whole batch).

    Only phones the worker still holds are written; call it inside a write unit (``BEGIN
    IMMEDIATE`` on SQLite, row locks on PostgreSQL) so nobody can reclaim them in between.

    Returns:
        The inspection ids written, and those whose lease was lost (left untouched).
    """
    if not results:
        return [], []
    ids = [r.inspection_id for r in results]
    held_query = select(Inspection.id).where(Inspection.id.in_(ids), Inspection.claimed_by == worker_id, Inspection.status == InspectionStatus.PROCESSING.value)
    if session.get_bind().dialect.name == "postgresql":
        held_query = held_query.with_for_update()
    held = set(session.scalars(held_query))
    written = [r for r in results if r.inspection_id in held]
    lost = [i for i in ids if i not in held]
    if not written:
        return [], lost
    now = utcnow()
    session.execute(
        update(Inspection).execution_options(synchronize_session=False),
        [
            {
                "id": r.inspection_id,
                "status": (InspectionStatus.FAILED if r.error else InspectionStatus.DONE).value,
                "error": r.error,
                "processed_at": now,
                "lease_expires_at": None,
            }
            for r in written
        ],
    )
    rows: dict[type, list[dict[str, Any]]] = {ImageMetrics: [], Prediction: [], Routing: [], FinalDecision: [], ReviewTask: []}
    for r in written:
        if r.metrics is not None:
            rows[ImageMetrics].append({"inspection_id": r.inspection_id, **r.metrics.as_dict()})
        for p in r.predictions:
            rows[Prediction].append(
                {
                    "inspection_id": r.inspection_id,
                    "model_version_id": p.model_version_id,
                    "is_candidate": p.is_candidate,
                    "boxes": p.boxes,
                    "max_confidence": p.max_confidence,
                    "verdict": p.verdict.value,
                    "latency_ms": p.latency_ms,
                    "created_at": now,
                }
            )
        rows[Routing].append(
            {
                "inspection_id": r.inspection_id,
                "level": r.level.value,
                "decider": r.routing.decider.value,
                "rule": r.routing.rule,
                "reason": r.routing.reason,
                "show_model_boxes": r.routing.show_model_boxes,
                "audit": r.routing.audit,
                "model_version_id": r.routed_model_id,
                "routed_at": now,
                "admitted": r.admission.admitted if r.admission else None,
                "admission_check": r.admission.check if r.admission else None,
                "admission_reason": r.admission.reason if r.admission else None,
                "novelty": r.admission.novelty if r.admission else None,
            }
        )
        if r.routing.decider is Decider.MODEL:
            assert r.routing.model_verdict is not None, "a model decision carries its verdict"
            rows[FinalDecision].append(
                {
                    "inspection_id": r.inspection_id,
                    "line_id": r.line_id,
                    "verdict": r.routing.model_verdict.value,
                    "decided_by": DecidedBy.MODEL.value,
                    "level": r.level.value,
                    "rule": r.routing.rule,
                    "model_version_id": r.routed_model_id,
                    "decided_at": now,
                }
            )
        if r.routing.needs_human:
            rows[ReviewTask].append(
                {
                    "inspection_id": r.inspection_id,
                    "line_id": r.line_id,
                    "kind": "audit" if r.routing.decider is Decider.MODEL else "decide",
                    "show_model_boxes": r.routing.show_model_boxes,
                    "status": "open",
                    "created_at": now,
                }
            )
    for table, table_rows in rows.items():
        if table_rows:
            session.execute(insert(table), table_rows)
    return [r.inspection_id for r in written], lost


def queue_depth(*, session: Session, line_id: int | None = None) -> int:
    """Phones waiting for the worker (queued or being processed)."""
    from sqlalchemy import func

    query = select(func.count()).select_from(Inspection).where(Inspection.status.in_([InspectionStatus.QUEUED.value, InspectionStatus.PROCESSING.value]))
    if line_id is not None:
        query = query.where(Inspection.line_id == line_id)
    return int(session.scalar(query) or 0)


def attach_simulated_truth(*, session: Session, inspection_id: int, scenario: str, truth: dict[str, Any]) -> None:
    """Record the generator's truth beside a simulated phone posted through the service (never shown to the model)."""
    session.execute(
        update(Inspection).where(Inspection.id == inspection_id).values(scenario=scenario, truth=truth).execution_options(synchronize_session=False)
    )
