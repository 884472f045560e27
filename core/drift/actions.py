"""What people do about drift: acknowledge alarms, choose the reference, change settings.

Pages and the CLI call these functions; each checks the user's permission on the server side
before it writes, and every change lands in the audit log.
"""

from __future__ import annotations

from datetime import datetime

from core import validation
from core.auth import Action, CurrentUser, require
from core.drift.metrics import DriftConfig
from db import drift as drift_db
from db.engine import Database
from db.lines import get_line


def acknowledge(database: Database, user: CurrentUser, *, alarm_id: int, note: str) -> drift_db.AlarmView:
    """Acknowledge an alarm with a note saying what was seen and done."""
    require(user, Action.ACKNOWLEDGE_ALARM)
    with database.write() as session:
        return drift_db.acknowledge_alarm(session=session, alarm_id=alarm_id, actor=user.name, note=note)


def acknowledge_incident(database: Database, user: CurrentUser, *, incident_id: int, note: str) -> drift_db.IncidentView:
    """Acknowledge an incident once: every alarm of its cause is acknowledged with it (one audit entry)."""
    require(user, Action.ACKNOWLEDGE_ALARM)
    with database.write() as session:
        return drift_db.acknowledge_incident(session=session, incident_id=incident_id, actor=user.name, note=note)


def accept_production_reference(database: Database, user: CurrentUser, *, line_name: str, start: datetime, end: datetime, note: str | None = None) -> int:
    """Make a period of the line's own production the reference for its active model."""
    require(user, Action.SET_DRIFT_REFERENCE)
    with database.write() as session:
        line = get_line(session=session, name=line_name)
        return drift_db.accept_production_reference(
            session=session, line_id=line.id, model_version_id=line.active_model_id, start=start, end=end, actor=user.name, note=note
        )


def use_model_reference(database: Database, user: CurrentUser, *, line_name: str, note: str | None = None) -> int:
    """Go back to the active model's training/validation reference."""
    require(user, Action.SET_DRIFT_REFERENCE)
    with database.write() as session:
        line = get_line(session=session, name=line_name)
        return drift_db.use_model_reference(session=session, line_id=line.id, model_version_id=line.active_model_id, actor=user.name, note=note)


def update_settings(database: Database, user: CurrentUser, *, line_name: str, config: DriftConfig, note: str | None = None) -> None:
    """Store a line's drift settings (window, minimum sample, thresholds per metric)."""
    require(user, Action.EDIT_DRIFT_SETTINGS)
    with database.write() as session:
        line = get_line(session=session, name=line_name)
        drift_db.save_config(session=session, line_id=line.id, config=config, actor=user.name, note=note)


def parse_setting(config: DriftConfig, assignment: str) -> DriftConfig:
    """Apply one ``key=value`` (``window_phones=300``) or ``metric.threshold=value`` (``brightness.psi_severe=0.3``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key or not raw:
        raise ValueError(f"expected KEY=VALUE or METRIC.THRESHOLD=VALUE, got {assignment!r}")
    key = key.strip()
    if "." in key:
        metric, threshold = key.split(".", 1)
        thresholds = {m: dict(v) for m, v in config.thresholds.items()}
        thresholds.setdefault(metric, {})[threshold] = float(raw)  # ranges checked by DriftConfig
        return DriftConfig.from_dict({**config.as_dict(), "thresholds": thresholds})
    data = config.as_dict()
    if key not in data or key == "thresholds":
        raise ValueError(f"unknown drift setting {key!r}; settings: {', '.join(k for k in data if k != 'thresholds')}, or METRIC.THRESHOLD")
    current = data[key]
    value: object
    if raw.strip().lower() in ("none", "off", "") and key == "window_minutes":
        value = None
    elif isinstance(current, bool):
        value = validation.boolean(key, raw)
    elif isinstance(current, int):
        value = validation.integer(key, raw)
    elif isinstance(current, float) or current is None:
        value = float(raw)
    else:
        value = raw.strip()
    return DriftConfig.from_dict({**data, key: value})
