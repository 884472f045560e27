"""The Live line page on a seeded database, through Streamlit's AppTest."""

from __future__ import annotations

import pytest

from core.auth import CurrentUser
from core.camera import get_scenario
from core.line_simulator import SimulatedInspector, simulate_line
from core.vocabulary import Role
from core.worker import Worker
from db.lines import get_line


def _seed(database, settings, count: int) -> None:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=count, rate=1000, seed=21, inspector=None)
    Worker(database, settings).run(until_empty=True)
    SimulatedInspector().answer_open_tasks(database, line_id=line.id, limit=count - 2)  # two still wait


@pytest.mark.parametrize("role", list(Role))
def test_live_line_shows_counters_phones_and_who_decided(database, settings, app_for, shipped_model_dir, role):
    _seed(database, settings, 10)
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("someone", role)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Live line"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Level"] == "shadow"
    assert metrics["Queue"] == "0"
    assert metrics["Waiting for a person"] == "2"
    assert metrics["Worker"] == "DOWN", "no worker process runs during the test"
    texts = [m.value for m in at.markdown]
    assert sum("by person" in t for t in texts) == 6, "8 phones shown, 2 of them still waiting"
    assert sum("waiting for a person" in t for t in texts) == 2
    assert at.selectbox(key="live.line").value == "line-1"
    assert any("No worker is running" in e.value for e in at.error)


def test_live_line_on_an_empty_line_says_what_to_do(database, app_for):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("ed", Role.ENGINEER)
    at.run()
    assert not at.exception
    assert any("shadowline simulate" in i.value for i in at.info)


def test_live_line_says_why_the_model_may_not_decide_a_phone(database, settings, app_for, shipped_model_dir):
    """A lens cap: the phones go to people, and the Live line says the frame is not like the reference."""
    from dataclasses import replace

    from core.line_simulator import queue_simulated_phone
    from core.vocabulary import AutomationLevel
    from db.lines import set_level

    with database.write() as session:
        line = get_line(session=session, name="line-1")
        set_level(session=session, line_id=line.id, level=AutomationLevel.FULL, actor="test")
    scenario = replace(get_scenario("lens-cap"), onset=0)
    for index in range(3):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=scenario, seed=3, index=index)
    Worker(database, settings).run(until_empty=True)
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("someone", Role.SUPERVISOR)
    at.run()
    assert not at.exception
    notes = [m.value for m in at.markdown if "Not like the model's reference" in m.value]
    assert len(notes) == 3 and all("out of range: brightness" in n for n in notes)
