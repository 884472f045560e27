"""What the Live line page shows: the latest phones of a line with prediction and decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from db.corrections import final_verdict
from db.models import FinalDecision, HumanDecision, Inspection, Prediction, Routing


@dataclass(frozen=True)
class PhoneRow:
    """One phone as the control room sees it.

    ``boxes`` are the active model's boxes, and only when they may be shown: once the phone has a
    final decision (comparison after the fact), or when its routing lets people see them. In
    shadow mode nobody sees the model's opinion before judging.
    """

    inspection_id: int
    serial: str
    captured_at: datetime
    status: str
    error: str | None
    image_path: str
    boxes: list[dict[str, Any]]
    max_confidence: float | None
    model_verdict: str | None
    verdict: str | None
    decided_by: str | None
    rule: str | None
    level: str | None
    #: Why the admission check refused the phone (the model may not decide it alone), else None.
    admission_reason: str | None = None
    #: The person's verdict came from the line simulator's stand-in inspector, not a person.
    decided_by_simulation: bool = False


def latest_phones(*, session: Session, line_id: int, limit: int = 12) -> list[PhoneRow]:
    """The ``limit`` most recently captured phones of a line, newest first."""
    rows = session.execute(
        select(Inspection, Prediction, Routing, FinalDecision, final_verdict(), HumanDecision.is_simulated)
        .outerjoin(Prediction, and_(Prediction.inspection_id == Inspection.id, Prediction.is_candidate.is_(False)))
        .outerjoin(Routing, Routing.inspection_id == Inspection.id)
        .outerjoin(FinalDecision, FinalDecision.inspection_id == Inspection.id)
        .outerjoin(HumanDecision, HumanDecision.id == FinalDecision.human_decision_id)
        .where(Inspection.line_id == line_id)
        .order_by(Inspection.captured_at.desc(), Inspection.id.desc())  # along ix_inspections_line_captured
        .limit(limit)
    ).all()
    phones = []
    for inspection, prediction, routing, final, verdict, simulated in rows:
        may_show = final is not None or (routing is not None and routing.show_model_boxes)
        shown = prediction if may_show else None
        phones.append(
            PhoneRow(
                inspection_id=inspection.id,
                serial=inspection.serial,
                captured_at=inspection.captured_at,
                status=inspection.status,
                error=inspection.error,
                image_path=inspection.image_path,
                boxes=list(shown.boxes) if shown is not None else [],
                max_confidence=shown.max_confidence if shown is not None else None,
                model_verdict=shown.verdict if shown is not None else None,
                verdict=verdict if final else None,  # a person's correction, where there is one
                decided_by=final.decided_by if final else None,
                rule=routing.rule if routing else None,
                level=routing.level if routing else None,
                admission_reason=routing.admission_reason if routing and routing.admitted is False else None,
                decided_by_simulation=bool(simulated),
            )
        )
    return phones


def model_boxes(*, session: Session, inspection_id: int) -> list[dict[str, Any]]:
    """The active model's boxes on one phone (callers decide whether they may be shown)."""
    prediction = session.scalar(select(Prediction).where(Prediction.inspection_id == inspection_id, Prediction.is_candidate.is_(False)))
    return list(prediction.boxes) if prediction is not None else []
