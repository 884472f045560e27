"""Phones waiting for a person: claim one (one reviewer at a time), record the human verdict, skip.

A ``decide`` task's verdict becomes the phone's final decision; an ``audit`` task's verdict is
kept beside the model's final decision (an override when they differ), never replacing it.
A skipped phone goes to the back of the skipper's queue; other reviewers see it in its age order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core.vocabulary import DecidedBy, Verdict
from db import audit
from db.models import FinalDecision, HumanDecision, Inspection, Line, ReviewSkip, ReviewTask, Routing, utcnow

CLAIM_SECONDS = 120.0


class TaskNotHeldError(RuntimeError):
    """The task is done, or claimed by someone else."""


@dataclass(frozen=True)
class ReviewItem:
    """A claimed task with what the reviewer may see."""

    task_id: int
    inspection_id: int
    line_id: int
    serial: str
    image_path: str
    kind: str
    show_model_boxes: bool
    rule: str
    captured_at: datetime
    truth: dict[str, Any] | None
    line_name: str = ""
    #: When this reviewer last skipped the phone (it came back because nothing else waits), else None.
    skipped_at: datetime | None = None
    #: Why the admission check refused the photograph (a black frame, a lens cap, a frozen camera), else None.
    refused_because: str | None = None


def _waiting(now: datetime) -> Any:
    """Tasks a reviewer may claim: open, or claimed with an expired claim."""
    return or_(ReviewTask.status == "open", and_(ReviewTask.status == "claimed", ReviewTask.claim_expires_at < now))


def _skipped_by(reviewer: str) -> Any:
    """When ``reviewer`` last skipped the task of the enclosing query (NULL when never)."""
    return (
        select(func.max(ReviewSkip.skipped_at))
        .where(ReviewSkip.task_id == ReviewTask.id, ReviewSkip.reviewer == reviewer)
        .correlate(ReviewTask)
        .scalar_subquery()
    )


def claim_next_task(
    *,
    session: Session,
    reviewer: str,
    line_id: int | None = None,
    claim_seconds: float = CLAIM_SECONDS,
    only_simulated: bool = False,
    now: datetime | None = None,
    waited_seconds: float = 0.0,
) -> ReviewItem | None:
    """Claim the oldest open task (or one whose claim expired), atomically; None when there is none.

    A phone ``reviewer`` already holds comes first, its claim renewed: a reload of the page (or a
    second tab) shows the phone they were judging instead of stranding it, claimed and unseen,
    until the claim expires.

    ``waited_seconds``: only a task that has waited at least this long (the demo's simulated
    inspector leaves the newest phones to people).

    Tasks ``reviewer`` skipped come last, the one skipped longest ago first, so a skip always moves on
    when anything else waits.
    """
    now = now or utcnow()
    skipped = _skipped_by(reviewer)
    held = (
        select(ReviewTask.id)
        .where(ReviewTask.status == "claimed", ReviewTask.claimed_by == reviewer, ReviewTask.claim_expires_at >= now)
        .order_by(ReviewTask.created_at, ReviewTask.id)
        .limit(1)
    )
    if line_id is not None:
        held = held.where(ReviewTask.line_id == line_id)
    own = session.scalar(held)
    if own is not None and renew_claim(session=session, task_id=own, reviewer=reviewer, claim_seconds=claim_seconds, now=now):
        return _item(session, own, skipped)
    candidates = select(ReviewTask.id).where(_waiting(now))
    if line_id is not None:
        candidates = candidates.where(ReviewTask.line_id == line_id)
    if only_simulated:
        candidates = candidates.join(Inspection, Inspection.id == ReviewTask.inspection_id).where(Inspection.truth.is_not(None))
    if waited_seconds > 0:
        candidates = candidates.where(ReviewTask.created_at <= now - timedelta(seconds=waited_seconds))
    # A queue: SKIP LOCKED lets each reviewer take the oldest task nobody else is taking at this
    # moment, without waiting (PostgreSQL). Without it, two reviewers' subqueries pick the same row
    # under READ COMMITTED and the second UPDATE, re-checking only ``id IN (...)``, takes it again.
    # The waiting condition is repeated on the UPDATE so a row re-checked after a wait must still
    # be claimable. SQLite ignores FOR UPDATE; its write units are serialised already.
    candidates = (
        candidates.order_by(skipped.is_not(None), skipped, ReviewTask.created_at, ReviewTask.id).limit(1).with_for_update(skip_locked=True, of=ReviewTask)
    )
    task_id = session.execute(
        update(ReviewTask)
        .where(ReviewTask.id.in_(candidates.scalar_subquery()), _waiting(now))
        .values(status="claimed", claimed_by=reviewer, claim_expires_at=now + timedelta(seconds=claim_seconds))
        .returning(ReviewTask.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if task_id is None:
        return None
    return _item(session, task_id, skipped)


def renew_claim(*, session: Session, task_id: int, reviewer: str, claim_seconds: float = CLAIM_SECONDS, now: datetime | None = None) -> bool:
    """Extend ``reviewer``'s claim on a task they still hold (the page is open on it); False when they no longer do."""
    now = now or utcnow()
    renewed = session.execute(
        update(ReviewTask)
        .where(ReviewTask.id == task_id, ReviewTask.claimed_by == reviewer, ReviewTask.status == "claimed", ReviewTask.claim_expires_at >= now)
        .values(claim_expires_at=now + timedelta(seconds=claim_seconds))
        .returning(ReviewTask.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return renewed is not None


def _item(session: Session, task_id: int, skipped: Any) -> ReviewItem:
    task, inspection, routing, line_name, skipped_at = session.execute(
        select(ReviewTask, Inspection, Routing, Line.name, skipped)
        .join(Inspection, Inspection.id == ReviewTask.inspection_id)
        .join(Routing, Routing.inspection_id == Inspection.id)
        .join(Line, Line.id == ReviewTask.line_id)
        .where(ReviewTask.id == task_id)
    ).one()
    return ReviewItem(
        task_id=task.id,
        inspection_id=inspection.id,
        line_id=inspection.line_id,
        serial=inspection.serial,
        image_path=inspection.image_path,
        kind=task.kind,
        show_model_boxes=task.show_model_boxes,
        rule=routing.rule,
        captured_at=inspection.captured_at,
        truth=inspection.truth,
        line_name=line_name,
        skipped_at=skipped_at,
        refused_because=(routing.admission_reason or "no reason recorded") if routing.admitted is False else None,
    )


def record_human_decision(
    *,
    session: Session,
    task_id: int,
    reviewer: str,
    verdict: Verdict,
    is_simulated: bool = False,
    seconds_taken: float | None = None,
) -> int:
    """Record ``reviewer``'s verdict on a task they hold; returns the human decision id.

    Raises:
        TaskNotHeldError: The task is done already, or claimed by another reviewer.
    """
    task = session.get(ReviewTask, task_id)
    if task is None or task.status != "claimed" or task.claimed_by != reviewer:
        raise TaskNotHeldError(f"review task {task_id} is not held by {reviewer}: it was decided or taken by someone else")
    routing = session.get(Routing, task.inspection_id)
    decision = HumanDecision(
        inspection_id=task.inspection_id,
        task_id=task.id,
        user_name=reviewer,
        is_simulated=is_simulated,
        verdict=verdict.value,
        saw_model_boxes=task.show_model_boxes,
        seconds_taken=seconds_taken,
    )
    session.add(decision)
    session.flush()
    audit.record(
        session=session,
        actor=reviewer,
        action="phone.decide" if task.kind == "decide" else "phone.audit",
        entity="inspection",
        entity_id=task.inspection_id,
        after={"verdict": verdict.value, "saw_model_boxes": task.show_model_boxes, "simulated": is_simulated},
    )
    task.status = "done"
    task.done_at = utcnow()
    if task.kind == "decide":
        session.add(
            FinalDecision(
                inspection_id=task.inspection_id,
                line_id=task.line_id,
                verdict=verdict.value,
                decided_by=DecidedBy.HUMAN.value,
                level=routing.level if routing else "unknown",
                rule=routing.rule if routing else "unknown",
                model_version_id=routing.model_version_id if routing else None,
                human_decision_id=decision.id,
            )
        )
    session.flush()
    return decision.id


def release_task(*, session: Session, task_id: int, reviewer: str) -> bool:
    """Give a claimed task back to the queue in its age order (the reviewer turned to another line); False when not held."""
    released = session.execute(
        update(ReviewTask)
        .where(ReviewTask.id == task_id, ReviewTask.claimed_by == reviewer, ReviewTask.status == "claimed")
        .values(status="open", claimed_by=None, claim_expires_at=None)
        .returning(ReviewTask.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return released is not None


def skip_task(*, session: Session, task_id: int, reviewer: str, now: datetime | None = None) -> bool:
    """``reviewer`` gives a held phone back: it goes to the back of their queue. False when they did not hold it."""
    now = now or utcnow()
    if not release_task(session=session, task_id=task_id, reviewer=reviewer):
        return False
    session.add(ReviewSkip(task_id=task_id, reviewer=reviewer, skipped_at=now))
    session.flush()
    return True


@dataclass(frozen=True)
class QueueSummary:
    """How many phones wait for a person (on a line, or on all) and since when."""

    waiting: int
    oldest_at: datetime | None


def queue_summary(*, session: Session, line_id: int | None = None) -> QueueSummary:
    """Phones waiting for a person or held by one (not yet judged), and the oldest one's routing time."""
    query = select(func.count(), func.min(ReviewTask.created_at)).where(ReviewTask.status.in_(["open", "claimed"]))
    if line_id is not None:
        query = query.where(ReviewTask.line_id == line_id)
    count, oldest = session.execute(query).one()
    return QueueSummary(waiting=int(count or 0), oldest_at=oldest)
