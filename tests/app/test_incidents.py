"""Alarms people can act on: one banner per cause, system health for those who can act, the Drift page on the line that needs it."""

from __future__ import annotations

import re

from core.auth import CurrentUser
from core.drift.metrics import DriftConfig
from core.drift.monitor import DriftMonitor
from core.vocabulary import AutomationLevel, Role
from db import audit
from db import drift as drift_db
from db.lines import add_line, get_line, set_level
from tests.drift_data import add_phones

PAGE = "../pages/drift.py"


def _signed_in(app_for, role: Role):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(f"a-{role.value}", role)
    return at.run()


def _dim_second_line(database, drift_reference) -> int:
    """line-2, in canary, whose lamp dims: a severe incident of several alarms, the line stepped down to shadow."""
    with database.write() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
        line_id = add_line(session=session, name="line-2", actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
        set_level(session=session, line_id=line_id, level=AutomationLevel.CANARY, actor="test")
    monitor = DriftMonitor(database)
    add_phones(database, drift_reference, 300, seed=71, line_name="line-2")
    monitor.check(line_id)
    add_phones(database, drift_reference, 500, seed=72, darken=0.4, line_name="line-2")
    monitor.check(line_id)
    monitor.check(line_id)
    return line_id


def _banners(at) -> list[str]:
    return [e.value for e in [*at.error, *at.warning] if "Drift alarm" in e.value or "System health" in e.value]


def test_one_banner_per_cause_named_by_its_input_and_acknowledged_once(database, app_for, drift_reference) -> None:
    line_id = _dim_second_line(database, drift_reference)
    with database.read() as session:
        alarms = drift_db.current_alarms(session=session, line_id=line_id)
    at = _signed_in(app_for, Role.SUPERVISOR)
    (banner,) = _banners(at)
    assert len(alarms) >= 3, "the dim lamp raised several alarms"
    assert re.search(rf"\*\*line-2\*\*: input drift — brightness down \d+ % \(severe\), {len(alarms) - 1} related metrics\.", banner), banner

    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page(PAGE).run()
    assert at.selectbox(key="drift.line").value == "line-2", "the page opens on the line whose alarms wait"
    assert sorted(at.multiselect(key="drift.ack_ids.line-2").value) == sorted(a.id for a in alarms), "the whole incident is chosen"
    at.text_input(key="drift.ack_note").input("lamp 3 replaced at 10:40")
    at.button(key="drift.ack").click().run()
    assert not at.exception and not _banners(at)
    with database.read() as session:
        (incident,) = drift_db.current_incidents(session=session, line_id=line_id)
        entries, _ = audit.search(session=session, action_prefix="drift.")
    assert incident.acknowledged_by == "a-engineer" and all(a.acknowledged for a in incident.alarms)
    assert list(entries["action"]).count("drift.incident_acknowledged") == 1 and "drift.alarm_acknowledged" not in set(entries["action"])


def test_the_alarm_selection_survives_switching_lines_and_a_failed_submit(database, app_for, drift_reference) -> None:
    line_id = _dim_second_line(database, drift_reference)
    with database.read() as session:
        first, second, *_ = sorted(a.id for a in drift_db.current_alarms(session=session, line_id=line_id))
    at = _signed_in(app_for, Role.MANAGER)
    at.switch_page(PAGE).run()
    at.multiselect(key="drift.ack_ids.line-2").set_value([first, second]).run()
    at.selectbox(key="drift.line").set_value("line-1").run()
    at.selectbox(key="drift.line").set_value("line-2").run()
    assert at.multiselect(key="drift.ack_ids.line-2").value == [first, second]
    at.button(key="drift.ack").click().run()
    assert any("needs a note" in e.value for e in at.error)
    assert at.multiselect(key="drift.ack_ids.line-2").value == [first, second]
    with database.read() as session:
        assert not any(a.acknowledged for a in drift_db.current_alarms(session=session, line_id=line_id))


def test_system_health_is_shown_to_engineers_and_admins_only(database, app_for, drift_reference) -> None:
    with database.read() as session:
        line_id = get_line(session=session, name="line-1").id
    with database.write() as session:
        tight = DriftConfig(thresholds={"latency_p95_ms": {"limit_warning": 10.0, "limit_severe": 1000.0}})
        drift_db.save_config(session=session, line_id=line_id, config=tight, actor="test")
    add_phones(database, drift_reference, 300, seed=73)
    monitor = DriftMonitor(database)
    monitor.check(line_id)
    monitor.check(line_id)
    for role, sees in ((Role.SUPERVISOR, False), (Role.MANAGER, False), (Role.ENGINEER, True), (Role.ADMIN, True)):
        banners = _banners(_signed_in(app_for, role))
        assert bool(banners) == sees, (role, banners)
        if sees:
            assert "System health" in banners[0] and "inference latency, 95th percentile 15 ms (warning)" in banners[0]


def test_a_line_still_in_acknowledged_severe_drift_says_so_on_the_live_line_and_automation_pages(database, app_for, drift_reference) -> None:
    line_id = _dim_second_line(database, drift_reference)
    with database.write() as session:
        (incident,) = drift_db.current_incidents(session=session, line_id=line_id)
        drift_db.acknowledge_incident(session=session, incident_id=incident.id, actor="erin", note="lamp ordered")
    at = _signed_in(app_for, Role.SUPERVISOR)
    assert not _banners(at), "acknowledged: no banner"
    for page, key in (("../pages/live_line.py", "live.line"), ("../pages/automation.py", "automation.line")):
        at.switch_page(page).run()
        at.selectbox(key=key).set_value("line-2").run()
        assert not at.exception, at.exception
        (notice,) = [e.value for e in at.error if "Severe drift" in e.value]
        assert "line-2: input drift — brightness down" in notice and "Acknowledged by erin: lamp ordered" in notice
        if key == "automation.line":
            (drift,) = [d.value for d in at.dataframe if "criterion" in d.value.columns]
            assert drift.set_index("criterion").loc["drift", "measured"].startswith("open severe drift alarms: brightness, mean blue"), "in words"
        at.selectbox(key=key).set_value("line-1").run()
        assert not any("Severe drift" in e.value for e in at.error), "line-1 is fine"


def test_an_incident_back_to_normal_but_not_acknowledged_is_shown_as_over(database, app_for, drift_reference) -> None:
    # A fresh-eyes walk saw "Drift alarm · line-2: ... (warning)" on every page 15 minutes after every metric was back.
    line_id = _dim_second_line(database, drift_reference)
    add_phones(database, drift_reference, 500, seed=73, line_name="line-2")  # the lamp is fixed
    DriftMonitor(database).check(line_id)
    with database.read() as session:
        (incident,) = drift_db.current_incidents(session=session, line_id=line_id)
    assert not incident.ongoing and not incident.acknowledged
    at = _signed_in(app_for, Role.SUPERVISOR)
    assert not _banners(at), "no red or amber banner for an incident that is over"
    (over,) = [i.value for i in at.info if "Drift alarm, over" in i.value]
    assert "**line-2**" in over and "Back to normal" in over and "not acknowledged yet" in over
