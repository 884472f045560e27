"""SQLAlchemy 2.x models: the tables of Shadowline.

How a phone moves through them: ``inspections`` (queued by ingest, claimed by a worker) ->
``image_metrics`` and ``predictions`` (written by the worker) -> ``routings`` (who judges it, and
why) -> ``review_tasks`` and ``human_decisions`` when a person must judge -> ``final_decisions``
(exactly one per phone, inserted once, never edited) -> ``decision_corrections`` when a person
takes back or corrects their verdict (a new linked row; readers use the latest). ``audit_log``,
``final_decisions``, ``human_decisions`` and ``decision_corrections`` are append-only: the
migrations install triggers that refuse UPDATE and DELETE on them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.vocabulary import AutomationLevel, DecidedBy, InspectionStatus, Role, Verdict


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, PostgreSQL gets the same values."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def _enum_check(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"ck_{column}_valid")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Line(Base):
    """A production line with one camera; its settings say how far automation goes."""

    __tablename__ = "lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    settings: Mapped[LineSettings] = relationship(back_populates="line", uselist=False)


class ModelVersion(Base):
    """A registered detector version: a folder under models/ with its card and weights hashes."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    onnx_sha256: Mapped[str | None] = mapped_column(String(64))
    pt_sha256: Mapped[str | None] = mapped_column(String(64))
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineSettings(Base):
    """Per-line policy: automation level, canary share, confidence band, blue/green models."""

    __tablename__ = "line_settings"
    __table_args__ = (
        _enum_check("level", AutomationLevel),
        CheckConstraint("canary_share >= 0 AND canary_share <= 1", name="ck_canary_share"),
        CheckConstraint("audit_share >= 0 AND audit_share <= 1", name="ck_audit_share"),
        CheckConstraint("confidence_low <= confidence_high", name="ck_confidence_band"),
        CheckConstraint("answer_budget_ms > 0", name="ck_answer_budget"),
        CheckConstraint("failsafe_action IN ('to_person', 'reject')", name="ck_failsafe_action"),
    )

    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), default=AutomationLevel.SHADOW.value)
    canary_share: Mapped[float] = mapped_column(Float, default=0.05)
    audit_share: Mapped[float] = mapped_column(Float, default=0.02)
    confidence_low: Mapped[float] = mapped_column(Float, default=0.15)
    confidence_high: Mapped[float] = mapped_column(Float, default=0.6)
    active_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    candidate_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    #: The version that was active before the last switch: rollback makes it active again.
    previous_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    #: When the current level (and canary share) began: gates count evidence from here.
    level_since: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="system")
    #: How long the line waits for the inspection service's answer before it acts on the fail-safe.
    answer_budget_ms: Mapped[int] = mapped_column(Integer, default=300, server_default="300")
    #: What the gate does when no answer comes in time: divert to a person, or reject. Never pass.
    failsafe_action: Mapped[str] = mapped_column(String(16), default="to_person", server_default="to_person")

    line: Mapped[Line] = relationship(back_populates="settings")
    active_model: Mapped[ModelVersion | None] = relationship(foreign_keys=[active_model_id])
    candidate_model: Mapped[ModelVersion | None] = relationship(foreign_keys=[candidate_model_id])
    previous_model: Mapped[ModelVersion | None] = relationship(foreign_keys=[previous_model_id])


class Inspection(Base):
    """One photographed phone and its way through the worker."""

    __tablename__ = "inspections"
    __table_args__ = (
        _enum_check("status", InspectionStatus),
        Index("ix_inspections_claim", "status", "lease_expires_at", "id"),
        Index("ix_inspections_line_captured", "line_id", "captured_at"),
        Index("ix_inspections_line_status", "line_id", "status"),
        Index("ix_inspections_line_processed", "line_id", "processed_at"),
        Index("ix_inspections_line_image", "line_id", "image_sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), index=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    captured_at: Mapped[datetime] = mapped_column(default=utcnow)
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # simulator | ingest | watch
    status: Mapped[str] = mapped_column(String(16), default=InspectionStatus.QUEUED.value)
    error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    processed_at: Mapped[datetime | None] = mapped_column()
    # Only for simulated phones: the generator's truth, so a simulated inspector can answer and
    # evaluations can be checked. Never shown to the model.
    scenario: Mapped[str | None] = mapped_column(String(32))
    truth: Mapped[dict[str, Any] | None] = mapped_column()

    line: Mapped[Line] = relationship()


class ImageMetrics(Base):
    """Input metrics of one image, the raw material of data-drift monitoring."""

    __tablename__ = "image_metrics"

    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), primary_key=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    brightness: Mapped[float] = mapped_column(Float)
    contrast: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    colourfulness: Mapped[float] = mapped_column(Float)
    mean_b: Mapped[float] = mapped_column(Float)
    mean_g: Mapped[float] = mapped_column(Float)
    mean_r: Mapped[float] = mapped_column(Float)


class Prediction(Base):
    """One model's output on one phone; a candidate (green) model writes its own row beside blue."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("inspection_id", "model_version_id", name="uq_prediction_per_model"),
        _enum_check("verdict", Verdict),
        Index("ix_predictions_model_created", "model_version_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    is_candidate: Mapped[bool] = mapped_column(Boolean, default=False)
    boxes: Mapped[list[Any]] = mapped_column(default=list)
    max_confidence: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(8))
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model_version: Mapped[ModelVersion] = relationship()


class Routing(Base):
    """Who judges a phone and why: the routing policy's answer at the line's level."""

    __tablename__ = "routings"
    __table_args__ = (_enum_check("level", AutomationLevel),)

    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    decider: Mapped[str] = mapped_column(String(16))  # model | human
    rule: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    show_model_boxes: Mapped[bool] = mapped_column(Boolean, default=False)
    audit: Mapped[bool] = mapped_column(Boolean, default=False)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    routed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The admission check on the active model (None where it did not run): may the model decide it alone?
    admitted: Mapped[bool | None] = mapped_column(Boolean)
    admission_check: Mapped[str | None] = mapped_column(String(16))  # ok | camera | range | novelty | repeat | missing | error
    admission_reason: Mapped[str | None] = mapped_column(Text)
    novelty: Mapped[float | None] = mapped_column(Float)


class ReviewTask(Base):
    """A phone waiting for a person: claimed by one reviewer at a time, with a lease."""

    __tablename__ = "review_tasks"
    __table_args__ = (
        Index("ix_review_tasks_open", "line_id", "status", "created_at"),
        Index("ix_review_tasks_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), unique=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    kind: Mapped[str] = mapped_column(String(16))  # decide | audit
    show_model_boxes: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | claimed | done
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()


class HumanDecision(Base):
    """A person's (or the clearly marked simulated inspector's) verdict on one phone."""

    __tablename__ = "human_decisions"
    __table_args__ = (_enum_check("verdict", Verdict),)

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("review_tasks.id"))
    user_name: Mapped[str] = mapped_column(String(64))
    is_simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str] = mapped_column(String(8))
    saw_model_boxes: Mapped[bool] = mapped_column(Boolean)
    seconds_taken: Mapped[float | None] = mapped_column(Float)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class FinalDecision(Base):
    """The one verdict a phone leaves the line with. Inserted once; its primary key forbids a second."""

    __tablename__ = "final_decisions"
    __table_args__ = (
        _enum_check("verdict", Verdict),
        _enum_check("decided_by", DecidedBy),
        Index("ix_final_decisions_decided_at", "decided_at"),
        # Covers the per-line verdict counts of the Live line page and `shadowline status`.
        Index("ix_final_decisions_line_verdict", "line_id", "verdict", "decided_by"),
        # The hold station follows a line's final decisions in order (the service's cursor).
        Index("ix_final_decisions_line_decided", "line_id", "decided_at", "inspection_id"),
    )

    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    decided_by: Mapped[str] = mapped_column(String(8))
    level: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    human_decision_id: Mapped[int | None] = mapped_column(ForeignKey("human_decisions.id"))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewSkip(Base):
    """A reviewer gave a phone back without judging it: it goes to the back of *their* queue.

    Inserted once per skip, never edited; other reviewers keep seeing the phone in its age order.
    """

    __tablename__ = "review_skips"
    __table_args__ = (Index("ix_review_skips_reviewer_task", "reviewer", "task_id", "skipped_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id"))
    reviewer: Mapped[str] = mapped_column(String(64))
    skipped_at: Mapped[datetime] = mapped_column(default=utcnow)


class DecisionCorrection(Base):
    """A person takes back or corrects their own verdict: a new row linked to the decision, never an edit.

    The phone's verdict is its latest correction's, else the human decision's (and, for a ``decide``
    task, the final decision's). ``supersedes_id`` links a correction to the one it replaces, so the
    chain reads in order. Insert-only: the migration installs triggers that refuse UPDATE and DELETE.
    """

    __tablename__ = "decision_corrections"
    __table_args__ = (
        _enum_check("verdict", Verdict),
        Index("ix_decision_corrections_decision", "human_decision_id", "id"),
        Index("ix_decision_corrections_corrected_at", "corrected_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    human_decision_id: Mapped[int] = mapped_column(ForeignKey("human_decisions.id"))
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("decision_corrections.id"))
    verdict: Mapped[str] = mapped_column(String(8))
    previous_verdict: Mapped[str] = mapped_column(String(8))
    corrected_by: Mapped[str] = mapped_column(String(64))
    #: True for an undo inside the short window after the decision (no reason needed then).
    is_undo: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text)
    corrected_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who signs in, with one role."""

    __tablename__ = "users"
    __table_args__ = (_enum_check("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_failed_at: Mapped[datetime | None] = mapped_column()


class SignInSession(Base):
    """One signed-in browser: the server-side half of the session cookie, revocable and expiring.

    The browser holds only an opaque random token (signed, HttpOnly); the row keeps its sha256, so a
    copy of the database cannot be replayed as a cookie. A session ends at ``expires_at``, after the
    idle timeout since ``last_seen_at``, or when someone ends it (``ended_at``, ``ended_by``).
    """

    __tablename__ = "sign_in_sessions"
    __table_args__ = (Index("ix_sign_in_sessions_open", "ended_at", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(64))
    end_reason: Mapped[str | None] = mapped_column(String(32))
    client: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """Append-only record of every state change: who, when, what, before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_entity", "entity", "entity_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column()
    after: Mapped[dict[str, Any] | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)


class WorkerHeartbeat(Base):
    """The last sign of life of each worker process."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped
    model_status: Mapped[str] = mapped_column(Text, default="")


class DriftSettings(Base):
    """A line's drift settings (window, minimum sample, thresholds per metric), as a JSON document."""

    __tablename__ = "drift_settings"

    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="system")


class DriftReference(Base):
    """A line's choice of reference for a model: a period of its own production, or back to the model's."""

    __tablename__ = "drift_references"
    __table_args__ = (
        CheckConstraint("source IN ('model', 'production')", name="ck_source_valid"),
        Index("ix_drift_references_line_model", "line_id", "model_version_id", "accepted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    source: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime | None] = mapped_column()
    period_end: Mapped[datetime | None] = mapped_column()
    phones: Mapped[int] = mapped_column(Integer, default=0)
    accepted_by: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)


class DriftCheck(Base):
    """One drift check of a line's window: every metric's verdict, kept for the charts over time."""

    __tablename__ = "drift_checks"
    __table_args__ = (Index("ix_drift_checks_line_checked", "line_id", "checked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    first_inspection_id: Mapped[int | None] = mapped_column(Integer)
    last_inspection_id: Mapped[int | None] = mapped_column(Integer)
    window_start: Mapped[datetime | None] = mapped_column()
    window_end: Mapped[datetime | None] = mapped_column()
    phones: Mapped[int] = mapped_column(Integer, default=0)
    reference: Mapped[str] = mapped_column(Text, default="")
    results: Mapped[list[Any]] = mapped_column(default=list)


class DriftIncident(Base):
    """One cause on one line: the alarms raised together (a dim lamp moves brightness, colour, confidence...).

    Alarms of a line join its open incident of the same ``scope`` (``drift`` for inputs, outputs and
    people, ``system`` for the software's own health); people acknowledge the incident once, and
    that acknowledges its alarms. ``headline_alarm_id`` is its most telling alarm (an input first),
    which names it. It is closed (``closed_at``) when all its alarms are closed.
    """

    __tablename__ = "drift_incidents"
    __table_args__ = (
        CheckConstraint("severity IN ('warning', 'severe')", name="ck_incident_severity_valid"),
        CheckConstraint("scope IN ('drift', 'system')", name="ck_incident_scope_valid"),
        Index("ix_drift_incidents_line_open", "line_id", "closed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    scope: Mapped[str] = mapped_column(String(8), default="drift")
    severity: Mapped[str] = mapped_column(String(8))
    headline_alarm_id: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledgement_note: Mapped[str | None] = mapped_column(Text)

    line: Mapped[Line] = relationship()


class DriftAlarm(Base):
    """A drift alarm on one metric of one line: raised once, kept until someone acknowledges it.

    ``cleared_at`` is set while the metric is back to normal; an alarm is closed when it is both
    acknowledged and cleared, and only then can the same metric raise a new one.
    """

    __tablename__ = "drift_alarms"
    __table_args__ = (
        CheckConstraint("severity IN ('warning', 'severe')", name="ck_severity_valid"),
        Index("ix_drift_alarms_line_metric", "line_id", "metric"),
        Index("ix_drift_alarms_open", "acknowledged_at", "cleared_at"),
        # One open alarm per line and metric: a second one (two overlapping checks) is impossible,
        # whatever the isolation level. Closed alarms (acknowledged and cleared) may repeat.
        Index(
            "uq_drift_alarms_one_open",
            "line_id",
            "metric",
            unique=True,
            sqlite_where=text("acknowledged_at IS NULL OR cleared_at IS NULL"),
            postgresql_where=text("acknowledged_at IS NULL OR cleared_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    metric: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(8))
    statistic: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    psi: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    check_id: Mapped[int | None] = mapped_column(ForeignKey("drift_checks.id"))
    action: Mapped[str | None] = mapped_column(Text)
    cleared_at: Mapped[datetime | None] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledgement_note: Mapped[str | None] = mapped_column(Text)
    #: The incident the alarm belongs to (one cause, acknowledged once); None only before migration 0011.
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("drift_incidents.id"), index=True)
    #: The metric's reference and current value (median or share) at the latest check: "brightness down 66 %".
    reference_value: Mapped[float | None] = mapped_column(Float)
    current_value: Mapped[float | None] = mapped_column(Float)

    line: Mapped[Line] = relationship()


class PromotionRequest(Base):
    """A request that needs a manager: a move into canary or full automation, or a model switch there.

    Holds who asked, the evidence at that moment, and the manager's decision with a note.
    """

    __tablename__ = "promotion_requests"
    __table_args__ = (
        CheckConstraint("kind IN ('level', 'model_switch')", name="ck_kind_valid"),
        CheckConstraint("status IN ('pending', 'approved', 'refused', 'withdrawn', 'obsolete')", name="ck_status_valid"),
        Index("ix_promotion_requests_line_status", "line_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    kind: Mapped[str] = mapped_column(String(16))
    from_level: Mapped[str] = mapped_column(String(16))
    from_share: Mapped[float | None] = mapped_column(Float)
    to_level: Mapped[str] = mapped_column(String(16))
    to_share: Mapped[float | None] = mapped_column(Float)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column()
    decision_note: Mapped[str | None] = mapped_column(Text)

    line: Mapped[Line] = relationship()


class GateSettings(Base):
    """The plant's promotion gates (one row, ``name='plant'``), as a JSON document an admin edits."""

    __tablename__ = "gate_settings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="system")


class Label(Base):
    """A quality engineer's label of one phone: boxes with classes and the gold verdict.

    One row per engineer and phone (relabelling replaces it, audited). Two engineers may label the
    same phone blind; where they disagree, one label is marked ``adjudicated`` and becomes the truth.
    """

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("inspection_id", "labeller", name="uq_label_per_engineer"),
        _enum_check("verdict", Verdict),
        Index("ix_labels_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    labeller: Mapped[str] = mapped_column(String(64))
    boxes: Mapped[list[Any]] = mapped_column(default=list)
    verdict: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(32))
    seconds_taken: Mapped[float | None] = mapped_column(Float)
    adjudicated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingJob(Base):
    """A training run in the background: started from the Models page or the CLI, run by its own process."""

    __tablename__ = "training_jobs"
    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="ck_job_status_valid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(Text)
    init_from: Mapped[str | None] = mapped_column(Text)
    epochs: Mapped[int] = mapped_column(Integer)
    candidate_for: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A station's key to the inspection service: one line, stored as a hash, revocable.

    The key itself (``slk_<prefix>_<secret>``) is shown once when created; only the sha256 of
    the whole key is kept (keys are 256-bit random, so a plain hash suffices, unlike passwords).
    """

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("line_id", "name", name="uq_api_key_name_per_line"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(64))

    line: Mapped[Line] = relationship()


class GateAnswer(Base):
    """What the inspection service told a line's gate about one phone, phone by phone.

    One row per (line, serial): a station's retry of the same serial finds it and gets the same
    answer, never a second phone. ``action`` is what the gate did (``pass``, ``reject`` or
    ``to_person``); ``failsafe`` is the reason when the answer was the line's fail-safe. The
    row is written once when the phone arrives and completed once when it is answered; the final
    verdict, when a person gives it later, is in ``final_decisions``.
    """

    __tablename__ = "gate_answers"
    __table_args__ = (
        UniqueConstraint("line_id", "serial", name="uq_gate_answer_line_serial"),
        CheckConstraint("action IS NULL OR action IN ('pass', 'reject', 'to_person')", name="ck_gate_action_valid"),
    )

    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    serial: Mapped[str] = mapped_column(String(64))
    station: Mapped[str | None] = mapped_column(String(64))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(8))
    level: Mapped[str | None] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    failsafe: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    answered_at: Mapped[datetime | None] = mapped_column()
