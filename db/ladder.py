"""The ladder in the database: the plant's gate settings, promotion requests, evidence at the current rung."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.comparison import Comparison, compare
from core.ladder.gates import GateConfig, rung_of
from core.vocabulary import AutomationLevel
from db import audit
from db.comparison import paired_decisions
from db.drift import current_alarms
from db.lines import LineConfig
from db.models import GateSettings, PromotionRequest, utcnow

PLANT = "plant"


class RequestError(ValueError):
    """A request that cannot be decided as asked."""


def get_gate_config(*, session: Session) -> GateConfig:
    row = session.get(GateSettings, PLANT)
    return GateConfig.from_dict(row.config if row else None)


def save_gate_config(*, session: Session, config: GateConfig, actor: str, note: str | None = None) -> None:
    """Store the plant's gates (the caller checks who may); audited with before and after."""
    row = session.get(GateSettings, PLANT)
    before = row.config if row else GateConfig().as_dict()
    if row is None:
        session.add(GateSettings(name=PLANT, config=config.as_dict(), updated_by=actor))
    else:
        row.config, row.updated_at, row.updated_by = config.as_dict(), utcnow(), actor
    audit.record(session=session, actor=actor, action="gates.settings", entity="gates", entity_id=PLANT, before=before, after=config.as_dict(), note=note)


def evidence(*, session: Session, line: LineConfig, count_simulated: bool = False) -> Comparison:
    """People against the active model on the phones judged at the line's current rung (since ``level_since``).

    In partial automation only the random audit sample counts (see :func:`core.routing.route`): it
    measures the model on all the line's phones, where the uncertain band alone would measure it on
    its hardest ones. The simulated inspector's judgements count only with ``count_simulated`` (a
    demonstration's choice); a phone it judged that an engineer labelled counts by its label.
    """
    return compare(evidence_pairs(session=session, line=line, count_simulated=count_simulated))


def evidence_pairs(*, session: Session, line: LineConfig, count_simulated: bool = False) -> pd.DataFrame:
    """The rows behind :func:`evidence`, with their ``decided_at`` (how fast the evidence grows)."""
    pairs = paired_decisions(
        session=session,
        line_id=line.id,
        since=line.level_since,
        model_version=line.active_model_version,
        audit_sample_only=line.level is AutomationLevel.PARTIAL,
    )
    if not count_simulated and not pairs.empty:
        pairs = pairs[~pairs["is_simulated"].astype(bool) | (pairs["reference"] == "label")]
    return pairs


def simulated_judged(pairs: pd.DataFrame) -> int:
    """How many of these evidence pairs (:func:`evidence_pairs`) the simulated inspector judged."""
    return int(pairs["is_simulated"].astype(bool).sum()) if not pairs.empty else 0


def severe_alarm_metrics(*, session: Session, line_id: int) -> list[str]:
    """Metrics with an open (not cleared) severe drift alarm on the line."""
    return [a.metric for a in current_alarms(session=session, line_id=line_id) if a.severity == "severe" and a.cleared_at is None]


@dataclass(frozen=True)
class RequestView:
    id: int
    line_id: int
    line: str
    kind: str
    from_level: str
    from_share: float | None
    to_level: str
    to_share: float | None
    model_version_id: int | None
    requested_by: str
    requested_at: datetime
    note: str | None
    evidence: dict[str, Any]
    status: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}

    @property
    def what(self) -> str:
        """What is asked, in words: ``move to canary 5 %``, ``switch the model to scratch-v3``."""
        if self.kind == "model_switch":
            return f"switch the model to {self.evidence.get('to')}"
        return f"move to {rung_of(AutomationLevel(self.to_level), self.to_share or 0.0).label}"


def _view(row: PromotionRequest) -> RequestView:
    return RequestView(
        row.id,
        row.line_id,
        row.line.name,
        row.kind,
        row.from_level,
        row.from_share,
        row.to_level,
        row.to_share,
        row.model_version_id,
        row.requested_by,
        row.requested_at,
        row.note,
        row.evidence,
        row.status,
        row.decided_by,
        row.decided_at,
        row.decision_note,
    )


def create_request(
    *,
    session: Session,
    line: LineConfig,
    kind: str,
    to_level: str,
    to_share: float | None,
    actor: str,
    evidence: dict[str, Any],
    note: str | None,
    model_version_id: int | None = None,
) -> RequestView:
    """Record a request for a manager; a pending request of the same kind on the line is replaced (marked obsolete)."""
    for old in session.scalars(
        select(PromotionRequest).where(PromotionRequest.line_id == line.id, PromotionRequest.kind == kind, PromotionRequest.status == "pending")
    ):
        old.status, old.decided_at, old.decision_note = "obsolete", utcnow(), f"replaced by a newer request from {actor}"
    row = PromotionRequest(
        line_id=line.id,
        kind=kind,
        from_level=line.level.value,
        from_share=line.policy.canary_share,
        to_level=to_level,
        to_share=to_share,
        model_version_id=model_version_id,
        requested_by=actor,
        note=note,
        evidence=evidence,
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action=f"request.{kind}",
        entity="line",
        entity_id=line.name,
        after={"request": row.id, "to_level": to_level, "to_share": to_share, "model_version_id": model_version_id},
        note=note,
    )
    session.refresh(row)
    return _view(row)


def get_request(*, session: Session, request_id: int, for_update: bool = False) -> RequestView:
    """A request as plain data; ``for_update`` locks its row (and reads it afresh) until the transaction ends."""
    row = session.get(PromotionRequest, request_id, with_for_update=for_update or None, populate_existing=for_update)
    if row is None:
        raise RequestError(f"no request with id {request_id}")
    return _view(row)


def list_requests(*, session: Session, line_id: int | None = None, pending_only: bool = False, limit: int = 100) -> list[RequestView]:
    query = select(PromotionRequest)
    if line_id is not None:
        query = query.where(PromotionRequest.line_id == line_id)
    if pending_only:
        query = query.where(PromotionRequest.status == "pending")
    return [_view(r) for r in session.scalars(query.order_by(PromotionRequest.requested_at.desc(), PromotionRequest.id.desc()).limit(limit))]


def decided_requests(*, session: Session, since: datetime | None = None, requested_by: str | None = None, limit: int = 20) -> list[RequestView]:
    """Requests a manager approved or refused (or that became obsolete), newest decision first."""
    query = select(PromotionRequest).where(PromotionRequest.status != "pending", PromotionRequest.decided_at.is_not(None))
    if since is not None:
        query = query.where(PromotionRequest.decided_at >= since)
    if requested_by is not None:
        query = query.where(PromotionRequest.requested_by == requested_by)
    return [_view(r) for r in session.scalars(query.order_by(PromotionRequest.decided_at.desc(), PromotionRequest.id.desc()).limit(limit))]


def close_request(*, session: Session, request_id: int, status: str, actor: str, note: str | None) -> None:
    """Mark a pending request approved, refused or obsolete; audited.

    The row is locked and read afresh (``FOR UPDATE``): of two managers deciding one request at
    once, the second waits and is refused with who decided it, never deciding it twice.
    """
    row = session.get(PromotionRequest, request_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise RequestError(f"no request with id {request_id}")
    if row.status != "pending":
        raise RequestError(f"request {request_id} is already {row.status}" + (f" (by {row.decided_by})" if row.decided_by else ""))
    row.status, row.decided_by, row.decided_at, row.decision_note = status, actor, utcnow(), note
    audit.record(
        session=session,
        actor=actor,
        action=f"request.{status}",
        entity="line",
        entity_id=row.line.name,
        before={"request": row.id, "status": "pending"},
        after={"request": row.id, "status": status},
        note=note,
    )
