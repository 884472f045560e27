"""The state of each line at a glance: what ``shadowline status`` prints and the Live line page shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.vocabulary import AutomationLevel, DecidedBy, InspectionStatus, Verdict
from db.corrections import final_verdict
from db.drift import current_alarms
from db.heartbeats import server_states, worker_states
from db.lines import list_lines
from db.models import FinalDecision, HumanDecision, Inspection, PromotionRequest, ReviewTask, utcnow

#: A prediction server silent for longer than this is no longer shown (it was taken away, not lost).
SERVER_SHOWN_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class LineStatus:
    line: str
    level: str
    queue_depth: int
    counts: dict[str, int]
    verdicts: dict[str, int]
    decided_by: dict[str, int]
    open_review_tasks: int
    phones_per_min: float
    worker_heartbeat_age_s: float | None
    worker_alive: bool
    model_status: str
    active_model: str | None
    candidate_model: str | None
    alarms: list[dict[str, Any]] = field(default_factory=list)
    canary_share: float | None = None
    previous_model: str | None = None
    pending_requests: int = 0
    #: The prediction servers (``shadowline serve``): None when none ran in the last day, else whether one is alive.
    server_alive: bool | None = None
    #: The alive servers' readiness in words ("ready", or what is not), or the last one's state.
    server_status: str = ""
    #: Of the phones ``decided_by`` counts as a person's, those the line simulator's stand-in inspector judged.
    decided_by_simulation: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def server_summary(*, session: Session, now: datetime | None = None) -> tuple[bool | None, str]:
    """Whether a prediction server answers (None: none ran in the last day) and its readiness in words.

    When none is alive, the words say how the last one ended: ``stopped`` (shut down) or ``silent
    for N s`` (killed, or its machine or network gone).
    """
    servers = [s for s in server_states(session=session, now=now) if s.age_s <= SERVER_SHOWN_SECONDS]
    if not servers:
        return None, ""
    alive = [s for s in servers if s.alive]
    if alive:
        return True, "; ".join(sorted({s.model_status for s in alive}))
    last = servers[0]
    return False, "stopped" if last.state == "stopped" else f"silent for {last.age_s:.0f} s"


def line_statuses(*, session: Session, now: datetime | None = None) -> list[LineStatus]:
    """Status of every line."""
    now = now or utcnow()
    workers = worker_states(session=session, now=now)
    alive = [w for w in workers if w.alive]
    heartbeat_age = min((w.age_s for w in workers), default=None)
    model_status = "; ".join(sorted({w.model_status for w in alive})) if alive else "no worker running"
    server_alive, server_status = server_summary(session=session, now=now)

    by_status = dict.fromkeys((s.value for s in InspectionStatus), 0)
    statuses: list[LineStatus] = []
    for line in list_lines(session=session):
        counts = dict(by_status)
        for status, n in session.execute(select(Inspection.status, func.count()).where(Inspection.line_id == line.id).group_by(Inspection.status)):
            counts[status] = n
        verdicts = dict.fromkeys((v.value for v in Verdict), 0)
        decided = dict.fromkeys((d.value for d in DecidedBy), 0)
        verdict_now = final_verdict()  # a person's correction counts, not the verdict it replaced
        finals = session.execute(
            select(verdict_now, FinalDecision.decided_by, func.count()).where(FinalDecision.line_id == line.id).group_by(verdict_now, FinalDecision.decided_by)
        )
        for verdict, decided_by, n in finals:
            verdicts[verdict] += n
            decided[decided_by] += n
        finished = counts[InspectionStatus.DONE.value] + counts[InspectionStatus.FAILED.value]
        decided[DecidedBy.PENDING.value] = finished - decided[DecidedBy.MODEL.value] - decided[DecidedBy.HUMAN.value]
        recent = session.scalar(
            select(func.count()).select_from(Inspection).where(Inspection.line_id == line.id, Inspection.processed_at >= now - timedelta(seconds=60))
        )
        simulated = session.scalar(
            select(func.count())
            .select_from(FinalDecision)
            .join(HumanDecision, HumanDecision.id == FinalDecision.human_decision_id)
            .where(FinalDecision.line_id == line.id, HumanDecision.is_simulated.is_(True))
        )
        open_tasks = session.scalar(
            select(func.count()).select_from(ReviewTask).where(ReviewTask.line_id == line.id, ReviewTask.status.in_(["open", "claimed"]))
        )
        statuses.append(
            LineStatus(
                line=line.name,
                level=line.level.value,
                queue_depth=counts[InspectionStatus.QUEUED.value] + counts[InspectionStatus.PROCESSING.value],
                counts=counts,
                verdicts=verdicts,
                decided_by=decided,
                decided_by_simulation=int(simulated or 0),
                open_review_tasks=int(open_tasks or 0),
                phones_per_min=float(recent or 0),
                worker_heartbeat_age_s=None if heartbeat_age is None else round(heartbeat_age, 1),
                worker_alive=bool(alive),
                model_status=model_status,
                active_model=line.active_model_version,
                candidate_model=line.candidate_model_version,
                alarms=[alarm.as_status() for alarm in current_alarms(session=session, line_id=line.id)],
                canary_share=line.policy.canary_share if line.level is AutomationLevel.CANARY else None,
                previous_model=line.previous_model_version,
                server_alive=server_alive,
                server_status=server_status,
                pending_requests=int(
                    session.scalar(
                        select(func.count()).select_from(PromotionRequest).where(PromotionRequest.line_id == line.id, PromotionRequest.status == "pending")
                    )
                    or 0
                ),
            )
        )
    return statuses
