"""Corrections of a person's verdict: a new row linked to the decision, never an edit.

A supervisor may take back their last verdict within a short window (:data:`UNDO_SECONDS`) with one
click, or correct one of their verdicts later with a reason. Each correction is inserted into
``decision_corrections`` and linked to the human decision (and to the correction it supersedes);
``final_decisions`` and ``human_decisions`` are never changed. Every reader of a phone's verdict
goes through :func:`human_verdict` or :func:`final_verdict`, which give the latest correction's
verdict where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.vocabulary import Verdict
from db import audit
from db.models import DecisionCorrection, FinalDecision, HumanDecision, Inspection, ReviewTask, utcnow

#: How long after a verdict one click takes it back, without a reason.
UNDO_SECONDS = 10.0
#: Slack on the server for the round trip between the click and the write.
UNDO_GRACE_SECONDS = 3.0


class CorrectionError(ValueError):
    """A correction that cannot be recorded as asked (someone else's verdict, no reason, nothing to change)."""


def _latest_correction(decision_id: Any) -> Any:
    return (
        select(DecisionCorrection.verdict)
        .where(DecisionCorrection.human_decision_id == decision_id)
        .order_by(DecisionCorrection.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def human_verdict() -> ColumnElement[str]:
    """A person's verdict as it stands: their latest correction's, else the one they gave (for queries over ``HumanDecision``)."""
    return func.coalesce(_latest_correction(HumanDecision.id), HumanDecision.verdict)


def final_verdict() -> ColumnElement[str]:
    """A phone's final verdict as it stands: a person's final verdict follows their latest correction (queries over ``FinalDecision``)."""
    return func.coalesce(_latest_correction(FinalDecision.human_decision_id), FinalDecision.verdict)


@dataclass(frozen=True)
class DecisionView:
    """One of a person's verdicts as it stands now."""

    human_decision_id: int
    inspection_id: int
    serial: str
    verdict: Verdict
    given: Verdict
    decided_at: datetime
    corrections: int


def recent_decisions(*, session: Session, reviewer: str, limit: int = 20) -> list[DecisionView]:
    """``reviewer``'s latest verdicts (not the simulated inspector's), newest first, as they stand."""
    corrections = select(func.count()).where(DecisionCorrection.human_decision_id == HumanDecision.id).scalar_subquery()
    rows = session.execute(
        select(HumanDecision.id, HumanDecision.inspection_id, Inspection.serial, human_verdict(), HumanDecision.verdict, HumanDecision.decided_at, corrections)
        .join(Inspection, Inspection.id == HumanDecision.inspection_id)
        .where(HumanDecision.user_name == reviewer, HumanDecision.is_simulated.is_(False))
        .order_by(HumanDecision.decided_at.desc(), HumanDecision.id.desc())
        .limit(limit)
    )
    return [DecisionView(r[0], r[1], r[2], Verdict(r[3]), Verdict(r[4]), r[5], int(r[6])) for r in rows]


def correct_decision(
    *,
    session: Session,
    human_decision_id: int,
    actor: str,
    verdict: Verdict,
    reason: str | None = None,
    now: datetime | None = None,
) -> int:
    """Record ``actor``'s correction of their own verdict; returns the correction id.

    Within :data:`UNDO_SECONDS` of the verdict no reason is needed (an undo); later, one is.

    Raises:
        CorrectionError: No such decision, not ``actor``'s own, the verdict stands already, or a
            late correction without a reason.
    """
    now = now or utcnow()
    decision = session.get(HumanDecision, human_decision_id)
    if decision is None:
        raise CorrectionError(f"no decision with id {human_decision_id}")
    if decision.is_simulated or decision.user_name != actor:
        raise CorrectionError(f"only {decision.user_name} may correct their own verdict on this phone")
    latest = session.scalar(
        select(DecisionCorrection).where(DecisionCorrection.human_decision_id == human_decision_id).order_by(DecisionCorrection.id.desc()).limit(1)
    )
    current = Verdict(latest.verdict if latest is not None else decision.verdict)
    if verdict is current:
        raise CorrectionError(f"the verdict is {current.value} already: nothing to correct")
    is_undo = now - decision.decided_at <= timedelta(seconds=UNDO_SECONDS + UNDO_GRACE_SECONDS)
    reason = (reason or "").strip()
    if not reason:
        if not is_undo:
            raise CorrectionError(f"more than {UNDO_SECONDS:.0f} s after the verdict a correction needs a reason")
        reason = f"undone within {UNDO_SECONDS:.0f} s"
    correction = DecisionCorrection(
        human_decision_id=decision.id,
        inspection_id=decision.inspection_id,
        supersedes_id=latest.id if latest is not None else None,
        verdict=verdict.value,
        previous_verdict=current.value,
        corrected_by=actor,
        is_undo=is_undo,
        reason=reason,
        corrected_at=now,
    )
    session.add(correction)
    session.flush()
    task = session.get(ReviewTask, decision.task_id) if decision.task_id is not None else None
    final = session.get(FinalDecision, decision.inspection_id)
    audit.record(
        session=session,
        actor=actor,
        action="phone.undo" if is_undo else "phone.correct",
        entity="inspection",
        entity_id=decision.inspection_id,
        before={"verdict": current.value},
        after={
            "verdict": verdict.value,
            "correction": correction.id,
            "human_decision": decision.id,
            "task_kind": task.kind if task is not None else None,
            "final_decision_follows": final is not None and final.human_decision_id == decision.id,
        },
        note=reason,
    )
    return correction.id
