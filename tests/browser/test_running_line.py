"""The floor with the line running: new phones arrive *during* the test, as on the walk of issue 13.

The worker and two simulated lines run as subprocesses (the ``running_line`` fixture); the browser
is Chromium at 1440x900, where the Labelling editor does not fit on the screen.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from tests.browser.conftest import REVIEW_LINE, pick, screenshot, sign_in

pytestmark = pytest.mark.browser


def _database(env):
    from core.settings import load_settings
    from db.bootstrap import open_database

    return open_database(load_settings(env))


def _wait_for(condition, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(1.0)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(*end, steps=5)
    page.mouse.up()


def _image_box(canvas_box: dict, width: int, height: int, start, end) -> tuple[float, float, float, float]:
    """Where a drag on the screen should land in image pixels, from the canvas's box at the time of the drag."""
    sx, sy = width / canvas_box["width"], height / canvas_box["height"]
    xs = sorted(((start[0] - canvas_box["x"]) * sx, (end[0] - canvas_box["x"]) * sx))
    ys = sorted(((start[1] - canvas_box["y"]) * sy, (end[1] - canvas_box["y"]) * sy))
    return xs[0], ys[0], xs[1], ys[1]


def test_engineer_labels_a_phone_while_new_phones_arrive(running_line, screen_page):
    from db.labels import label_queue, labels_of
    from db.models import ImageMetrics, Inspection

    url, env = running_line
    page = screen_page
    database = _database(env)
    try:
        # Phones worth a label come from the running line (the simulated inspector errs on purpose).
        _wait_for(lambda: _queue_top(database, label_queue), "a phone worth a label")
        sign_in(page, url, "erin")
        page.get_by_role("link", name="Labelling").click()
        expect(page.get_by_text(re.compile(r"this one because"))).to_be_visible(timeout=30_000)
        serial = page.get_by_text(re.compile(r"^SN-L\d+-\d+-\d+ ·")).first.inner_text().split(" ")[0]
        with database.read() as session:
            inspection_id = session.scalar(select(Inspection.id).where(Inspection.serial == serial))
            metrics = session.get(ImageMetrics, inspection_id)
            width, height = metrics.width, metrics.height
        canvas = page.locator(".box-editor canvas")
        canvas.wait_for(timeout=20_000)
        page.get_by_role("button", name="Remove all boxes").click()
        expect(page.locator(".box-editor .count")).to_have_text("0 boxes")

        # At 1440x900 the editor reaches the bottom of the screen (its message line below is off it).
        box = canvas.bounding_box()
        first = (box["x"] + box["width"] * 0.25, box["y"] + 40), (box["x"] + box["width"] * 0.45, box["y"] + 110)
        _drag(page, *first)
        expected = [_image_box(box, width, height, *first)]
        expect(page.locator(".box-editor .count")).to_have_text("1 box")
        screenshot(page, "running_labelling_first_box")

        # The line keeps running: wait until a newer phone ranks first, then draw again (another rerun),
        # in a shorter window with the page scrolled, the editor's bottom off screen.
        _wait_for(lambda: _queue_top(database, label_queue) not in (None, inspection_id), "a newer phone at the top of the queue")
        page.set_viewport_size({"width": 1440, "height": 720})
        # The engineer looked elsewhere (the editor lost focus): the next press on it focuses it again,
        # which used to scroll the page before the pointer was read.
        page.get_by_text(re.compile(r"phones worth a label; this one because")).click()
        assert not page.evaluate("() => document.activeElement?.classList.contains('box-editor') ?? false")
        page.mouse.move(box["x"] + 10, 400)
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(800)
        before = box
        box = canvas.bounding_box()
        assert box["y"] < before["y"] and box["y"] + box["height"] > 720, f"scrolled, and the editor partly off screen: {box}"
        second = (box["x"] + box["width"] * 0.55, 720 - 170), (box["x"] + box["width"] * 0.75, 720 - 60)
        _drag(page, *second)
        expected.append(_image_box(box, width, height, *second))
        expect(page.locator(".box-editor .count")).to_have_text("2 boxes")
        page.wait_for_timeout(1500)  # the rerun the drawing caused has read the queue again
        expect(page.get_by_text(re.compile(rf"^{serial} ·"))).to_be_visible()
        screenshot(page, "running_labelling_two_boxes")
        page.get_by_role("button", name="Save label").click()
        expect(page.get_by_text("Saved your label of the previous phone (reject, 2 boxes)")).to_be_visible(timeout=30_000)
        screenshot(page, "running_labelling_saved")

        with database.read() as session:
            (label,) = labels_of(session=session, inspection_id=inspection_id)
        assert (label.labeller, label.verdict.value) == ("erin", "reject"), "the label is on the phone the engineer saw"
        saved = sorted((b.x1, b.y1, b.x2, b.y2) for b in label.boxes)
        for got, want in zip(saved, sorted(expected), strict=True):
            assert all(abs(g - w) <= 3 for g, w in zip(got, want, strict=True)), (saved, expected)
    finally:
        database.dispose()


def _queue_top(database, label_queue) -> int | None:
    with database.read() as session:
        queue = label_queue(session=session, labeller="erin", limit=1)
    return queue[0].inspection_id if queue else None


def test_supervisor_skips_and_undoes_a_verdict_while_phones_arrive(running_line, screen_page):
    from db.models import DecisionCorrection, HumanDecision, ReviewTask

    url, env = running_line
    page = screen_page
    database = _database(env)

    def open_tasks() -> int:
        with database.read() as session:
            return session.scalar(select(func.count()).select_from(ReviewTask).where(ReviewTask.status == "open")) >= 3

    try:
        _wait_for(open_tasks, "three phones waiting for a person")
        sign_in(page, url, "sam")
        page.get_by_role("link", name="Review queue").click()
        page.get_by_role("heading", name="Review queue").wait_for()
        pick(page, "Line", REVIEW_LINE)
        expect(page.get_by_text(re.compile(rf"^{REVIEW_LINE} · captured"))).to_be_visible(timeout=30_000)
        serial = page.locator("h3 code").first.inner_text()
        screenshot(page, "running_review")

        # Skip: another phone, and the page says where the skipped one went.
        page.get_by_role("button", name=re.compile("^Skip")).click()
        expect(page.get_by_text(f"Skipped {serial}: it goes to the back of your queue")).to_be_visible(timeout=20_000)
        expect(page.locator("h3 code").first).not_to_have_text(serial, timeout=20_000)
        judged = page.locator("h3 code").first.inner_text()

        # REJECT by mouse: recorded, undo offered, and the button does not keep the focus.
        page.wait_for_timeout(1500)  # a person looks first (a verdict within SHADOWLINE_REVIEW_MIN_LOOK_S of the phone showing is refused)
        page.get_by_role("button", name=re.compile("^REJECT")).click()
        expect(page.get_by_text(f"{judged}: reject recorded.")).to_be_visible(timeout=20_000)
        expect(page.locator("h3 code").first).not_to_have_text(judged, timeout=20_000)
        page.wait_for_timeout(300)
        focused = page.evaluate("() => { const b = document.activeElement?.closest('button'); return b ? b.innerText : null; }")
        assert focused is None, f"focus stayed on {focused!r}: a stray Enter would decide the next phone"
        after_reject = page.locator("h3 code").first.inner_text()
        page.keyboard.press("Enter")
        page.wait_for_timeout(1500)
        expect(page.locator("h3 code").first).to_have_text(after_reject)
        screenshot(page, "running_review_undo_offered")

        page.get_by_role("button", name=re.compile("^Undo: make it PASS")).click()
        expect(page.get_by_text(f"{judged}: reject undone, now pass")).to_be_visible(timeout=20_000)
        screenshot(page, "running_review_undone")
        with database.read() as session:
            decisions = session.execute(select(HumanDecision.id, HumanDecision.verdict).where(HumanDecision.user_name == "sam")).all()
            corrections = session.execute(select(DecisionCorrection.human_decision_id, DecisionCorrection.verdict, DecisionCorrection.is_undo)).all()
        assert [verdict for _, verdict in decisions] == ["reject"], "one decision: Enter did not judge the next phone"
        assert corrections == [(decisions[0][0], "pass", True)]

        # A reload (a new session) opens on the same line: it is in the URL.
        assert f"line={REVIEW_LINE}" in page.url
        page.reload()
        expect(page.get_by_role("combobox", name="Line")).to_have_value(REVIEW_LINE, timeout=30_000)
        expect(page.get_by_text(re.compile(rf"^{REVIEW_LINE} · captured"))).to_be_visible(timeout=30_000)
    finally:
        database.dispose()


def test_engineer_acknowledges_an_incident_on_the_second_line_and_a_manager_approves_from_the_inbox(running_line, browser):
    from core.drift.metrics import DriftConfig
    from core.drift.monitor import DriftMonitor
    from core.drift.reference import load_model_reference, stratify
    from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION
    from db import drift as drift_db
    from db.lines import get_line
    from tests.browser.conftest import PROMOTED_LINE, _seed_canary_request
    from tests.drift_data import add_phones

    url, env = running_line
    database = _database(env)
    try:
        # The lamp of the second line dims while both lines keep running: one cause, several alarms.
        reference = stratify(load_model_reference(PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION), DriftConfig().reference_defect_rate)
        with database.read() as session:
            line_id = get_line(session=session, name=REVIEW_LINE).id
        add_phones(database, reference, 500, seed=91, darken=0.4, line_name=REVIEW_LINE)
        monitor = DriftMonitor(database)
        monitor.check(line_id)
        monitor.check(line_id)
        with database.read() as session:
            (incident,) = drift_db.current_incidents(session=session, line_id=line_id, scopes=(drift_db.Scope.DRIFT,))
        assert incident.headline.metric == "brightness" and incident.related >= 2
        _seed_canary_request(database, reference, ["x.jpg"])

        engineer = browser.new_context(viewport={"width": 1440, "height": 900})
        page = engineer.new_page()
        sign_in(page, url, "erin")
        banner = page.get_by_text(
            re.compile(rf"Drift alarm · {REVIEW_LINE}: input drift — brightness down \d+ % \(severe\), {incident.related} related metrics")
        )
        expect(banner).to_be_visible(timeout=30_000)
        screenshot(page, "running_incident_banner")
        page.get_by_role("link", name="Drift").click()
        page.get_by_role("heading", name="Alarms").wait_for(timeout=30_000)
        expect(page.get_by_text(re.compile(rf"Incident #{incident.id} · input drift — brightness down"))).to_be_visible(timeout=30_000)
        page.get_by_role("textbox", name="What did you see, what is being done?").fill("lamp 3 on line-2 replaced")
        screenshot(page, "running_incident_drift_page")
        page.get_by_role("button", name="Acknowledge", exact=True).click()
        expect(page.get_by_text(re.compile(r"acknowledged by erin: lamp 3 on line-2 replaced")).first).to_be_visible(timeout=30_000)
        expect(banner).to_have_count(0)
        with database.read() as session:
            acknowledged = next(i for i in drift_db.current_incidents(session=session, line_id=line_id) if i.id == incident.id)
        assert acknowledged.acknowledged_by == "erin" and all(a.acknowledged for a in acknowledged.alarms), "acknowledged once, every alarm with it"
        engineer.close()

        # The manager is on the Live line: the inbox says what waits, on which line; approve from there.
        manager = browser.new_context(viewport={"width": 1440, "height": 900})
        page = manager.new_page()
        sign_in(page, url, "mo")
        inbox = page.get_by_text(re.compile(rf"1 request waits for a manager: {PROMOTED_LINE}: move to canary 5% \(asked by erin\)"))
        expect(inbox).to_be_visible(timeout=30_000)
        expect(page.get_by_role("link", name="Automation · 1 waiting")).to_be_visible()
        screenshot(page, "running_manager_inbox")
        page.get_by_role("link", name="Automation · 1 waiting").click()
        page.get_by_role("heading", name="Automation").wait_for(timeout=30_000)
        expect(page.get_by_text(re.compile(rf"Request #\d+ · {PROMOTED_LINE}: move to canary 5%, asked by erin"))).to_be_visible(timeout=30_000)
        page.get_by_role("textbox", name="Decision note").fill("lamps checked, go")
        screenshot(page, "running_manager_request")
        page.get_by_role("button", name=re.compile(r"Approve #\d+")).click()
        expect(page.get_by_text(f"{PROMOTED_LINE} moved up from partial automation to canary 5%")).to_be_visible(timeout=30_000)
        expect(inbox).to_have_count(0)
        screenshot(page, "running_manager_approved")
        with database.read() as session:
            assert get_line(session=session, name=PROMOTED_LINE).level.value == "canary"
        manager.close()
    finally:
        database.dispose()
