"""What people do in the app, in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from core.camera import get_scenario
from core.line_simulator import simulate_line
from core.settings import load_settings
from core.worker import Worker
from db.bootstrap import open_database
from db.lines import add_line, get_line
from db.models import HumanDecision, Inspection
from tests.browser.conftest import pick, screenshot, sign_in

pytestmark = pytest.mark.browser


def test_supervisor_reviews_a_phone_and_sees_it_on_the_live_line(served_app, served_env, page):
    sign_in(page, served_app, "sam")
    page.get_by_role("link", name="Review queue").click()
    page.get_by_role("heading", name="Review queue").wait_for()
    serial = page.locator("h3 code").first.inner_text()
    screenshot(page, "review_queue")
    page.wait_for_timeout(1000)  # a person looks at the phone first
    page.get_by_role("button", name=re.compile("^REJECT")).click()
    page.get_by_text(f"{serial}: reject recorded").wait_for(timeout=20_000)
    # The next phone loads at once and can be judged from the keyboard.
    expect(page.locator("h3 code").first).not_to_have_text(serial, timeout=20_000)
    next_serial = page.locator("h3 code").first.inner_text()
    page.wait_for_timeout(1500)  # a person looks at the phone (verdicts within SHADOWLINE_REVIEW_MIN_LOOK_S of it appearing are ignored)
    # P pressed twice in a row: the second press judges nothing, not the phone that has just come up.
    page.locator("body").press("p")
    expect(page.locator("h3 code").first).not_to_have_text(next_serial, timeout=20_000)
    page.locator("body").press("p")
    page.get_by_text(re.compile("^Not recorded: .* on screen for")).wait_for(timeout=20_000)  # and the supervisor is told
    page.get_by_text(f"{next_serial}: pass recorded").wait_for(timeout=20_000)
    page.wait_for_timeout(3000)  # time for a second verdict to be recorded, were there one
    database = open_database(load_settings(served_env))
    try:
        with database.read() as session:
            judged = session.execute(
                select(Inspection.serial).join(HumanDecision, HumanDecision.inspection_id == Inspection.id).where(HumanDecision.user_name == "sam")
            ).scalars()
            assert sorted(judged) == sorted([serial, next_serial]), "the second P judged no phone"
    finally:
        database.dispose()
    page.get_by_role("link", name="Live line").click()
    page.get_by_role("heading", name="Live line").wait_for()
    # The phone's card: the innermost block holding its serial (the verdict is a line of its own above it).
    phone = page.locator("[data-testid='stVerticalBlock']").filter(has=page.get_by_text(serial)).last
    phone.get_by_text("REJECT").wait_for(timeout=20_000)
    assert "by a person" in phone.inner_text()
    screenshot(page, "live_line")


def test_engineer_opens_a_disagreement(served_app, page):
    sign_in(page, served_app, "erin")
    page.get_by_role("link", name="Shadow comparison").click()
    page.get_by_role("heading", name="Disagreements").wait_for(timeout=20_000)
    page.locator("[data-testid='stPlotlyChart']").nth(1).wait_for(timeout=20_000)
    pick(page, "Open a phone")
    page.get_by_text("the person said").wait_for(timeout=20_000)
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=20_000)
    screenshot(page, "shadow_comparison")


def test_supervisor_cannot_reach_the_managers_pages(served_app, page):
    sign_in(page, served_app, "sam")
    assert page.get_by_role("link", name="Audit log").count() == 0
    assert page.get_by_role("link", name="Shadow comparison").count() == 0
    # Opening the manager's URL directly keeps the sign-in and says plainly whom the page is for.
    page.goto(f"{served_app}/audit")
    page.get_by_text("This page is for managers and admins; you are signed in as sam (supervisor).").wait_for(timeout=20_000)
    assert page.get_by_text("Page not found").count() == 0
    assert page.get_by_text("entries · page").count() == 0, "nothing of the audit log is shown"
    screenshot(page, "supervisor_denied_audit")


def test_manager_reads_the_audit_log(served_app, page):
    sign_in(page, served_app, "mo")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("heading", name="Audit log").wait_for(timeout=20_000)
    page.get_by_text("entries · page 1").wait_for()
    screenshot(page, "audit_log")


def test_wrong_password_is_refused_clearly(served_app, page):
    page.goto(served_app)
    page.get_by_role("textbox", name="User name").fill("mo")
    page.get_by_role("textbox", name="Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong user name or password").wait_for(timeout=20_000)
    screenshot(page, "sign_in_refused")


def test_engineer_sees_the_dim_lights_alarm_and_acknowledges_it(served_app, page):
    sign_in(page, served_app, "erin")
    expect(page.get_by_text(re.compile(r"Drift alarm.*line-2"))).to_be_visible(timeout=20_000)
    page.get_by_role("link", name="Drift").click()
    page.get_by_role("heading", name="Alarms").wait_for(timeout=20_000)
    pick(page, "Line", "line-2")
    alarm = page.get_by_text(re.compile(r"Incident #\d+ · input drift — brightness down"))
    expect(alarm).to_be_visible(timeout=20_000)
    page.locator("[data-testid='stPlotlyChart']").nth(2).wait_for(timeout=20_000)
    screenshot(page, "drift")
    page.locator("[data-testid='stPlotlyChart']").first.scroll_into_view_if_needed()
    screenshot(page, "drift_charts")
    page.locator("[data-testid='stImage']").first.scroll_into_view_if_needed()
    screenshot(page, "drift_images")
    page.get_by_role("textbox", name="What did you see, what is being done?").fill("lamp 3 replaced, watching the next hour")
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.get_by_text(re.compile(r"acknowledged by erin: lamp 3 replaced")).first).to_be_visible(timeout=20_000)
    expect(page.get_by_text(re.compile(r"Drift alarm.*line-2"))).to_have_count(0)


def test_manager_approves_a_move_to_canary_and_sees_the_slider_move(served_app, page):
    sign_in(page, served_app, "mo")
    page.get_by_role("link", name="Automation").click()
    page.get_by_role("heading", name="Automation").wait_for(timeout=20_000)
    pick(page, "Line", "line-3")
    expect(page.get_by_role("heading", name="line-3: partial automation")).to_be_visible(timeout=20_000)
    expect(page.get_by_text(re.compile(r"Request #\d+.*move to canary 5%.*asked by erin"))).to_be_visible(timeout=20_000)
    page.get_by_role("textbox", name="Decision note").fill("a week of good numbers, go")
    screenshot(page, "automation_request")
    page.get_by_role("button", name=re.compile(r"Approve #\d+")).click()
    expect(page.get_by_role("heading", name="line-3: canary 5%")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("line-3 moved up from partial automation to canary 5%")).to_be_visible(timeout=20_000)
    slider_value = page.locator("[data-testid='stSliderThumbValue']").first
    expect(slider_value).to_have_text("canary 5%", timeout=20_000)
    screenshot(page, "automation_approved")


def test_engineer_draws_boxes_with_the_mouse_and_saves_the_label(served_app, served_env, page):
    from core.settings import load_settings
    from db.bootstrap import open_database
    from db.labels import labels_of
    from db.models import ImageMetrics, Inspection

    sign_in(page, served_app, "erin")
    page.get_by_role("link", name="Labelling").click()
    page.get_by_role("heading", name="Labelling").wait_for(timeout=20_000)
    expect(page.get_by_text(re.compile(r"this one because the person and the model disagree"))).to_be_visible(timeout=20_000)
    serial = page.get_by_text(re.compile(r"SN-L\d+-\d+-\d+")).first.inner_text().split(" ")[0]
    canvas = page.locator(".box-editor canvas")
    canvas.wait_for(timeout=20_000)
    screenshot(page, "labelling")
    # Start from nothing, draw one box, make it a chip from the keyboard, then drag it 40 screen pixels right.
    page.get_by_role("button", name="Remove all boxes").click()
    expect(page.locator(".box-editor .count")).to_have_text("0 boxes")
    expect(page.get_by_role("radio", name="pass")).to_be_checked(timeout=20_000)
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.30, box["y"] + box["height"] * 0.30
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 60, y0 + 40, steps=6)
    page.mouse.move(x0 + 120, y0 + 80, steps=6)
    page.mouse.up()
    page.keyboard.press("3")
    page.mouse.move(x0 + 60, y0 + 40)
    page.mouse.down()
    page.mouse.move(x0 + 100, y0 + 40, steps=8)
    page.mouse.up()
    # Resize it by its bottom-right corner; draw a second box and delete it from the keyboard.
    page.mouse.move(x0 + 160, y0 + 80)
    page.mouse.down()
    page.mouse.move(x0 + 180, y0 + 100, steps=8)
    page.mouse.up()
    page.mouse.move(x0 - 100, y0 + 150)
    page.mouse.down()
    page.mouse.move(x0 - 40, y0 + 190, steps=6)
    page.mouse.up()
    expect(page.locator(".box-editor .count")).to_have_text("2 boxes")
    page.keyboard.press("Delete")
    expect(page.locator(".box-editor .count")).to_have_text("1 box")
    # Without the mouse: A adds a box in the middle, 1 makes it a scratch, Delete takes it away again.
    page.keyboard.press("a")
    page.keyboard.press("1")
    expect(canvas).to_have_attribute("aria-label", "Phone image with 2 boxes: chip, scratch")
    page.keyboard.press("Delete")
    expect(canvas).to_have_attribute("aria-label", "Phone image with 1 box: chip")
    expect(page.get_by_role("radio", name="reject")).to_be_checked(timeout=20_000)
    screenshot(page, "labelling_drawn")
    page.get_by_role("button", name="Save label").click()
    expect(page.get_by_text("Saved your label of the previous phone (reject, 1 box)")).to_be_visible(timeout=20_000)
    expect(page.get_by_text(serial)).to_have_count(0)

    database = open_database(load_settings(served_env))
    try:
        with database.read() as session:
            inspection_id = session.query(Inspection.id).filter(Inspection.serial == serial).scalar()
            (label,) = labels_of(session=session, inspection_id=inspection_id)
            width = session.get(ImageMetrics, inspection_id).width
    finally:
        database.dispose()
    scale = width / box["width"]  # image pixels per screen pixel
    (saved,) = label.boxes
    assert (label.labeller, label.verdict.value, saved.class_name) == ("erin", "reject", "chip")
    expected = (box["width"] * 0.30 + 40, box["height"] * 0.30, box["width"] * 0.30 + 180, box["height"] * 0.30 + 100)
    for got, want in zip((saved.x1, saved.y1, saved.x2, saved.y2), expected, strict=True):
        assert abs(got - want * scale) <= 3, (saved, [w * scale for w in expected])


def test_engineer_settles_two_labels_that_disagree(served_app, served_env, page):
    from core.auth import CurrentUser
    from core.labelling import LabelBox, save_label
    from core.settings import load_settings
    from core.vocabulary import Role, Verdict
    from db.bootstrap import open_database
    from db.labels import awaiting_adjudication, label_queue

    database = open_database(load_settings(served_env))
    try:
        with database.read() as session:
            phone = next(item for item in label_queue(session=session, labeller="ana", limit=50) if item.labels == 0)
        save_label(
            database,
            CurrentUser("ana", Role.ENGINEER),
            inspection_id=phone.inspection_id,
            verdict=Verdict.REJECT,
            boxes=[LabelBox("scratch", 200, 150, 320, 190)],
        )
        save_label(
            database, CurrentUser("eli", Role.ENGINEER), inspection_id=phone.inspection_id, verdict=Verdict.REJECT, boxes=[LabelBox("dent", 205, 150, 320, 195)]
        )
        sign_in(page, served_app, "erin")
        page.get_by_role("link", name="Labelling").click()
        page.get_by_text(re.compile(r"Settle disagreements \(\d+\)")).click()
        expect(page.get_by_text("ana's and eli's labels: 1 box(es) with different classes.")).to_be_visible(timeout=20_000)
        page.locator("[data-testid='stImage'] img").first.wait_for(timeout=20_000)
        screenshot(page, "labelling_settle")
        page.get_by_text("eli's (reject, 1 boxes)").click()
        expect(page.get_by_role("radio", name=re.compile(r"^eli's"))).to_be_checked()
        page.get_by_role("textbox", name="Note (why this one)").fill("a dent: the edge is pressed in")
        page.get_by_role("button", name="Adjudicate").click()
        expect(page.get_by_text("Adjudicated: that phone's truth is set")).to_be_visible(timeout=20_000)
        with database.read() as session:
            assert phone.inspection_id not in awaiting_adjudication(session=session)
    finally:
        database.dispose()


def test_a_phone_routed_while_the_queue_is_empty_appears_without_a_click(served_app, served_env, page):
    settings = load_settings(served_env)
    database = open_database(settings)
    try:
        with database.write() as session:
            model_id = get_line(session=session, name="line-1").active_model_id
            line_id = add_line(session=session, name="line-7", actor="test", active_model_id=model_id)
        sign_in(page, served_app, "sam")
        page.goto(f"{served_app}/review?line=line-7")
        page.get_by_text("Nothing waits for a person right now").wait_for(timeout=30_000)
        simulate_line(database, settings, line_id=line_id, line_name="line-7", scenario=get_scenario("normal"), count=1, rate=1000, seed=77, inspector=None)
        Worker(database, settings).run(until_empty=True)
        # No click, no reload: the empty page looks for routed phones by itself (it used to wait for "Check again").
        expect(page.locator("h3 code").first).to_have_text(re.compile("^SN-"), timeout=30_000)
        screenshot(page, "review_queue_phone_arrived")
    finally:
        database.dispose()
