"""Review queue: a supervisor judges phones one at a time; other roles cannot, on the page or behind it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core import settings as settings_module
from core.auth import CurrentUser, PermissionDeniedError
from core.camera import get_scenario
from core.line_simulator import simulate_line
from core.reviewing import decide, next_phone
from core.vocabulary import AutomationLevel, Role, Verdict
from core.worker import Worker
from db.lines import get_line, set_level
from db.models import FinalDecision, HumanDecision

SUPERVISOR = CurrentUser("sam", Role.SUPERVISOR)


def _seed(database, settings, count: int, level: AutomationLevel = AutomationLevel.SHADOW) -> None:
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        set_level(session=session, line_id=line.id, level=level, actor="test")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=count, rate=1000, seed=31, inspector=None)
    Worker(database, settings).run(until_empty=True)


def _signed_in(app, user: CurrentUser):
    at = app()
    at.session_state["auth.user"] = user
    return at


def test_supervisor_judges_the_oldest_phone_and_the_next_loads(database, settings, app_for, shipped_model_dir):
    _seed(database, settings, 3)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert not at.exception
    first = at.session_state["review.task"]
    assert first.serial == "SN-L1-31-000000", "oldest first"
    assert not first.show_model_boxes, "in shadow mode the model's boxes are hidden"
    assert any("not shown" in c.value for c in at.caption)
    at.button(key="review.reject").click().run()
    assert not at.exception
    assert at.session_state["review.task"].serial == "SN-L1-31-000001"
    with database.read() as session:
        decision = session.scalar(select(HumanDecision))
        final = session.get(FinalDecision, first.inspection_id)
    assert (decision.user_name, decision.verdict, decision.is_simulated) == ("sam", "reject", False)
    assert decision.seconds_taken is not None and decision.seconds_taken >= 0
    assert (final.verdict, final.decided_by) == ("reject", "human")


def test_assist_mode_shows_the_model_boxes(database, settings, app_for, shipped_model_dir):
    _seed(database, settings, 1, AutomationLevel.ASSIST)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert at.session_state["review.task"].show_model_boxes
    assert any("boxes are shown" in c.value for c in at.caption)


def test_empty_queue_says_so(database, app_for):
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert not at.exception
    assert any("Nothing waits" in s.value for s in at.success)


@pytest.mark.parametrize("role", [Role.ENGINEER, Role.MANAGER, Role.ADMIN])
def test_other_roles_do_not_get_the_page_and_are_refused_behind_it(database, settings, app_for, role, shipped_model_dir):
    _seed(database, settings, 1)
    user = CurrentUser("someone", role)
    at = _signed_in(app_for, user).run()
    assert not at.exception
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("../pages/review_queue.py")
    with pytest.raises(PermissionDeniedError):
        next_phone(database, user)
    with pytest.raises(PermissionDeniedError):
        decide(database, user, task_id=1, verdict=Verdict.PASS, seconds_taken=1.0)


def test_two_supervisors_never_hold_the_same_phone(database, settings, shipped_model_dir):
    _seed(database, settings, 2)
    a = next_phone(database, SUPERVISOR)
    b = next_phone(database, CurrentUser("sue", Role.SUPERVISOR))
    assert a.inspection_id != b.inspection_id
    assert next_phone(database, CurrentUser("sid", Role.SUPERVISOR)) is None


def test_signed_out_visitors_see_only_the_way_to_sign_in(database, app_for):
    # The form itself is served over HTTP by app/gate.py (tests/app/test_sign_in_gate.py).
    at = app_for().run()
    assert not at.exception
    assert at.title[0].value == "Signed out"
    assert "auth.sign_out" not in [b.key for b in at.button]
    assert not at.sidebar.markdown, "no page, no user, nothing about the line"


def test_skip_hands_over_another_phone_and_says_so(database, settings, app_for, shipped_model_dir):
    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    first = at.session_state["review.task"]
    at.button(key="review.skip").click().run()
    assert not at.exception
    second = at.session_state["review.task"]
    assert second.inspection_id != first.inspection_id, "a skip moves on"
    assert any("back of your queue" in t.value for t in at.toast)
    at.button(key="review.skip").click().run()
    # Only skipped phones are left: the first comes back, and the page says why.
    assert at.session_state["review.task"].inspection_id == first.inspection_id
    assert any("skipped this phone before" in w.value for w in at.warning)


def test_a_verdict_can_be_undone_and_the_readers_use_the_correction(database, settings, app_for, shipped_model_dir):
    from db.corrections import final_verdict
    from db.models import DecisionCorrection

    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    first = at.session_state["review.task"]
    at.button(key="review.reject").click().run()
    assert not at.exception
    assert any(f"{first.serial}: reject recorded" in i.value for i in at.info)
    at.button(key="review.undo").click().run()
    assert not at.exception
    assert any("reject undone, now pass" in s.value for s in at.success)
    assert at.session_state["review.task"].inspection_id != first.inspection_id, "the next phone stays in front of the supervisor"
    mine = at.selectbox(key="review.fix.decision").value
    assert (mine.serial, mine.verdict, mine.corrections) == (first.serial, Verdict.PASS, 1), "your verdicts show the correction"
    with database.read() as session:
        correction = session.scalar(select(DecisionCorrection))
        verdict_now = session.scalar(select(final_verdict()).where(FinalDecision.inspection_id == first.inspection_id))
        final = session.get(FinalDecision, first.inspection_id)
    assert (correction.verdict, correction.is_undo, correction.corrected_by) == ("pass", True, "sam")
    assert (final.verdict, verdict_now) == ("reject", "pass"), "the final decision row is untouched; readers see the correction"


def test_a_verdict_on_a_phone_shown_a_moment_ago_is_not_recorded(database, settings, app_for, shipped_model_dir, monkeypatch):
    # A key pressed twice judged the next phone before anyone saw it (a fresh-eyes walk: P twice, 60 ms apart).
    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    monkeypatch.setenv("SHADOWLINE_REVIEW_MIN_LOOK_S", "10")
    settings_module.get_settings.cache_clear()
    at.run()  # the page reads its settings when it runs
    shown = at.session_state["review.task"]
    at.button(key="review.pass").click().run()
    assert not at.exception
    assert any("Not recorded" in t.value and "on screen for" in t.value for t in at.toast), [t.value for t in at.toast]
    assert at.session_state["review.task"].task_id == shown.task_id, "the phone stays on screen"
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(HumanDecision)) == 0
    monkeypatch.setenv("SHADOWLINE_REVIEW_MIN_LOOK_S", "0")
    settings_module.get_settings.cache_clear()
    at.run()
    at.button(key="review.pass").click().run()
    with database.read() as session:
        assert session.scalars(select(HumanDecision.inspection_id)).all() == [shown.inspection_id]


def test_an_earlier_verdict_is_corrected_with_a_reason(database, settings, app_for, shipped_model_dir):
    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    first = at.session_state["review.task"]
    at.button(key="review.pass").click().run()
    assert at.selectbox(key="review.fix.decision").value.serial == first.serial
    second = at.session_state["review.task"]
    at.button(key="review.reject").click().run()
    assert at.selectbox(key="review.fix.decision").value.serial == second.serial, "the newest verdict is offered first"
    at.selectbox(key="review.fix.decision").select_index(1).run()
    at.text_input(key="review.fix.reason").input("a scratch I missed under the glare")
    at.button(key="review.fix.apply").click().run()
    assert not at.exception
    assert any(f"{first.serial}: now reject" in s.value for s in at.success)
    assert at.text_input(key="review.fix.reason").value == "", "the reason went with that correction"


def test_a_correction_pressed_in_a_second_tab_after_the_first_made_it_changes_nothing(database, settings, app_for, shipped_model_dir):
    from db.corrections import final_verdict
    from db.models import DecisionCorrection

    # The button carries the verdict it was drawn for: the page used to work out "the other verdict" again
    # when the click arrived, so a stale tab (or a click run twice) flipped the phone back.
    _seed(database, settings, 1)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    first = at.session_state["review.task"]
    at.button(key="review.pass").click().run()
    other_tab = _signed_in(app_for, SUPERVISOR).run()
    other_tab.switch_page("../pages/review_queue.py").run()
    for tab in (at, other_tab):
        assert tab.selectbox(key="review.fix.decision").value.serial == first.serial
        tab.text_input(key="review.fix.reason").input("missed a scratch")
    at.button(key="review.fix.apply").click().run()
    other_tab.button(key="review.fix.apply").click().run()
    assert not other_tab.exception
    assert any("not changed" in e.value and "reject already" in e.value for e in other_tab.error)
    with database.read() as session:
        corrections = session.scalars(select(DecisionCorrection)).all()
        verdict_now = session.scalar(select(final_verdict()).where(FinalDecision.inspection_id == first.inspection_id))
    assert [c.verdict for c in corrections] == ["reject"]
    assert verdict_now == "reject"


def test_the_queue_shows_what_waits_and_filters_by_line(database, settings, app_for, shipped_model_dir):
    from db import audit
    from db.lines import add_line

    _seed(database, settings, 3)
    with database.write() as session:
        add_line(session=session, name="line-9", actor=audit.SYSTEM_ACTOR)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert at.session_state["review.task"].line_name == "line-1"
    assert at.metric[0].value == "3"
    at.selectbox(key="review.line").select("line-9").run()
    assert not at.exception
    assert at.session_state["review.task"] is None
    assert any("Nothing waits" in s.value for s in at.success)
    at.selectbox(key="review.line").select("line-1").run()
    assert at.session_state["review.task"].serial == "SN-L1-31-000000", "the phone given back for another line keeps its place"


def test_a_phone_whose_image_was_not_stored_says_so_and_can_still_be_judged(database, settings, app_for, shipped_model_dir):
    """The service records a phone whose image the store could not take (full disk) under `not-stored/`."""
    from core.ingest import NOT_STORED_PREFIX
    from db.models import Inspection

    _seed(database, settings, 1)
    with database.write() as session:
        phone = session.scalar(select(Inspection))
        phone.image_path = f"{NOT_STORED_PREFIX}{phone.image_sha256}.jpg"
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert not at.exception
    assert any("was not stored" in w.value for w in at.warning), [w.value for w in at.warning]
    at.button(key="review.pass").click().run()
    assert not at.exception
    with database.read() as session:
        assert session.scalar(select(FinalDecision)).verdict == "pass"


def test_a_photo_the_admission_check_refused_is_flagged_to_the_reviewer(database, settings, app_for, shipped_model_dir):
    """A lens cap's black frame at shadow: the reviewer is told not to judge the photo, and no other phone says so."""
    import cv2
    import numpy as np

    from core.ingest import store_image_bytes
    from db.pipeline import queue_inspection

    with database.write() as session:
        line = get_line(session=session, name="line-1")
        set_level(session=session, line_id=line.id, level=AutomationLevel.SHADOW, actor="test")
    relative, digest = store_image_bytes(settings, "line-1", cv2.imencode(".jpg", np.zeros((360, 480, 3), np.uint8))[1].tobytes(), ".jpg")
    with database.write() as session:
        queue_inspection(session=session, line_id=line.id, serial="SN-black", image_path=relative, image_sha256=digest, source="test")
    Worker(database, settings, batch_size=4).run(until_empty=True)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    assert not at.exception and at.session_state["review.task"].serial == "SN-black"
    assert any("admission check refused this photograph" in w.value and "brightness" in w.value for w in at.warning), [w.value for w in at.warning]
    _seed(database, settings, 1)
    at.button(key="review.reject").click().run()
    assert at.session_state["review.task"].serial != "SN-black"
    assert not any("admission check" in w.value for w in at.warning), [w.value for w in at.warning]


def test_a_reload_shows_the_phone_the_supervisor_was_judging(database, settings, app_for, shipped_model_dir):
    """A reload (a new browser session of the same person) must not strand the phone on screen, claimed and unseen."""
    _seed(database, settings, 3)
    before = _signed_in(app_for, SUPERVISOR).run()
    before.switch_page("../pages/review_queue.py").run()
    held = before.session_state["review.task"]
    reloaded = _signed_in(app_for, SUPERVISOR).run()
    reloaded.switch_page("../pages/review_queue.py").run()
    assert not reloaded.exception
    assert reloaded.session_state["review.task"].task_id == held.task_id
    reloaded.button(key="review.pass").click().run()
    assert reloaded.session_state["review.task"].serial == "SN-L1-31-000001", "then on to the next"


def test_a_phone_whose_claim_was_lost_says_so_before_the_supervisor_presses_a_key(database, settings, app_for, shipped_model_dir):
    from datetime import timedelta

    from db.models import ReviewTask, utcnow
    from db.reviews import claim_next_task

    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    held = at.session_state["review.task"]
    with database.write() as session:  # sam's claim ran out (a lunch break) and ann took the phone
        session.get(ReviewTask, held.task_id).claim_expires_at = utcnow() - timedelta(seconds=1)
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="ann").task_id == held.task_id
    at.run()
    assert not at.exception
    assert any("is no longer yours" in w.value for w in at.warning), [w.value for w in at.warning]


def test_signing_out_gives_the_held_phone_back_at_once(database, settings, app_for, shipped_model_dir):
    # A fresh-eyes walk: after a sign-out the phone on screen stayed reserved for about 2 minutes.
    from db.models import ReviewTask

    _seed(database, settings, 1)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    held = at.session_state["review.task"]
    with database.read() as session:
        assert session.get(ReviewTask, held.task_id).claimed_by == "sam"
    at.button(key="auth.sign_out").click().run()
    assert not at.exception
    with database.read() as session:
        task = session.get(ReviewTask, held.task_id)
    assert (task.status, task.claimed_by) == ("open", None), "free for the next supervisor"


def test_a_reload_keeps_the_undo_of_the_verdict_just_given(database, settings, app_for, shipped_model_dir):
    # The Undo lived in the browser's session: a reload right after a wrong key lost it, for the whole 10 s.
    from db.corrections import final_verdict

    _seed(database, settings, 2)
    at = _signed_in(app_for, SUPERVISOR).run()
    at.switch_page("../pages/review_queue.py").run()
    first = at.session_state["review.task"]
    at.button(key="review.reject").click().run()
    reloaded = _signed_in(app_for, SUPERVISOR).run()  # a new session of the page, as after a reload
    reloaded.switch_page("../pages/review_queue.py").run()
    assert not reloaded.exception
    assert any(f"{first.serial}: reject recorded" in i.value for i in reloaded.info), "the undo is offered again"
    reloaded.button(key="review.undo").click().run()
    assert any("reject undone, now pass" in s.value for s in reloaded.success)
    with database.read() as session:
        assert session.scalar(select(final_verdict()).where(FinalDecision.inspection_id == first.inspection_id)) == "pass"
    again = _signed_in(app_for, SUPERVISOR).run()
    again.switch_page("../pages/review_queue.py").run()
    assert not [b for b in again.button if b.key == "review.undo"], "a verdict corrected already is not offered again"
