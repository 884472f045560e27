"""Phones judged by both a person and the model: the rows behind the Shadow comparison page."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from db.corrections import human_verdict
from db.models import HumanDecision, Inspection, Line, ModelVersion, Prediction, Routing

#: The page compares at most this many most recent pairs (the window's newest phones).
MAX_PAIRS = 200_000

COLUMNS = [
    "inspection_id",
    "serial",
    "line",
    "image_path",
    "human_verdict",
    "model_verdict",
    "max_confidence",
    "boxes",
    "model_version",
    "decided_at",
    "user_name",
    "is_simulated",
    "saw_model_boxes",
]


def paired_decisions(
    *,
    session: Session,
    line_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
    include_simulated: bool = True,
    limit: int = MAX_PAIRS,
    use_labels: bool = True,
    audit_sample_only: bool = False,
) -> pd.DataFrame:
    """One row per human decision on a phone the active model also judged, newest first.

    With ``audit_sample_only``, only the phones of the random audit sample (drawn from every phone
    the line saw, whoever decided it): in partial automation people also judge the uncertain band,
    which alone would measure the model on its hardest phones only.

    Where a quality engineer's label gives a phone's truth, it is the better reference: it replaces
    the person's verdict in ``human_verdict`` (the person's stays in ``person_verdict``) and
    ``reference`` says which one it is (``label`` or ``person``).
    """
    query = (
        select(
            Inspection.id,
            Inspection.serial,
            Line.name,
            Inspection.image_path,
            human_verdict(),  # the person's latest correction, where there is one
            Prediction.verdict,
            Prediction.max_confidence,
            Prediction.boxes,
            ModelVersion.version,
            HumanDecision.decided_at,
            HumanDecision.user_name,
            HumanDecision.is_simulated,
            HumanDecision.saw_model_boxes,
        )
        .join(Inspection, Inspection.id == HumanDecision.inspection_id)
        .join(Line, Line.id == Inspection.line_id)
        .join(Prediction, and_(Prediction.inspection_id == Inspection.id, Prediction.is_candidate.is_(False)))
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .order_by(HumanDecision.decided_at.desc())
        .limit(limit)
    )
    if line_id is not None:
        query = query.where(Inspection.line_id == line_id)
    if since is not None:
        query = query.where(HumanDecision.decided_at >= since)
    if until is not None:
        query = query.where(HumanDecision.decided_at < until)
    if model_version:
        query = query.where(ModelVersion.version == model_version)
    if not include_simulated:
        query = query.where(HumanDecision.is_simulated.is_(False))
    if audit_sample_only:
        query = query.join(Routing, Routing.inspection_id == Inspection.id).where(Routing.audit.is_(True))
    frame = pd.DataFrame(session.execute(query).all(), columns=COLUMNS)
    if not frame.empty:
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    frame["person_verdict"] = frame["human_verdict"]
    frame["reference"] = "person"
    if use_labels and not frame.empty:
        from db.labels import truths

        known = truths(session=session, line_id=line_id)
        labelled = frame["inspection_id"].isin(known.keys())
        if labelled.any():
            frame.loc[labelled, "human_verdict"] = [known[i].verdict.value for i in frame.loc[labelled, "inspection_id"]]
            frame.loc[labelled, "reference"] = "label"
    return frame


def model_versions(*, session: Session) -> list[str]:
    return list(session.scalars(select(ModelVersion.version).order_by(ModelVersion.registered_at)))


CHAMPION_CHALLENGER_COLUMNS = ["inspection_id", "serial", "active_verdict", "active_confidence", "candidate_verdict", "candidate_confidence", "human_verdict"]


def champion_challenger(*, session: Session, line_id: int, active_id: int, candidate_id: int, limit: int = MAX_PAIRS) -> pd.DataFrame:
    """The line's latest phones that both versions judged, with the person's verdict where there is one."""
    from sqlalchemy.orm import aliased

    active, candidate = aliased(Prediction), aliased(Prediction)
    query = (
        select(Inspection.id, Inspection.serial, active.verdict, active.max_confidence, candidate.verdict, candidate.max_confidence, human_verdict())
        .join(active, and_(active.inspection_id == Inspection.id, active.model_version_id == active_id))
        .join(candidate, and_(candidate.inspection_id == Inspection.id, candidate.model_version_id == candidate_id))
        .outerjoin(HumanDecision, HumanDecision.inspection_id == Inspection.id)
        .where(Inspection.line_id == line_id)
        .order_by(Inspection.id.desc())
        .limit(limit)
    )
    return pd.DataFrame(session.execute(query).all(), columns=CHAMPION_CHALLENGER_COLUMNS)
