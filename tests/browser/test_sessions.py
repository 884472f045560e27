"""Signing in as people use a browser: bookmarks, reloads, second tabs, signing out; nothing fetched from outside.

On the running installation (``running_line``: the worker and simulated lines feed phones during the test),
Chromium at 1440x900. Every page of every role is opened, reloaded and photographed into
``test-artifacts/screenshots/ROLE/PAGE.png``; every request the browser makes is recorded, and one that
leaves 127.0.0.1 fails the test (an offline plant must not log a failure on every page).
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from tests.browser.conftest import PASSWORDS, ROLES, screenshot

pytestmark = pytest.mark.browser

#: The pages each person can open, by URL path and heading (the menu of their role).
PAGES_OF = {
    "sam": [("review", "Review queue"), ("live", "Live line"), ("automation", "Automation")],
    "erin": [
        ("labelling", "Labelling"),
        ("live", "Live line"),
        ("comparison", "Shadow comparison"),
        ("automation", "Automation"),
        ("models", "Models"),
        ("drift", "Drift"),
    ],
    "mo": [
        ("audit", "Audit log"),
        ("live", "Live line"),
        ("comparison", "Shadow comparison"),
        ("automation", "Automation"),
        ("models", "Models"),
        ("drift", "Drift"),
    ],
    "ada": [("admin", "Admin"), ("live", "Live line"), ("automation", "Automation"), ("models", "Models"), ("drift", "Drift"), ("audit", "Audit log")],
}


@pytest.fixture
def context(browser):
    """A browser profile at 1440x900 that records every request leaving 127.0.0.1 in ``context.outside``."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    outside: list[str] = []

    def record(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob") and parts.hostname != "127.0.0.1":
            outside.append(request.url)

    context.on("request", record)
    context.outside = outside  # type: ignore[attr-defined]
    yield context
    context.close()


def _fill_sign_in(page, name: str) -> None:
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()


def _on_page(page, url: str, path: str, heading: str, name: str) -> None:
    """The page ``path`` is shown, signed in as ``name``, at its own URL."""
    expect(page.get_by_role("heading", name=heading, exact=True).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"{name} · ")).to_be_visible(timeout=10_000)
    # The first page (Live line) is the app's default, whose address Streamlit writes as "/". A page with a
    # line picker adds the chosen line (``?line=``), so a reload opens on it.
    parts = urlsplit(page.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" in (f"{url}/{path}", f"{url}/" if path == "live" else None)
    assert parts.query == "" or parts.query.startswith("line="), page.url
    assert page.get_by_text("Page not found").count() == 0


def _photograph(page, name: str) -> None:
    """A screenshot once the page's run has finished (Streamlit's "Running"/"Stop" widget gone)."""
    with contextlib.suppress(AssertionError):  # a page that keeps refreshing: photograph it as it is
        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=5_000)
    screenshot(page, name)


#: For each person, a page their role may not see, and what it says instead.
NOT_FOR = {
    "sam": ("models", "This page is for engineers, managers and admins; you are signed in as sam (supervisor)."),
    "erin": ("audit", "This page is for managers and admins; you are signed in as erin (engineer)."),
    "mo": ("review", "This page is for supervisors; you are signed in as mo (manager)."),
    "ada": ("labelling", "This page is for engineers; you are signed in as ada (admin)."),
}


@pytest.mark.parametrize("name", list(PAGES_OF))
def test_a_bookmark_opens_after_sign_in_every_page_survives_a_reload_and_others_say_whom_they_are_for(running_line, context, name):
    url, _env = running_line
    page = context.new_page()
    role = ROLES[name].value
    bookmark, heading = PAGES_OF[name][0]
    # A bookmark opened signed out: the sign-in form, then that very page.
    page.goto(f"{url}/{bookmark}")
    assert urlsplit(page.url).path == "/signin"
    _fill_sign_in(page, name)
    _on_page(page, url, bookmark, heading, name)
    for index, (path, heading) in enumerate(PAGES_OF[name]):
        if index:
            page.get_by_role("link", name=heading, exact=True).click()
            _on_page(page, url, path, heading, name)
        page.reload()
        _on_page(page, url, path, heading, name)
        _photograph(page, f"{role}/{path}")
    path, message = NOT_FOR[name]
    page.goto(f"{url}/{path}")
    expect(page.get_by_text(message)).to_be_visible(timeout=60_000)
    assert page.get_by_text("Page not found").count() == 0
    _photograph(page, f"{role}/not_for_{path}")
    assert context.outside == [], f"requests left the machine: {sorted(set(context.outside))[:5]}"


def test_a_second_tab_is_signed_in_and_signing_out_in_one_ends_both(running_line, context):
    from core.settings import load_settings
    from db.bootstrap import open_database
    from db.models import AuditEntry

    url, env = running_line
    first = context.new_page()
    first.goto(f"{url}/automation")
    _fill_sign_in(first, "erin")
    _on_page(first, url, "automation", "Automation", "erin")
    second = context.new_page()
    second.goto(f"{url}/drift")
    _on_page(second, url, "drift", "Drift", "erin")  # no form: the same browser, the same sign-in
    first.get_by_role("button", name="Sign out").click()
    expect(first.get_by_role("button", name="Sign in")).to_be_visible(timeout=20_000)
    # The other tab notices by itself within seconds and goes to the form, keeping its page for later.
    expect(second.get_by_role("button", name="Sign in")).to_be_visible(timeout=30_000)
    assert second.url == f"{url}/signin?next=/drift"
    screenshot(second, "sign_in")
    second.goto(f"{url}/drift")
    assert urlsplit(second.url).path == "/signin", "a reload does not bring the session back"
    database = open_database(load_settings(env))
    try:
        with database.read() as session:
            actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "erin", AuditEntry.action.startswith("session."))))
    finally:
        database.dispose()
    assert actions[-2:] == ["session.sign_in", "session.sign_out"]
