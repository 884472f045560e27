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
    assert metrics["Waiting for the model"] == "0"
    assert metrics["Waiting for a person"] == "2"
    assert metrics["Worker"] == "DOWN", "no worker process runs during the test"
    [defects] = [m for m in at.metric if m.label == "Defect rate"]
    assert defects.delta.endswith(" of 8"), defects.delta  # the count beside the rate
    texts = [m.value for m in at.markdown]
    assert sum("by the simulated inspector" in t for t in texts) == 4, "6 phones shown, 2 of them still waiting"
    assert not any("by a person" in t for t in texts), "the line simulator's stand-in is never shown as a person"
    assert sum("waiting for a person" in t for t in texts) == 2
    assert any("a person judges (the model only watches)" in c.value for c in at.caption), "rules in words, not codes"
    assert not any("shadow_human" in c.value for c in at.caption)
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
    notes = [c.value for c in at.caption if "model could not see this phone: " in c.value]
    assert len(notes) == 3 and all("out of range: brightness" in n for n in notes)


def test_live_line_marks_where_a_person_overruled_the_model(database, settings, app_for, shipped_model_dir):
    from sqlalchemy import select

    from core.vocabulary import Verdict
    from db.models import Prediction
    from db.reviews import claim_next_task, record_human_decision

    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=3, rate=1000, seed=22, inspector=None)
    Worker(database, settings).run(until_empty=True)
    with database.write() as session:  # the person says the opposite of the model on every phone
        while (item := claim_next_task(session=session, reviewer="sam")) is not None:
            model = session.scalar(select(Prediction.verdict).where(Prediction.inspection_id == item.inspection_id, Prediction.is_candidate.is_(False)))
            record_human_decision(session=session, task_id=item.task_id, reviewer="sam", verdict=Verdict.PASS if model == "reject" else Verdict.REJECT)
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert not at.exception
    marks = [m.value for m in at.markdown if "Disagreement" in m.value]
    assert len(marks) == 3 and all("the model said" in m for m in marks)
    assert any("3 where a person overruled the model" in m.value for m in at.markdown)


def test_live_line_shows_the_services_answers_and_engineers_change_budget_and_failsafe(database, settings, app_for, shipped_model_dir):
    from fastapi.testclient import TestClient

    from core.inspection import Inspector
    from core.server.app import create_app
    from core.server.service import InspectionService
    from db import audit
    from db.lines import set_answer_settings
    from tests.server.conftest import make_key, phone_jpeg, post

    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="test", budget_ms=10_000)
    key = make_key(database)
    service = InspectionService(database, settings, Inspector(database, settings, threads=2), threads=2)
    service.start_loading()
    try:
        with TestClient(create_app(service)) as client:
            answers = [post(client, key, f"SN-{i}", phone_jpeg(i)).json() for i in range(3)]
            answers.append(post(client, key, "SN-broken", phone_jpeg(4)[:300]).json())  # unreadable: the fail-safe
    finally:
        service.close()
    assert [a["failsafe"] for a in answers] == [None, None, None, "image_unreadable"]

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Gate answers (15 min)"] == "4"
    [failsafes] = [m for m in at.metric if m.label == "Fail-safes"]
    assert (failsafes.value, failsafes.delta) == ("25.0%", "1 of 4")
    [budget] = [m for m in at.metric if m.label == "Answer budget"]
    assert (budget.value, budget.delta) == ("10000 ms", "then to a person")
    assert metrics["Answer time p50"].endswith(" ms") and metrics["Answer time p99"].endswith(" ms")
    assert any("the image could not be read (1)" in w.value and "sent those phones to a person; each is in the review queue" in w.value for w in at.warning)
    assert not [b for b in at.button if b.label == "Save"], "supervisors see the settings, they do not change them"

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("erin", Role.ENGINEER)
    at.run()
    at.number_input(key="live.budget").set_value(450)
    at.radio(key="live.failsafe").set_value("reject")
    next(b for b in at.button if b.label == "Save").click().run()  # no note: refused, nothing changed
    assert any("say why in the note" in e.value for e in at.error)
    with database.read() as session:
        assert get_line(session=session, name="line-1").failsafe_action == "to_person"
    at.text_input(key="live.answer_note").input("the gate needs its answer sooner")
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception
    assert any("answer budget 450 ms, fail-safe reject" in s.value for s in at.success)
    with database.read() as session:
        line = get_line(session=session, name="line-1")
        entries, _ = audit.search(session=session, actor="erin")
    assert (line.answer_budget_ms, line.failsafe_action) == (450, "reject")
    [entry] = entries.to_dict("records")
    assert (entry["action"], entry["note"]) == ("line.answer_budget_ms+failsafe_action", "the gate needs its answer sooner")


def test_live_line_says_whether_the_prediction_server_answers(database, settings, app_for):
    """The station's verdicts come from `shadowline serve`: its heartbeat tells the page whether it answers and is ready."""
    from core.inspection import Inspector
    from core.server.service import InspectionService
    from db.status import server_summary

    def server_notices(at) -> list[str]:
        at.run()
        assert not at.exception
        return [n.value for n in [*at.error, *at.warning] if "prediction server" in n.value.lower()]

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    assert server_notices(at) == [], "no server ever ran: nothing to say"
    service = InspectionService(database, settings, Inspector(database, settings, threads=1), threads=1)
    try:
        service.beat()  # before its models load
        assert any("not ready: models loading" in n for n in server_notices(at))
        service.start_loading()
        assert service._ready.wait(60)
        service.beat()
        with database.read() as session:
            assert server_summary(session=session) == (True, "ready")
        assert server_notices(at) == []
        service.beat(state="stopped")
        [stopped] = server_notices(at)
        assert "does not answer (stopped)" in stopped and "shadowline serve" in stopped
    finally:
        service.close()


def test_a_worker_shows_its_models_loaded_before_its_first_phone(database, settings):
    """A worker with nothing queued (the line fed through the server) reports its line's model, not a missing one."""
    worker = Worker(database, settings)
    worker.run(once=True)
    assert worker.model_status().startswith("ok: scratch-v"), worker.model_status()


def test_the_chosen_line_is_written_to_the_url(database, app_for) -> None:
    """``?line=`` follows the picker, so a reload opens on the same line (that a reload does: tests/browser/test_running_line.py)."""
    from core.auth import CurrentUser
    from core.vocabulary import Role
    from db import audit
    from db.lines import add_line

    with database.write() as session:
        add_line(session=session, name="line-2", actor=audit.SYSTEM_ACTOR)
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert at.selectbox(key="live.line").value == "line-1"
    at.selectbox(key="live.line").set_value("line-2").run()
    assert not at.exception, at.exception
    assert at.query_params["line"] in ("line-2", ["line-2"])


def test_status_says_how_many_human_verdicts_the_simulated_inspector_gave(database, settings) -> None:
    from db.status import line_statuses

    _seed(database, settings, 10)
    with database.read() as session:
        (status,) = line_statuses(session=session)
    assert status.decided_by["human"] == 8 and status.decided_by_simulation == 8


def test_live_line_says_when_a_phone_went_to_the_failsafe_under_another_phones_serial(database, app_for) -> None:
    """Such a phone is not recorded (core/server/service.py, note_unrecorded_conflict): the hold station must hear of it here."""
    from db.gate import record_serial_conflict

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert not at.exception and not [e for e in at.error if "serial" in e.value]
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        record_serial_conflict(
            session=session,
            line_id=line.id,
            serial="SN-TWICE",
            station="bench-7",
            image_path="images/line-1/x.jpg",
            image_sha256="0" * 64,
            action="to_person",
            note="test",
        )
    at.run()
    assert not at.exception
    [notice] = [e.value for e in at.error if "SN-TWICE" in e.value]
    assert "station bench-7" in notice and "not in the Review queue" in notice and "serial of its own" in notice


def test_live_line_says_when_the_prediction_server_refused_a_stations_posts(database, app_for) -> None:
    """A station with a revoked key sends every phone to the hold station unrecorded: the Live line says so, and why."""
    from db.gate import record_refused_posts

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert not at.exception and not [w for w in at.warning if "refused" in w.value]
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        record_refused_posts(session=session, line_id=line.id, line_name="line-1", counts={"unauthorized": 12, "not_an_image": 1})
        record_refused_posts(session=session, line_id=line.id, line_name="line-1", counts={"unauthorized": 3})
        record_refused_posts(session=session, line_id=None, line_name="line-9", counts={"unknown_line": 5})  # no such line: not this line's
    at.run()
    assert not at.exception
    [notice] = [w.value for w in at.warning if "refused" in w.value]
    assert "refused 16 posts" in notice
    assert "no key, or an unknown or revoked one (15); a file that is not an image (1)" in notice
    assert "not in the Review queue" in notice and "unknown_line" not in notice
