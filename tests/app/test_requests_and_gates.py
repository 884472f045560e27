"""Requests people can act on (a manager's inbox on every page, the answer back to who asked), the slider that
never stays on a rung the line is not on, the pace of the evidence, and gates that never silently count the simulator."""

from __future__ import annotations

import re

import pytest

from core import settings as settings_module
from core.auth import CurrentUser
from core.ladder import actions
from core.ladder.gates import Rung
from core.vocabulary import AutomationLevel, Role
from db import audit
from db.lines import add_line, get_line, set_level
from tests.drift_data import add_phones

AUTOMATION, LIVE = "../pages/automation.py", "../pages/live_line.py"
ENGINEER = CurrentUser("erin", Role.ENGINEER)


def _table(at, column: str):
    """The table that has ``column`` (AppTest does not expose a dataframe's key)."""
    (table,) = [d.value for d in at.dataframe if column in d.value.columns]
    return table


def _as(app_for, user: CurrentUser, page: str | None = None):
    at = app_for()
    at.session_state["auth.user"] = user
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def request_on_line_2(database, drift_reference) -> int:
    """line-2 in partial automation with 300 agreeing phones judged by people, and erin's request to move it into canary."""
    actions.set_gates(database, CurrentUser("root", Role.ADMIN), assignments=["canary.min_pairs=60"])
    with database.write() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
        line_id = add_line(session=session, name="line-2", actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
        set_level(session=session, line_id=line_id, level=AutomationLevel.PARTIAL, actor="test")
    add_phones(database, drift_reference, 300, seed=81, line_name="line-2")
    outcome = actions.move(database, ENGINEER, line_name="line-2", to=Rung(AutomationLevel.CANARY, 0.05), note="300 phones agree")
    assert outcome.request_id is not None
    return outcome.request_id


def test_managers_see_waiting_requests_wherever_they_are_and_decide_them_across_lines(database, app_for, request_on_line_2) -> None:
    manager = CurrentUser("mo", Role.MANAGER)
    at = _as(app_for, manager, LIVE)
    (inbox,) = [i.value for i in at.info if "wait" in i.value and "manager" in i.value]
    assert "**1 request waits for a manager**: **line-2**: move to canary 5% (asked by erin)" in inbox
    assert not [i for i in _as(app_for, ENGINEER, LIVE).info if "waits for a manager" in i.value], "the inbox is the managers'"

    at.switch_page(AUTOMATION).run()
    assert at.selectbox(key="automation.line").value == "line-1", "the page shows line-1, and the request of line-2 with it"
    assert any(f"Request #{request_on_line_2}" in m.value and "line-2" in m.value for m in at.markdown)
    at.button(key=f"automation.refuse.{request_on_line_2}").click().run()
    assert any("needs a note" in e.value for e in at.error)
    at.text_input(key=f"automation.decision_note.{request_on_line_2}").input("wait for the new lamps")
    at.button(key=f"automation.refuse.{request_on_line_2}").click().run()
    assert not at.exception
    decided = _table(at, "answer")
    assert list(decided[["line", "answer", "by", "note"]].iloc[0]) == ["line-2", "refused", "mo", "wait for the new lamps"]
    assert not [i for i in at.info if "waits for a manager" in i.value], "nothing waits any more"

    # The person who asked sees the answer, with its note, on whatever page they are.
    asker = _as(app_for, ENGINEER, LIVE)
    (answer,) = [w.value for w in asker.warning if "Your request" in w.value]
    assert answer == f"Your request #{request_on_line_2} (line-2: move to canary 5%) was **refused** by mo: “wait for the new lamps”"
    asker.button(key=f"requests.seen.{request_on_line_2}").click().run()
    assert not [w for w in asker.warning if "Your request" in w.value]


def test_the_slider_returns_to_the_rung_the_line_is_on_and_says_request_where_a_manager_approves(database, app_for, request_on_line_2) -> None:
    at = _as(app_for, ENGINEER, AUTOMATION)
    at.selectbox(key="automation.line").set_value("line-2").run()
    slider = at.select_slider(key="automation.slider.line-2.partial")
    slider.set_value("canary 5%").run()
    assert at.button(key="automation.move").label == "Request: partial automation → canary 5%"
    at.text_input(key="automation.note").input("ready for canary")
    at.button(key="automation.move").click().run()
    assert any("a manager must approve" in s.value for s in at.success)
    assert at.select_slider(key="automation.slider.line-2.partial").value == "partial automation", "a request does not move the line"

    at.select_slider(key="automation.slider.line-2.partial").set_value("full automation").run()
    assert any("One rung at a time" in i.value for i in at.info) and not [b for b in at.button if b.key == "automation.move"]
    at.button(key="automation.cancel").click().run()
    assert at.select_slider(key="automation.slider.line-2.partial").value == "partial automation"

    at.selectbox(key="automation.line").set_value("line-1").run()
    at.select_slider(key="automation.slider.line-1.shadow").set_value("AI assistance").run()
    assert at.button(key="automation.move").label == "Move: shadow → AI assistance"
    at.text_input(key="automation.note").input("try assistance")
    at.button(key="automation.move").click().run()
    assert any("Refused: not enough evidence yet" in e.value for e in at.error)
    assert at.select_slider(key="automation.slider.line-1.shadow").value == "shadow", "refused: the slider is back where the line is"


def test_the_page_says_how_fast_evidence_grows_and_whether_simulated_judgements_count(database, app_for, drift_reference, monkeypatch) -> None:
    add_phones(database, drift_reference, 30, seed=82)
    add_phones(database, drift_reference, 20, seed=83, simulated=True)
    at = _as(app_for, ENGINEER, AUTOMATION)
    captions = " ".join(c.value for c in at.caption)
    # The line reached shadow moments ago: the pace is over those first minutes (at least one).
    assert re.search(
        r"\d+ phones judged by both per hour \(over the 1 min since the line reached its rung\); at this pace the gate's 200 phones are reached in about",
        captions,
    ), captions
    assert "the simulated inspector's judgements are not counted (20 phones left out)" in captions
    assert "30 phones" in _table(at, "criterion")["measured"].iloc[0]

    monkeypatch.setenv("SHADOWLINE_GATES_COUNT_SIMULATED", "true")
    settings_module.get_settings.cache_clear()
    at = _as(app_for, ENGINEER, AUTOMATION)
    assert any("Simulated judgements are counted: 20 of these 50 phones" in w.value for w in at.warning)
    assert "50 phones" in _table(at, "criterion")["measured"].iloc[0]
