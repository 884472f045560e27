"""The Drift page and the alarm banner: who sees them, what they show, acknowledging from the page."""

from __future__ import annotations

import json

import pytest

from core.auth import CurrentUser
from core.drift.monitor import DriftMonitor
from core.vocabulary import Role
from db import drift as drift_db
from db.lines import get_line
from tests.drift_data import add_phones

PAGE = "../pages/drift.py"


def _signed_in(app_for, role: Role):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(f"a-{role.value}", role)
    return at.run()


def _drifting_line(database, drift_reference) -> int:
    """line-1 with a dark window and a raised brightness alarm."""
    with database.read() as session:
        line_id = get_line(session=session, name="line-1").id
    add_phones(database, drift_reference, 300, seed=21)
    monitor = DriftMonitor(database)
    monitor.check(line_id)
    add_phones(database, drift_reference, 500, seed=22, darken=0.4)
    monitor.check(line_id)
    monitor.check(line_id)
    return line_id


@pytest.mark.parametrize("role", [Role.ENGINEER, Role.MANAGER, Role.ADMIN])
def test_drift_page_shows_every_metric_the_charts_and_the_alarm(database, app_for, drift_reference, role) -> None:
    _drifting_line(database, drift_reference)
    at = _signed_in(app_for, role)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert len(table) == 16 and "DRIFT (severe)" in set(table["verdict"])
    assert any("Incident #" in e.value and "input drift — brightness down" in e.value for e in at.error)
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    histogram = next(json.loads(c.proto.spec) for c in charts if "Reference against the current window" in c.proto.spec)
    bins = [trace["xbins"] for trace in histogram["data"]]
    assert len(bins) == 2 and bins[0] == bins[1], "reference and now binned alike, or their bar heights cannot be compared"
    ack_forms = [b for b in at.button if b.label == "Acknowledge"]
    assert bool(ack_forms) == (role in (Role.ENGINEER, Role.MANAGER))


def test_acknowledging_from_the_page_needs_a_note_and_records_who(database, app_for, drift_reference) -> None:
    line_id = _drifting_line(database, drift_reference)
    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page(PAGE).run()
    with database.read() as session:
        alarm = next(a for a in drift_db.current_alarms(session=session, line_id=line_id) if a.metric == "brightness")
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert any("needs a note" in e.value for e in at.error)
    at.multiselect(key="drift.ack_ids.line-1").set_value([alarm.id])
    at.text_input(key="drift.ack_note").input("lamp 3 replaced at 10:40")
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    assert not at.exception
    with database.read() as session:
        acknowledged = next(a for a in drift_db.alarm_history(session=session, line_id=line_id) if a.id == alarm.id)
    assert acknowledged.acknowledged_by == "a-engineer" and acknowledged.acknowledgement_note == "lamp 3 replaced at 10:40"
    with database.read() as session:
        others = [a for a in drift_db.current_alarms(session=session, line_id=line_id) if a.id != alarm.id]
    assert others and not any(a.acknowledged for a in others)  # only the chosen alarm


def test_every_role_sees_the_banner_but_supervisors_have_no_drift_page(database, app_for, drift_reference) -> None:
    _drifting_line(database, drift_reference)
    at = _signed_in(app_for, Role.SUPERVISOR)
    assert any("Drift alarm" in e.value and "line-1" in e.value for e in at.error)
    with pytest.raises(ValueError):
        at.switch_page(PAGE)


def test_no_banner_without_alarms_and_an_inconclusive_page_on_an_empty_line(database, app_for) -> None:
    at = _signed_in(app_for, Role.ENGINEER)
    assert not any("Drift alarm" in e.value for e in at.error)
    at.switch_page(PAGE).run()
    assert not at.exception
    table = at.dataframe[0].value
    verdicts = dict(zip(table["metric"], table["verdict"], strict=True))
    assert verdicts.pop("Phones waiting for the worker") == "ok"  # an empty queue is a reading, not a sample
    assert set(verdicts.values()) == {"inconclusive"}
    assert any("No open alarm" in s.value for s in at.success)
    assert (table["score"] == "").any() and (table["PSI"] == "").any(), "a number the check could not give is an empty cell"
    assert not table.map(lambda cell: cell is None or (isinstance(cell, float) and cell != cell)).any().any(), "no cell shows None"


def test_engineer_changes_a_threshold_and_it_is_stored(database, app_for) -> None:
    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page(PAGE).run()
    at.number_input(key="drift.s_window").set_value(300)
    at.text_input(key="drift.s_note").input("faster reaction on line 1")
    next(b for b in at.button if b.label == "Save settings").click().run()
    assert not at.exception
    with database.read() as session:
        assert drift_db.get_config(session=session, line_id=get_line(session=session, name="line-1").id).window_phones == 300


def test_checks_all_inconclusive_say_so_instead_of_an_empty_chart(database, app_for, drift_reference) -> None:
    """Too few phones for a verdict: the page says so, and draws no empty p-value axis."""
    with database.read() as session:
        line_id = get_line(session=session, name="line-1").id
    add_phones(database, drift_reference, 12, seed=5)
    DriftMonitor(database).check(line_id)
    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert any("all inconclusive" in i.value for i in at.info), [i.value for i in at.info]
    assert not [c for c in at.get("plotly_chart") if "The statistic at each check" in c.proto.spec], "words, not an empty pair of axes"


def test_the_threshold_label_sits_on_its_line_on_the_p_value_chart(database, app_for, drift_reference) -> None:
    """On a log axis plotly's own label of a horizontal line lands at the value rather than at its logarithm, far
    from the line (a walk saw it): the label is placed at log10(threshold), the line at the threshold itself."""
    import math

    _drifting_line(database, drift_reference)
    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "The statistic at each check" in c.proto.spec)
    layout = chart["layout"]
    assert layout["yaxis"]["type"] == "log", "brightness is judged by a KS p-value, drawn on a log axis"
    (line,) = [shape for shape in layout["shapes"] if shape["type"] == "line" and shape.get("xref") == "x domain"]
    (label,) = [note for note in layout["annotations"] if note["text"] == "threshold"]
    assert line["y0"] == line["y1"] and 0 < line["y0"] < 1
    assert label["y"] == pytest.approx(math.log10(line["y0"]))
