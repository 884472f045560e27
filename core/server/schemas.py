"""The JSON the inspection service speaks (pydantic models, also its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.server.service import Answer
from db.gate import FinalDecisionEvent, StoredAnswer


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, e.g. unauthorized, forbidden, unknown_line, no_image, not_an_image, body_too_large")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class InspectionAnswer(BaseModel):
    """What the gate does with the phone, and why."""

    inspection_id: int | None = Field(
        description="None when the phone was answered before it was recorded (the fail-safe under overload, a busy database): "
        "it is recorded afterwards; find it by serial"
    )
    line: str
    serial: str
    action: Literal["pass", "reject", "to_person"]
    decided_by: Literal["model", "person"] = Field(description="person: the final verdict is pending, follow it by GET or the decisions cursor")
    pending: bool
    level: str = Field(description="the line's automation level")
    rule: str = Field(description="the routing rule, or failsafe_<reason>")
    model_version: str | None = Field(description="the line's active (blue) version the answer rests on; None when no model judged the phone")
    model_slot: Literal["blue"] | None
    latency_ms: float
    failsafe: str | None = Field(description="None, or why the answer is the line's fail-safe")
    reason: str | None = Field(description="why, in words: e.g. why the admission check sent the image to a person (rule not_admitted)")
    replayed: bool = Field(description="this serial had been posted before on the line: the same inspection and action")

    @classmethod
    def from_answer(cls, answer: Answer) -> InspectionAnswer:
        return cls(
            inspection_id=answer.inspection_id,
            line=answer.line,
            serial=answer.serial,
            action=answer.action.value,
            decided_by=answer.decided_by,  # type: ignore[arg-type]
            pending=answer.pending,
            level=answer.level,
            rule=answer.rule,
            model_version=answer.model_version,
            model_slot="blue" if answer.model_version else None,
            latency_ms=round(answer.latency_ms, 2),
            failsafe=answer.failsafe.value if answer.failsafe else None,
            reason=answer.reason,
            replayed=answer.replayed,
        )


def decider_in_words(decided_by: str, *, simulated: bool = False) -> str:
    """The API's one word for who decided: ``model``, ``person`` (the database says ``human``), or ``simulated``."""
    if decided_by == "human":
        return "simulated" if simulated else "person"
    return decided_by


class FinalDecisionBody(BaseModel):
    verdict: Literal["pass", "reject"] = Field(description="as it stands: a person's latest correction where there is one")
    decided_by: str = Field(description="model, person, or simulated (the demo's simulated inspector)")
    decided_at: datetime = Field(description="when the phone was first decided")
    corrected_at: datetime | None = Field(
        default=None, description="when a person last took back or corrected the verdict (the verdict above is the corrected one)"
    )


class InspectionRecord(BaseModel):
    """A posted phone: the gate's answer, and the final decision once there is one."""

    inspection_id: int
    line: str
    serial: str
    station: str | None
    received_at: datetime
    status: str
    action: str | None
    decided_by: str | None
    level: str | None
    rule: str | None
    model_version: str | None
    failsafe: str | None
    reason: str | None = Field(description="why, in words (the routing's reason)")
    latency_ms: float | None
    final: FinalDecisionBody | None
    pending: bool = Field(description="true until the phone has its final decision (a person's verdict still to come), as the POST's 'pending'")
    model_slot: Literal["blue"] | None = Field(description="'blue' when the answer rests on the line's active version (as the POST's); else None")

    @classmethod
    def from_stored(cls, stored: StoredAnswer) -> InspectionRecord:
        final = None
        if stored.final_verdict is not None and stored.final_decided_at is not None:
            final = FinalDecisionBody(
                verdict=stored.final_verdict,  # type: ignore[arg-type]
                decided_by=decider_in_words(stored.final_decided_by or "", simulated=stored.final_simulated),
                decided_at=stored.final_decided_at,
                corrected_at=stored.final_corrected_at,
            )
        return cls(
            inspection_id=stored.inspection_id,
            line=stored.line,
            serial=stored.serial,
            station=stored.station,
            received_at=stored.received_at,
            status=stored.status,
            action=stored.action,
            decided_by=stored.decided_by,
            level=stored.level,
            rule=stored.rule,
            model_version=stored.model_version,
            failsafe=stored.failsafe,
            reason=stored.reason,
            latency_ms=None if stored.latency_ms is None else round(stored.latency_ms, 2),
            final=final,
            pending=final is None,
            model_slot="blue" if stored.model_version else None,
        )


class DecisionEvent(BaseModel):
    """A phone's final decision, or a person's correction of it: the phone's verdict from then on."""

    inspection_id: int
    serial: str
    verdict: Literal["pass", "reject"]
    decided_by: str = Field(description="model, person, or simulated (the demo's simulated inspector)")
    rule: str = Field(description="the routing rule of a decision; 'undo' or 'correction' for a person's correction")
    decided_at: datetime
    gate_action: str | None = Field(description="what the gate did when the phone was posted; None for phones that came by file")
    corrects: Literal["pass", "reject"] | None = Field(
        default=None, description="for a correction, the verdict it replaces: a phone already released or scrapped by it needs acting on again"
    )

    @classmethod
    def from_event(cls, event: FinalDecisionEvent) -> DecisionEvent:
        return cls(
            inspection_id=event.inspection_id,
            serial=event.serial,
            verdict=event.verdict,  # type: ignore[arg-type]
            decided_by=decider_in_words(event.decided_by, simulated=event.simulated),
            rule=event.rule,
            decided_at=event.decided_at,
            gate_action=event.gate_action,
            corrects=event.corrects,  # type: ignore[arg-type]
        )


class DecisionPage(BaseModel):
    decisions: list[DecisionEvent]
    cursor: str = Field(description="pass it as 'after' to get the next decisions")
