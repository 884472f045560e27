"""The drift monitor on a real database: windows, alarms raised once, acknowledged, cleared; step-down; references."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core.auth import CurrentUser, PermissionDeniedError
from core.drift import actions
from core.drift.metrics import DriftConfig
from core.drift.monitor import DriftMonitor
from core.vocabulary import AutomationLevel, Role
from db import audit
from db import drift as drift_db
from db.lines import get_line, set_level
from db.models import utcnow
from db.status import line_statuses
from tests.drift_data import add_phones

pytestmark = pytest.mark.both_backends

ENGINEER = CurrentUser("erin", Role.ENGINEER)
SUPERVISOR = CurrentUser("sam", Role.SUPERVISOR)


def _line(database):
    with database.read() as session:
        return get_line(session=session, name="line-1")


def _set_level(database, level: AutomationLevel) -> None:
    with database.write() as session:
        set_level(session=session, line_id=_line(database).id, level=level, actor="test")


def test_window_holds_the_last_phones_with_their_human_and_failure_counts(database, drift_reference) -> None:
    add_phones(database, drift_reference, 100, seed=1, at=utcnow() - timedelta(hours=2))
    add_phones(database, drift_reference, 300, seed=2, human_disagrees=0.1)
    line = _line(database)
    with database.read() as session:
        sample, info = drift_db.window_sample(session=session, line_id=line.id, model_version_id=line.active_model_id, config=DriftConfig(window_phones=250))
        _, timed_info = drift_db.window_sample(
            session=session, line_id=line.id, model_version_id=line.active_model_id, config=DriftConfig(window_phones=1000, window_minutes=30)
        )
    assert info.phones == 250 and sample.values["brightness"].size == 250 and sample.values["max_confidence"].size == 250
    assert sample.rates["disagreement_rate"].trials == 250 and 10 <= sample.rates["disagreement_rate"].events <= 45
    assert sample.rates["failure_rate"].events == 0 and sample.limits["latency_p95_ms"] == 15.0
    assert timed_info.phones == 300  # the phones of two hours ago are outside a 30-minute window


def test_a_sustained_severe_drift_raises_one_alarm_and_steps_the_line_down(database, drift_reference) -> None:
    _set_level(database, AutomationLevel.CANARY)
    monitor = DriftMonitor(database)
    line_id = _line(database).id
    add_phones(database, drift_reference, 300, seed=3)
    normal = monitor.check(line_id)
    assert [v.metric for v in normal.report.verdicts if v.verdict == "drift"] == [] and not normal.raised

    add_phones(database, drift_reference, 500, seed=4, darken=0.4)
    first = monitor.check(line_id)
    assert first.report.verdict("brightness").verdict == "drift" and first.raised == []  # one drifting check is not yet an alarm
    second = monitor.check(line_id)
    assert "brightness" in second.raised and second.stepped_down == ("canary", "shadow")
    assert _line(database).level is AutomationLevel.SHADOW
    third = monitor.check(line_id)
    assert third.raised == [] and third.stepped_down is None

    with database.read() as session:
        alarms = drift_db.current_alarms(session=session, line_id=line_id)
        status = line_statuses(session=session)[0].as_dict()
        drift_entries, _ = audit.search(session=session, action_prefix="drift.")
        level_entries, _ = audit.search(session=session, action_prefix="line.level")
    brightness = [a for a in alarms if a.metric == "brightness"]
    assert len(brightness) == 1 and brightness[0].severity == "severe" and "canary to shadow" in (brightness[0].action or "")
    listed = next(a for a in status["alarms"] if a["metric"] == "brightness")
    assert {"metric", "severity", "raised_at", "acknowledged"} <= set(listed) and listed["acknowledged"] is False
    json.dumps(status)  # status --json must serialise
    assert "drift.alarm_raised" in drift_entries["action"].tolist()
    step_down = level_entries[level_entries["actor"] == audit.SYSTEM_ACTOR]
    assert len(step_down) == 1 and "Severe drift" in step_down["note"].iloc[0] and "normal approval" in step_down["note"].iloc[0]


def test_acknowledged_alarm_closes_once_cleared_and_a_new_drift_raises_a_new_one(database, drift_reference) -> None:
    monitor = DriftMonitor(database)
    line_id = _line(database).id
    add_phones(database, drift_reference, 500, seed=5, darken=0.4)
    monitor.check(line_id)
    monitor.check(line_id)
    with database.read() as session:
        alarm = next(a for a in drift_db.current_alarms(session=session, line_id=line_id) if a.metric == "brightness")
    with pytest.raises(PermissionDeniedError):
        actions.acknowledge(database, SUPERVISOR, alarm_id=alarm.id, note="not mine to acknowledge")
    with pytest.raises(drift_db.DriftError, match="needs a note"):
        actions.acknowledge(database, ENGINEER, alarm_id=alarm.id, note="  ")
    acknowledged = actions.acknowledge(database, ENGINEER, alarm_id=alarm.id, note="lamp 3 failed, replaced")
    assert acknowledged.acknowledged_by == "erin" and acknowledged.acknowledgement_note == "lamp 3 failed, replaced"
    with pytest.raises(drift_db.DriftError, match="already acknowledged"):
        actions.acknowledge(database, ENGINEER, alarm_id=alarm.id, note="again")
    with database.read() as session:
        assert alarm.id in [a.id for a in drift_db.current_alarms(session=session, line_id=line_id)]  # acknowledged, still drifting
        assert alarm.id not in [a.id for a in drift_db.current_alarms(session=session, line_id=line_id, unacknowledged_only=True)]

    add_phones(database, drift_reference, 500, seed=6)
    cleared = monitor.check(line_id)
    assert "brightness" in cleared.cleared
    with database.read() as session:
        assert alarm.id not in [a.id for a in drift_db.current_alarms(session=session, line_id=line_id)]

    add_phones(database, drift_reference, 500, seed=7, darken=0.4)
    monitor.check(line_id)
    again = monitor.check(line_id)
    assert "brightness" in again.raised
    with database.read() as session:
        history = [a for a in drift_db.alarm_history(session=session, line_id=line_id) if a.metric == "brightness"]
    assert len(history) == 2


def test_escalation_to_severe_needs_a_new_acknowledgement(database, drift_reference) -> None:
    _set_level(database, AutomationLevel.FULL)
    monitor = DriftMonitor(database)
    line = _line(database)
    lenient = DriftConfig(thresholds={name: {"psi_severe": 1000.0} for name in ("brightness", "contrast", "mean_b", "mean_g", "mean_r", "sharpness")})
    actions.update_settings(database, ENGINEER, line_name=line.name, config=lenient, note="test: warnings only")
    add_phones(database, drift_reference, 500, seed=8, darken=0.4)
    monitor.check(line.id)
    warned = monitor.check(line.id)
    assert "brightness" in warned.raised and warned.stepped_down is None and _line(database).level is AutomationLevel.FULL
    with database.read() as session:
        alarm = next(a for a in drift_db.current_alarms(session=session, line_id=line.id) if a.metric == "brightness")
    assert alarm.severity == "warning"
    actions.acknowledge(database, ENGINEER, alarm_id=alarm.id, note="watching it")

    actions.update_settings(database, ENGINEER, line_name=line.name, config=DriftConfig(), note="test: back to defaults")
    escalated = monitor.check(line.id)
    assert "brightness" in escalated.escalated and escalated.stepped_down == ("full", "shadow")
    with database.read() as session:
        alarm = next(a for a in drift_db.current_alarms(session=session, line_id=line.id) if a.metric == "brightness")
    assert alarm.severity == "severe" and not alarm.acknowledged


def test_too_few_phones_is_inconclusive_and_changes_nothing(database, drift_reference) -> None:
    _set_level(database, AutomationLevel.CANARY)
    monitor = DriftMonitor(database)
    line_id = _line(database).id
    add_phones(database, drift_reference, 60, seed=9, darken=0.2)
    for _ in range(3):
        outcome = monitor.check(line_id)
        assert outcome.report.verdict("brightness").verdict == "inconclusive" and not outcome.raised
    assert _line(database).level is AutomationLevel.CANARY


def test_system_alarms_do_not_step_the_line_down(database, drift_reference) -> None:
    _set_level(database, AutomationLevel.CANARY)
    line = _line(database)
    actions.update_settings(database, ENGINEER, line_name=line.name, config=DriftConfig(thresholds={"failure_rate": {"margin_severe": 0.05}}))
    add_phones(database, drift_reference, 300, seed=10, status="failed")
    monitor = DriftMonitor(database)
    monitor.check(line.id)
    outcome = monitor.check(line.id)
    assert "failure_rate" in outcome.raised and outcome.stepped_down is None
    assert _line(database).level is AutomationLevel.CANARY


def test_a_production_period_can_become_the_reference(database, drift_reference) -> None:
    line = _line(database)
    start = utcnow() - timedelta(hours=3)
    add_phones(database, drift_reference, 50, seed=11, darken=0.5, at=start + timedelta(minutes=1))
    with pytest.raises(drift_db.DriftError, match="at least 200"):
        actions.accept_production_reference(database, ENGINEER, line_name=line.name, start=start, end=start + timedelta(hours=1))
    add_phones(database, drift_reference, 300, seed=12, darken=0.5, at=start + timedelta(minutes=10))
    with pytest.raises(PermissionDeniedError):
        actions.accept_production_reference(database, SUPERVISOR, line_name=line.name, start=start, end=start + timedelta(hours=1))
    actions.accept_production_reference(database, ENGINEER, line_name=line.name, start=start, end=start + timedelta(hours=1), note="the new lamps")
    add_phones(database, drift_reference, 400, seed=13, darken=0.5)
    report = DriftMonitor(database).evaluate(line.name)
    assert report.reference_source == "production" and "350 phones" in report.reference and "erin" in report.reference
    assert report.verdict("brightness").verdict == "ok"  # dim is the new normal
    actions.use_model_reference(database, ENGINEER, line_name=line.name)
    back = DriftMonitor(database).evaluate(line.name)
    assert back.reference_source == "model" and back.verdict("brightness").verdict == "drift"
    with database.read() as session:
        _, total = audit.search(session=session, action_prefix="drift.reference")
    assert total == 2
