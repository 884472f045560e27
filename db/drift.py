"""Drift monitoring in the database: settings, windows of recent phones, references, checks and alarms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from core.drift.incidents import AlarmFacts, Scope, headline_index, incident_title, scope_of
from core.drift.metrics import INPUT_METRICS, METRIC_BY_NAME, DriftConfig, MetricVerdict, RateCount, Sample, Severity
from core.drift.reference import box_category
from core.vocabulary import InspectionStatus
from db import audit
from db.corrections import human_verdict
from db.models import DriftAlarm, DriftCheck, DriftIncident, DriftReference, DriftSettings, HumanDecision, ImageMetrics, Inspection, Prediction, Routing, utcnow

#: Below this many phones a production period is not accepted as a reference.
MIN_REFERENCE_PHONES = 200


class DriftError(ValueError):
    """A drift request that cannot be done as asked (too few phones, unknown alarm, ...)."""


# -- settings ---------------------------------------------------------------------------------


def get_config(*, session: Session, line_id: int) -> DriftConfig:
    """The line's drift settings (the defaults until someone changes them)."""
    row = session.get(DriftSettings, line_id)
    return DriftConfig.from_dict(row.config if row else None)


def save_config(*, session: Session, line_id: int, config: DriftConfig, actor: str, note: str | None = None) -> None:
    """Store a line's drift settings (the caller checks who may) and audit before and after."""
    row = session.get(DriftSettings, line_id)
    before = row.config if row else DriftConfig().as_dict()
    after = config.as_dict()
    if row is None:
        session.add(DriftSettings(line_id=line_id, config=after, updated_by=actor))
    else:
        row.config = after
        row.updated_at = utcnow()
        row.updated_by = actor
    changed_before = {k: v for k, v in before.items() if after.get(k) != v}
    changed_after = {k: after[k] for k in changed_before}
    audit.record(session=session, actor=actor, action="drift.settings", entity="line", entity_id=line_id, before=changed_before, after=changed_after, note=note)


# -- windows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowInfo:
    """Which phones a window holds."""

    phones: int
    first_inspection_id: int | None
    last_inspection_id: int | None
    start: datetime | None
    end: datetime | None


def _rows(session: Session, *, line_id: int, model_version_id: int | None, limit: int | None, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = [Inspection.line_id == line_id, Inspection.processed_at.is_not(None)]
    if since is not None:
        conditions.append(Inspection.processed_at >= since)
    if until is not None:
        conditions.append(Inspection.processed_at <= until)
    window = select(Inspection.id, Inspection.status, Inspection.processed_at).where(*conditions).order_by(Inspection.processed_at.desc(), Inspection.id.desc())
    if limit is not None:
        window = window.limit(limit)
    w = window.subquery("w")
    metric_columns = [getattr(ImageMetrics, name) for name in INPUT_METRICS]
    prediction_join = and_(Prediction.inspection_id == w.c.id, Prediction.is_candidate.is_(False))
    if model_version_id is not None:
        prediction_join = and_(prediction_join, Prediction.model_version_id == model_version_id)
    query = (
        select(
            w.c.id,
            w.c.status,
            w.c.processed_at,
            ImageMetrics.inspection_id,
            *metric_columns,
            Prediction.max_confidence,
            func.json_array_length(Prediction.boxes),
            Prediction.verdict,
            Prediction.latency_ms,
            Routing.decider,
            Routing.audit,
            human_verdict(),
            Routing.admitted,
        )
        .select_from(w)
        .outerjoin(ImageMetrics, ImageMetrics.inspection_id == w.c.id)
        .outerjoin(Prediction, prediction_join)
        .outerjoin(Routing, Routing.inspection_id == w.c.id)
        .outerjoin(HumanDecision, HumanDecision.inspection_id == w.c.id)
    )
    return list(session.execute(query).all())


def sample_from_rows(rows: list[Any]) -> tuple[Sample, WindowInfo]:
    """Turn window rows (see :func:`_rows`) into metric values and counts."""
    n_inputs = len(INPUT_METRICS)
    seen: set[int] = set()
    inputs: list[tuple[float, ...]] = []
    confidences: list[float] = []
    boxes: list[str] = []
    verdicts: list[str] = []
    latencies: list[float] = []
    failed = disagreements = pairs = overrides = audits = inadmissible = admission_checked = 0
    for row in rows:
        if row[0] in seen:  # a second human decision on one phone: count the phone once
            continue
        seen.add(row[0])
        failed += row[1] == InspectionStatus.FAILED.value
        if row[3] is not None:
            inputs.append(row[4 : 4 + n_inputs])
        confidence, box_count, model_verdict, latency, decider, audited, human, admitted = row[4 + n_inputs :]
        if admitted is not None:
            admission_checked += 1
            inadmissible += not admitted
        if model_verdict is not None:
            confidences.append(confidence)
            boxes.append(box_category(box_count or 0))
            verdicts.append(model_verdict)
            latencies.append(latency)
            if human is not None:
                pairs += 1
                disagreements += human != model_verdict
                if decider == "model" and audited:
                    audits += 1
                    overrides += human != model_verdict
    values: dict[str, np.ndarray] = {}
    matrix = np.array(inputs, dtype=np.float64).reshape(-1, n_inputs)
    for i, name in enumerate(INPUT_METRICS):
        values[name] = matrix[:, i]
    values["max_confidence"] = np.array(confidences, dtype=np.float64)
    values["boxes_per_phone"] = np.array(boxes, dtype=str)
    values["defect_rate"] = np.array(verdicts, dtype=str)
    rates = {
        "disagreement_rate": RateCount(disagreements, pairs),
        "override_rate": RateCount(overrides, audits),
        "failure_rate": RateCount(failed, len(seen)),
        "inadmissible_rate": RateCount(inadmissible, admission_checked),
    }
    limits = {"latency_p95_ms": float(np.percentile(latencies, 95))} if latencies else {}
    ids = [row[0] for row in rows]
    times = [row[2] for row in rows]
    info = WindowInfo(len(seen), min(ids, default=None), max(ids, default=None), min(times, default=None), max(times, default=None))
    return Sample(values=values, rates=rates, limits=limits), info


def window_sample(
    *, session: Session, line_id: int, model_version_id: int | None, config: DriftConfig, now: datetime | None = None
) -> tuple[Sample, WindowInfo]:
    """The rolling window: the line's last ``window_phones`` inspected phones (within ``window_minutes`` if set)."""
    since = (now or utcnow()) - timedelta(minutes=config.window_minutes) if config.window_minutes else None
    rows = _rows(session, line_id=line_id, model_version_id=model_version_id, limit=config.window_phones, since=since, until=None)
    sample, info = sample_from_rows(rows)
    queued = session.scalar(
        select(func.count())
        .select_from(Inspection)
        .where(Inspection.line_id == line_id, Inspection.status.in_([InspectionStatus.QUEUED.value, InspectionStatus.PROCESSING.value]))
    )
    sample.limits["queue_depth"] = float(queued or 0)
    return sample, info


def period_sample(*, session: Session, line_id: int, model_version_id: int | None, start: datetime, end: datetime) -> tuple[Sample, WindowInfo]:
    """Every inspected phone of a line in a period (a candidate production reference)."""
    return sample_from_rows(_rows(session, line_id=line_id, model_version_id=model_version_id, limit=None, since=start, until=end))


def _same_model(column: Any, model_version_id: int | None) -> Any:
    return column.is_(None) if model_version_id is None else column == model_version_id


# -- references -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceChoice:
    id: int
    source: str
    period_start: datetime | None
    period_end: datetime | None
    phones: int
    accepted_by: str
    accepted_at: datetime
    note: str | None


def reference_choice(*, session: Session, line_id: int, model_version_id: int | None) -> ReferenceChoice | None:
    """The line's latest reference decision for a model (None: the model's own reference)."""
    row = session.scalar(
        select(DriftReference)
        .where(DriftReference.line_id == line_id, _same_model(DriftReference.model_version_id, model_version_id))
        .order_by(DriftReference.accepted_at.desc(), DriftReference.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    return ReferenceChoice(row.id, row.source, row.period_start, row.period_end, row.phones, row.accepted_by, row.accepted_at, row.note)


def accept_production_reference(
    *, session: Session, line_id: int, model_version_id: int | None, start: datetime, end: datetime, actor: str, note: str | None = None
) -> int:
    """Make a period of the line's own production its reference for this model (the caller checks who may)."""
    if end <= start:
        raise DriftError("the reference period must end after it starts")
    _, info = period_sample(session=session, line_id=line_id, model_version_id=model_version_id, start=start, end=end)
    if info.phones < MIN_REFERENCE_PHONES:
        raise DriftError(f"the period holds {info.phones} inspected phones; a reference needs at least {MIN_REFERENCE_PHONES}")
    row = DriftReference(line_id=line_id, model_version_id=model_version_id, source="production", period_start=start, period_end=end)
    row.phones, row.accepted_by, row.note = info.phones, actor, note
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="drift.reference",
        entity="line",
        entity_id=line_id,
        after={"source": "production", "start": start.isoformat(), "end": end.isoformat(), "phones": info.phones, "model_version_id": model_version_id},
        note=note,
    )
    return row.id


def use_model_reference(*, session: Session, line_id: int, model_version_id: int | None, actor: str, note: str | None = None) -> int:
    """Go back to the model's own training/validation reference."""
    row = DriftReference(line_id=line_id, model_version_id=model_version_id, source="model", accepted_by=actor, note=note)
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="drift.reference",
        entity="line",
        entity_id=line_id,
        after={"source": "model", "model_version_id": model_version_id},
        note=note,
    )
    return row.id


# -- checks -----------------------------------------------------------------------------------


def record_check(
    *,
    session: Session,
    line_id: int,
    model_version_id: int | None,
    info: WindowInfo,
    reference: str,
    verdicts: list[MetricVerdict],
    now: datetime | None = None,
) -> int:
    row = DriftCheck(
        line_id=line_id,
        model_version_id=model_version_id,
        checked_at=now or utcnow(),
        first_inspection_id=info.first_inspection_id,
        last_inspection_id=info.last_inspection_id,
        window_start=info.start,
        window_end=info.end,
        phones=info.phones,
        reference=reference,
        results=[v.as_dict() for v in verdicts],
    )
    session.add(row)
    session.flush()
    return row.id


def recent_verdicts(*, session: Session, line_id: int, model_version_id: int | None, checks: int) -> list[dict[str, str]]:
    """``{metric: verdict}`` of the line's last ``checks`` checks of this model, newest first."""
    if checks <= 0:
        return []
    rows = session.scalars(
        select(DriftCheck.results)
        .where(DriftCheck.line_id == line_id, _same_model(DriftCheck.model_version_id, model_version_id))
        .order_by(DriftCheck.checked_at.desc(), DriftCheck.id.desc())
        .limit(checks)
    ).all()
    return [{r["metric"]: r["verdict"] for r in results} for results in rows]


def check_history(*, session: Session, line_id: int, since: datetime | None = None, model_version_id: int | None = None, limit: int = 5000) -> list[DriftCheck]:
    """The line's checks (oldest first, of one model version if given) for the charts over time."""
    query = select(DriftCheck).where(DriftCheck.line_id == line_id)
    if model_version_id is not None:
        query = query.where(DriftCheck.model_version_id == model_version_id)
    if since is not None:
        query = query.where(DriftCheck.checked_at >= since)
    rows = session.scalars(query.order_by(DriftCheck.checked_at.desc(), DriftCheck.id.desc()).limit(limit)).all()
    for row in rows:
        session.expunge(row)
    return list(reversed(rows))


# -- alarms -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmView:
    """An alarm as plain data; ``as_status`` is what ``shadowline status --json`` prints."""

    id: int
    line_id: int
    line: str
    metric: str
    kind: str
    severity: str
    statistic: str
    score: float | None
    threshold: float | None
    psi: float | None
    reason: str
    raised_at: datetime
    last_seen_at: datetime
    action: str | None
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledgement_note: str | None
    incident_id: int | None = None
    reference_value: float | None = None
    current_value: float | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def facts(self) -> AlarmFacts:
        return AlarmFacts(self.metric, self.kind, self.severity, self.reference_value, self.current_value, self.statistic, self.score)

    @property
    def label(self) -> str:
        spec = METRIC_BY_NAME.get(self.metric)
        return spec.label if spec else self.metric

    def as_status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metric": self.metric,
            "kind": self.kind,
            "severity": self.severity,
            "statistic": self.statistic,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
            "raised_at": self.raised_at.isoformat(),
            "acknowledged": self.acknowledged,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "cleared_at": self.cleared_at.isoformat() if self.cleared_at else None,
            "action": self.action,
            "incident_id": self.incident_id,
        }


def _view(alarm: DriftAlarm) -> AlarmView:
    return AlarmView(
        alarm.id,
        alarm.line_id,
        alarm.line.name,
        alarm.metric,
        alarm.kind,
        alarm.severity,
        alarm.statistic,
        alarm.score,
        alarm.threshold,
        alarm.psi,
        alarm.reason,
        alarm.raised_at,
        alarm.last_seen_at,
        alarm.action,
        alarm.cleared_at,
        alarm.acknowledged_at,
        alarm.acknowledged_by,
        alarm.acknowledgement_note,
        alarm.incident_id,
        alarm.reference_value,
        alarm.current_value,
    )


_NOT_CLOSED = or_(DriftAlarm.acknowledged_at.is_(None), DriftAlarm.cleared_at.is_(None))


def current_alarms(*, session: Session, line_id: int | None = None, unacknowledged_only: bool = False) -> list[AlarmView]:
    """Alarms not yet closed (unacknowledged, or acknowledged while the drift goes on), severe and newest first."""
    query = select(DriftAlarm).where(DriftAlarm.acknowledged_at.is_(None) if unacknowledged_only else _NOT_CLOSED)
    if line_id is not None:
        query = query.where(DriftAlarm.line_id == line_id)
    rows = session.scalars(query.order_by(DriftAlarm.raised_at.desc(), DriftAlarm.id.desc())).all()
    views = [_view(alarm) for alarm in rows]
    return sorted(views, key=lambda v: v.severity != Severity.SEVERE.value)


def alarm_history(*, session: Session, line_id: int | None = None, since: datetime | None = None, limit: int = 500) -> list[AlarmView]:
    query = select(DriftAlarm)
    if line_id is not None:
        query = query.where(DriftAlarm.line_id == line_id)
    if since is not None:
        query = query.where(DriftAlarm.raised_at >= since)
    return [_view(a) for a in session.scalars(query.order_by(DriftAlarm.raised_at.desc(), DriftAlarm.id.desc()).limit(limit))]


def current_alarm_rows(*, session: Session, line_id: int) -> dict[str, DriftAlarm]:
    """The line's not-closed alarm of each metric (the monitor updates them in place)."""
    rows = session.scalars(select(DriftAlarm).where(DriftAlarm.line_id == line_id, _NOT_CLOSED).order_by(DriftAlarm.id)).all()
    return {row.metric: row for row in rows}


def acknowledge_alarm(*, session: Session, alarm_id: int, actor: str, note: str) -> AlarmView:
    """Acknowledge an alarm with a note (the caller checks who may); audited."""
    if not note or not note.strip():
        raise DriftError("acknowledging an alarm needs a note: what was seen and what is being done")
    alarm = session.get(DriftAlarm, alarm_id)
    if alarm is None:
        raise DriftError(f"no drift alarm with id {alarm_id}")
    if alarm.acknowledged_at is not None:
        raise DriftError(f"alarm {alarm_id} was already acknowledged by {alarm.acknowledged_by} at {alarm.acknowledged_at:%Y-%m-%d %H:%M} UTC")
    alarm.acknowledged_at = utcnow()
    alarm.acknowledged_by = actor
    alarm.acknowledgement_note = note.strip()
    audit.record(
        session=session,
        actor=actor,
        action="drift.alarm_acknowledged",
        entity="drift_alarm",
        entity_id=alarm_id,
        before={"metric": alarm.metric, "severity": alarm.severity, "line_id": alarm.line_id},
        note=note.strip(),
    )
    session.flush()
    sync_incidents(session=session, line_id=alarm.line_id)
    return _view(alarm)


# -- incidents: one cause, one thing to act on --------------------------------------------------


@dataclass(frozen=True)
class IncidentView:
    """An incident as plain data: its alarms, the headline that names it, and who acknowledged it."""

    id: int
    line_id: int
    line: str
    scope: str
    severity: str
    opened_at: datetime
    closed_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledgement_note: str | None
    alarms: tuple[AlarmView, ...]
    headline: AlarmView

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def title(self) -> str:
        """``input drift — brightness down 66 % (severe)``."""
        return incident_title(self.headline.facts)

    @property
    def related(self) -> int:
        """How many other metrics alarmed with the headline."""
        return len(self.alarms) - 1

    @property
    def ongoing(self) -> bool:
        """Whether a metric of the incident is still out of bounds (not back to normal)."""
        return any(a.cleared_at is None for a in self.alarms)

    @property
    def text(self) -> str:
        """``line-2: input drift — brightness down 66 % (severe), 8 related metrics``."""
        related = f", {self.related} related metric{'s' if self.related != 1 else ''}" if self.related else ""
        return f"{self.line}: {self.title}{related}"

    def as_status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "severity": self.severity,
            "title": self.title,
            "headline_metric": self.headline.metric,
            "alarms": [a.id for a in self.alarms],
            "opened_at": self.opened_at.isoformat(),
            "acknowledged": self.acknowledged,
            "acknowledged_by": self.acknowledged_by,
            "ongoing": self.ongoing,
        }


_SEVERITY_RANK = {Severity.WARNING.value: 0, Severity.SEVERE.value: 1}


def _incident_alarms(session: Session, incident_id: int) -> list[DriftAlarm]:
    return list(session.scalars(select(DriftAlarm).where(DriftAlarm.incident_id == incident_id).order_by(DriftAlarm.id)))


def _set_headline(incident: DriftIncident, alarms: list[DriftAlarm]) -> None:
    facts = [AlarmFacts(a.metric, a.kind, a.severity) for a in alarms]
    incident.headline_alarm_id = alarms[headline_index(facts)].id
    incident.severity = max((a.severity for a in alarms), key=lambda s: _SEVERITY_RANK[s])


def file_alarm(*, session: Session, alarm: DriftAlarm, now: datetime | None = None) -> DriftIncident:
    """Put a raised, re-raised or escalated alarm into its line's open incident of its scope (a new one if none).

    An alarm that makes the incident worse (a severe one joining a warning) must be seen again: the
    incident's acknowledgement is cleared. One that joins an acknowledged incident of its severity
    is covered by that acknowledgement (one cause, acknowledged once): it is acknowledged with it.
    """
    now = now or utcnow()
    session.flush()
    scope = scope_of(alarm.kind).value
    incident = session.get(DriftIncident, alarm.incident_id) if alarm.incident_id is not None else None
    if incident is None or incident.closed_at is not None:
        incident = session.scalar(
            select(DriftIncident)
            .where(DriftIncident.line_id == alarm.line_id, DriftIncident.scope == scope, DriftIncident.closed_at.is_(None))
            .order_by(DriftIncident.id.desc())
            .limit(1)
        )
    if incident is None:
        incident = DriftIncident(line_id=alarm.line_id, scope=scope, severity=alarm.severity, opened_at=now)
        session.add(incident)
        session.flush()
    alarm.incident_id = incident.id
    session.flush()
    worse = _SEVERITY_RANK[alarm.severity] > _SEVERITY_RANK[incident.severity]
    if worse:
        incident.acknowledged_at = incident.acknowledged_by = incident.acknowledgement_note = None
    elif incident.acknowledged_at is not None and alarm.acknowledged_at is None:
        alarm.acknowledged_at = now
        alarm.acknowledged_by = incident.acknowledged_by
        alarm.acknowledgement_note = f"covered by incident #{incident.id}: {incident.acknowledgement_note}"
    _set_headline(incident, _incident_alarms(session, incident.id))
    return incident


def sync_incidents(*, session: Session, line_id: int, now: datetime | None = None) -> None:
    """Bring the line's open incidents up to date with their alarms: acknowledged when all are, closed when all are closed."""
    now = now or utcnow()
    session.flush()
    for incident in session.scalars(select(DriftIncident).where(DriftIncident.line_id == line_id, DriftIncident.closed_at.is_(None))):
        alarms = _incident_alarms(session, incident.id)
        if not alarms:
            continue
        if incident.acknowledged_at is None and all(a.acknowledged_at is not None for a in alarms):
            last = max(alarms, key=lambda a: a.acknowledged_at or now)
            incident.acknowledged_at, incident.acknowledged_by = last.acknowledged_at, last.acknowledged_by
            incident.acknowledgement_note = last.acknowledgement_note
        if all(a.acknowledged_at is not None and a.cleared_at is not None for a in alarms):
            incident.closed_at = now
        _set_headline(incident, alarms)


def _incident_view(incident: DriftIncident, alarms: list[DriftAlarm]) -> IncidentView:
    views = tuple(_view(a) for a in alarms)
    headline = next((v for v in views if v.id == incident.headline_alarm_id), views[headline_index([v.facts for v in views])])
    return IncidentView(
        incident.id,
        incident.line_id,
        incident.line.name,
        incident.scope,
        incident.severity,
        incident.opened_at,
        incident.closed_at,
        incident.acknowledged_at,
        incident.acknowledged_by,
        incident.acknowledgement_note,
        views,
        headline,
    )


def current_incidents(
    *, session: Session, line_id: int | None = None, unacknowledged_only: bool = False, scopes: tuple[Scope, ...] | None = None
) -> list[IncidentView]:
    """Incidents not yet closed, severe and unacknowledged first, then newest."""
    query = select(DriftIncident).where(DriftIncident.closed_at.is_(None))
    if line_id is not None:
        query = query.where(DriftIncident.line_id == line_id)
    if unacknowledged_only:
        query = query.where(DriftIncident.acknowledged_at.is_(None))
    if scopes is not None:
        query = query.where(DriftIncident.scope.in_([s.value for s in scopes]))
    views = []
    for incident in session.scalars(query.order_by(DriftIncident.opened_at.desc(), DriftIncident.id.desc())):
        alarms = _incident_alarms(session, incident.id)
        if alarms:
            views.append(_incident_view(incident, alarms))
    return sorted(views, key=lambda v: (v.severity != Severity.SEVERE.value, v.acknowledged))


def severe_drift(*, session: Session, line_id: int) -> IncidentView | None:
    """The line's open severe drift incident whose drift goes on (acknowledged or not), or None."""
    for incident in current_incidents(session=session, line_id=line_id, scopes=(Scope.DRIFT,)):
        if incident.severity == Severity.SEVERE.value and incident.ongoing:
            return incident
    return None


def acknowledge_incident(*, session: Session, incident_id: int, actor: str, note: str) -> IncidentView:
    """Acknowledge an incident once, with a note: its alarms are acknowledged with it (the caller checks who may); audited."""
    if not note or not note.strip():
        raise DriftError("acknowledging an incident needs a note: what was seen and what is being done")
    incident = session.get(DriftIncident, incident_id)
    if incident is None:
        raise DriftError(f"no drift incident with id {incident_id}")
    if incident.acknowledged_at is not None:
        raise DriftError(f"incident {incident_id} was already acknowledged by {incident.acknowledged_by} at {incident.acknowledged_at:%Y-%m-%d %H:%M} UTC")
    now, note = utcnow(), note.strip()
    alarms = _incident_alarms(session, incident.id)
    newly = [a for a in alarms if a.acknowledged_at is None]
    for alarm in newly:
        alarm.acknowledged_at, alarm.acknowledged_by, alarm.acknowledgement_note = now, actor, note
    incident.acknowledged_at, incident.acknowledged_by, incident.acknowledgement_note = now, actor, note
    view = _incident_view(incident, alarms)
    audit.record(
        session=session,
        actor=actor,
        action="drift.incident_acknowledged",
        entity="drift_incident",
        entity_id=incident.id,
        before={"line": view.line, "incident": view.title, "alarms": [a.id for a in newly], "metrics": [a.metric for a in newly]},
        note=note,
    )
    sync_incidents(session=session, line_id=incident.line_id, now=now)
    return view


def checked_models(*, session: Session, line_id: int) -> dict[int, str]:
    """``{model id: version}`` of the models a line was checked with."""
    from db.models import ModelVersion

    rows = session.execute(
        select(ModelVersion.id, ModelVersion.version).where(ModelVersion.id.in_(select(DriftCheck.model_version_id).where(DriftCheck.line_id == line_id)))
    )
    return {model_id: version for model_id, version in rows}


# -- for the Drift page -----------------------------------------------------------------------


def metric_series(*, session: Session, line_id: int, metric: str, since: datetime | None = None, limit: int = 5000) -> list[tuple[datetime, float]]:
    """``(processed_at, value)`` of one per-phone numeric metric, the latest ``limit`` phones of the line, oldest first."""
    if metric in INPUT_METRICS:
        column: Any = getattr(ImageMetrics, metric)
        query = select(Inspection.processed_at, column).join(ImageMetrics, ImageMetrics.inspection_id == Inspection.id)
    elif metric == "max_confidence":
        query = select(Inspection.processed_at, Prediction.max_confidence).join(
            Prediction, and_(Prediction.inspection_id == Inspection.id, Prediction.is_candidate.is_(False))
        )
    else:
        raise DriftError(f"{metric} is not a per-phone numeric metric")
    query = query.where(Inspection.line_id == line_id, Inspection.processed_at.is_not(None))
    if since is not None:
        query = query.where(Inspection.processed_at >= since)
    rows = session.execute(query.order_by(Inspection.processed_at.desc()).limit(limit)).all()
    return [(at, float(value)) for at, value in reversed(rows)]


def recent_images(*, session: Session, line_id: int, limit: int = 6, start: datetime | None = None, end: datetime | None = None) -> list[tuple[str, str]]:
    """``(serial, image_path)`` of the line's latest inspected phones (within a period if given)."""
    query = select(Inspection.serial, Inspection.image_path).where(
        Inspection.line_id == line_id, Inspection.processed_at.is_not(None), Inspection.status == InspectionStatus.DONE.value
    )
    if start is not None:
        query = query.where(Inspection.processed_at >= start)
    if end is not None:
        query = query.where(Inspection.processed_at <= end)
    return [(serial, path) for serial, path in session.execute(query.order_by(Inspection.processed_at.desc()).limit(limit))]


def phones_since_last_check(*, session: Session, line_id: int) -> int:
    """Phones of the line inspected since its last drift check (by inspection id), counted in the database.

    Counted here rather than in a worker's memory, so that a worker restarted more often than a
    check falls due still checks, and several workers count the same phones once.
    """
    last = session.scalar(select(func.max(DriftCheck.last_inspection_id)).where(DriftCheck.line_id == line_id))
    query = select(func.count()).select_from(Inspection).where(Inspection.line_id == line_id, Inspection.processed_at.is_not(None))
    if last is not None:
        query = query.where(Inspection.id > last)
    return int(session.scalar(query) or 0)


def recent_admissions(*, session: Session, line_id: int, limit: int) -> list[tuple[bool, str | None]]:
    """The admission check's answers on the line's latest inspected phones, newest first: (admitted, reason)."""
    rows = session.execute(
        select(Routing.admitted, Routing.admission_reason)
        .join(Inspection, Inspection.id == Routing.inspection_id)
        .where(Inspection.line_id == line_id, Routing.admitted.is_not(None))
        .order_by(Inspection.id.desc())
        .limit(limit)
    ).all()
    return [(bool(admitted), reason) for admitted, reason in rows]


def decisions_by_serial(*, session: Session, line_id: int) -> list[tuple[str, str | None, bool | None]]:
    """Every inspected phone of a line: its serial, who made its final decision (None: nobody yet) and the admission answer."""
    from db.models import FinalDecision

    rows = session.execute(
        select(Inspection.serial, FinalDecision.decided_by, Routing.admitted)
        .join(Routing, Routing.inspection_id == Inspection.id)
        .outerjoin(FinalDecision, FinalDecision.inspection_id == Inspection.id)
        .where(Inspection.line_id == line_id)
    ).all()
    return [(serial, decided_by, admitted) for serial, decided_by, admitted in rows]
