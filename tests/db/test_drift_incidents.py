"""Incidents: the alarms of one cause grouped on a line, named by the most telling input, acknowledged once."""

from __future__ import annotations

import re

import pytest

from core.auth import CurrentUser, PermissionDeniedError
from core.drift import actions
from core.drift.incidents import AlarmFacts, headline_index, incident_title
from core.drift.metrics import DriftConfig
from core.drift.monitor import DriftMonitor
from core.vocabulary import Role
from db import audit
from db import drift as drift_db
from db.lines import get_line
from tests.drift_data import add_phones

ENGINEER = CurrentUser("erin", Role.ENGINEER)


def _line_id(database) -> int:
    with database.read() as session:
        return get_line(session=session, name="line-1").id


def _dim_lamp(database, drift_reference, monitor) -> int:
    line_id = _line_id(database)
    add_phones(database, drift_reference, 300, seed=41)
    monitor.check(line_id)
    add_phones(database, drift_reference, 500, seed=42, darken=0.4)
    monitor.check(line_id)
    monitor.check(line_id)
    return line_id


@pytest.mark.parametrize(
    ("alarms", "expected"),
    [
        # a dim lamp: the colour channels move with brightness, the model follows; brightness names it
        ([("mean_b", "input", "severe"), ("max_confidence", "output", "severe"), ("brightness", "input", "severe")], 2),
        # an input warning still names it before a severe output (the cause comes first)
        ([("boxes_per_phone", "output", "severe"), ("sharpness", "input", "warning")], 1),
        # among inputs, severe before warning
        ([("brightness", "input", "warning"), ("sharpness", "input", "severe")], 1),
        # people disagree before the model's own outputs
        ([("defect_rate", "output", "severe"), ("disagreement_rate", "human", "severe")], 1),
    ],
)
def test_the_headline_is_the_most_telling_alarm(alarms, expected) -> None:
    assert headline_index([AlarmFacts(*a) for a in alarms]) == expected


def test_titles_in_the_floors_words() -> None:
    assert incident_title(AlarmFacts("brightness", "input", "severe", 120.0, 40.8)) == "input drift — brightness down 66 % (severe)"
    # A severe alarm with the median barely moved is about the spread of values, not "down 0.8 %" (a fresh-eyes supervisor's puzzle).
    assert incident_title(AlarmFacts("brightness", "input", "severe", 120.0, 119.04)) == (
        "input drift — brightness down only 0.8 % in the median, its spread changed (severe)"
    )
    unmoved = incident_title(AlarmFacts("sharpness", "input", "warning", 100.0, 100.2))
    assert unmoved == "input drift — sharpness unchanged in the median (100), its spread changed (warning)"
    assert "10 % (normally 0.7 %)" in incident_title(AlarmFacts("disagreement_rate", "human", "severe", 0.007, 0.102))
    assert "5 phones in a row" in incident_title(AlarmFacts("inadmissible_rate", "input", "severe", None, None, "run", 5.0))


def test_a_dim_lamp_is_one_incident_named_by_brightness_and_acknowledged_once(database, drift_reference) -> None:
    monitor = DriftMonitor(database)
    line_id = _dim_lamp(database, drift_reference, monitor)
    with database.read() as session:
        alarms = drift_db.current_alarms(session=session, line_id=line_id)
        (incident,) = drift_db.current_incidents(session=session, line_id=line_id)
    assert len(alarms) >= 4 and {a.incident_id for a in alarms} == {incident.id}
    assert incident.headline.metric == "brightness" and incident.related == len(alarms) - 1
    drop = re.match(r"line-1: input drift — brightness down (\d+) % \(severe\)", incident.text)
    assert drop is not None and 40 <= int(drop.group(1)) <= 80, incident.text  # the dim lamp's generator halves the light or so
    assert incident.text.endswith(f"(severe), {len(alarms) - 1} related metrics")

    with pytest.raises(PermissionDeniedError):
        actions.acknowledge_incident(database, CurrentUser("sam", Role.SUPERVISOR), incident_id=incident.id, note="not mine")
    with pytest.raises(drift_db.DriftError, match="needs a note"):
        actions.acknowledge_incident(database, ENGINEER, incident_id=incident.id, note=" ")
    actions.acknowledge_incident(database, ENGINEER, incident_id=incident.id, note="lamp 3 replaced")
    with database.read() as session:
        assert drift_db.current_alarms(session=session, line_id=line_id, unacknowledged_only=True) == []
        assert drift_db.current_incidents(session=session, line_id=line_id, unacknowledged_only=True) == []
        assert drift_db.severe_drift(session=session, line_id=line_id) is not None, "acknowledged, but the line is still in severe drift"
        entries, total = audit.search(session=session, action_prefix="drift.incident_acknowledged")
    assert total == 1 and entries.iloc[0]["actor"] == "erin"
    with pytest.raises(drift_db.DriftError, match="already acknowledged"):
        actions.acknowledge_incident(database, ENGINEER, incident_id=incident.id, note="again")

    # The same cause goes on: people now disagree with the model too. It joins the acknowledged incident, covered.
    add_phones(database, drift_reference, 500, seed=43, darken=0.4, human_disagrees=0.3)
    monitor.check(line_id)
    later = monitor.check(line_id)
    assert "disagreement_rate" in later.raised
    with database.read() as session:
        (incident_now,) = drift_db.current_incidents(session=session, line_id=line_id)
        joined = next(a for a in incident_now.alarms if a.metric == "disagreement_rate")
    assert incident_now.id == incident.id and incident_now.acknowledged and joined.acknowledged
    assert joined.acknowledgement_note == f"covered by incident #{incident.id}: lamp 3 replaced"

    # The lamp is fixed: every alarm clears, and the acknowledged incident closes with them.
    add_phones(database, drift_reference, 500, seed=44)
    monitor.check(line_id)
    with database.read() as session:
        assert drift_db.current_incidents(session=session, line_id=line_id) == []
        assert drift_db.severe_drift(session=session, line_id=line_id) is None


def test_system_health_is_an_incident_of_its_own_and_a_worse_alarm_needs_a_new_acknowledgement(database, drift_reference) -> None:
    monitor = DriftMonitor(database)
    line_id = _line_id(database)
    slow = DriftConfig(thresholds={"latency_p95_ms": {"limit_warning": 10.0, "limit_severe": 1000.0}})
    actions.update_settings(database, ENGINEER, line_name="line-1", config=slow, note="test: a tight latency limit")
    add_phones(database, drift_reference, 300, seed=45)
    monitor.check(line_id)
    monitor.check(line_id)
    with database.read() as session:
        (system,) = drift_db.current_incidents(session=session, line_id=line_id)
    assert system.scope == "system" and system.headline.metric == "latency_p95_ms" and system.severity == "warning"
    actions.acknowledge_incident(database, ENGINEER, incident_id=system.id, note="the worker's machine is busy")

    add_phones(database, drift_reference, 500, seed=46, darken=0.4)
    monitor.check(line_id)
    monitor.check(line_id)
    with database.read() as session:
        incidents = {i.scope: i for i in drift_db.current_incidents(session=session, line_id=line_id)}
        only_drift = drift_db.current_incidents(session=session, line_id=line_id, scopes=(drift_db.Scope.DRIFT,))
    assert set(incidents) == {"drift", "system"} and incidents["system"].acknowledged and not incidents["drift"].acknowledged
    assert [i.id for i in only_drift] == [incidents["drift"].id]

    # A severe latency alarm makes the acknowledged warning incident worse: it must be seen again.
    actions.update_settings(
        database, ENGINEER, line_name="line-1", config=DriftConfig(thresholds={"latency_p95_ms": {"limit_warning": 5.0, "limit_severe": 10.0}})
    )
    monitor.check(line_id)
    with database.read() as session:
        system_now = next(i for i in drift_db.current_incidents(session=session, line_id=line_id) if i.scope == "system")
    assert system_now.id == system.id and system_now.severity == "severe" and not system_now.acknowledged
