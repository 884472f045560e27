"""Shadowline's Streamlit script: the signed-in user, then the pages their role may see.

Served by ``app/asgi.py`` (``st.App``), whose gate sends a page load without a session to
``/signin?next=<page>``. Every page's URL is registered for every role, so a link or a reload never
leads to "Page not found": a page a role may not see is hidden from its menu and, opened by its
URL, says plainly who it is for. Every action is checked again on the server side by ``core/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from app import state
from app.outage import guard_page
from app.session import current_user, sign_out, signed_out_page, watch_session
from app.widgets import alarm_banner, requests_banner, waiting_requests
from core.auth import CurrentUser
from core.vocabulary import Role
from db.migrate import SchemaError

# A local icon: a ":material/...:" page icon makes the browser fetch an SVG from fonts.gstatic.com.
st.set_page_config(page_title="Shadowline", page_icon=str(Path(__file__).with_name("icon.png")), layout="wide")

ALL_ROLES = frozenset(Role)
#: Page file, title, icon, url path, and the roles that see it.
PAGES = [
    ("../pages/live_line.py", "Live line", ":material/conveyor_belt:", "live", ALL_ROLES),
    ("../pages/review_queue.py", "Review queue", ":material/rule:", "review", frozenset({Role.SUPERVISOR})),
    ("../pages/shadow_comparison.py", "Shadow comparison", ":material/compare:", "comparison", frozenset({Role.ENGINEER, Role.MANAGER})),
    ("../pages/labelling.py", "Labelling", ":material/label:", "labelling", frozenset({Role.ENGINEER})),
    ("../pages/automation.py", "Automation", ":material/tune:", "automation", ALL_ROLES),
    ("../pages/models.py", "Models", ":material/model_training:", "models", frozenset({Role.ENGINEER, Role.MANAGER, Role.ADMIN})),
    ("../pages/drift.py", "Drift", ":material/monitoring:", "drift", frozenset({Role.ENGINEER, Role.MANAGER, Role.ADMIN})),
    ("../pages/audit_log.py", "Audit log", ":material/history:", "audit", frozenset({Role.MANAGER, Role.ADMIN})),
    ("../pages/admin.py", "Admin", ":material/admin_panel_settings:", "admin", frozenset({Role.ADMIN})),
]


def who_may_see(roles: frozenset[Role]) -> str:
    """``frozenset({ENGINEER, ADMIN})`` -> ``"engineers and admins"``, in the order of :class:`Role`."""
    names = [f"{role.value}s" for role in Role if role in roles]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def not_for_you(title: str, roles: frozenset[Role], user: CurrentUser) -> Callable[[], None]:
    """The page shown instead of one ``user``'s role may not see (opened by a link or a bookmark)."""

    def page() -> None:
        st.title(title)
        st.warning(f"This page is for {who_may_see(roles)}; you are signed in as {user.name} ({user.role.value}).", icon=":material/lock:")
        st.page_link(PAGES[0][0], label="Go to the Live line", icon=":material/conveyor_belt:")

    return page


def signed_out(url: str) -> Callable[[], None]:
    return lambda: signed_out_page(url)


def _give_back_held_phone(user: CurrentUser) -> None:
    """Signing out gives back the phone the Review queue held for this person (its claim would keep it from others for minutes)."""
    from core.reviewing import give_back

    held = st.session_state.get("review.task")  # pages/review_queue.py's TASK_KEY
    if held is None or user.role is not Role.SUPERVISOR:
        return
    try:
        give_back(state.database(), user, task_id=held.task_id)
    except Exception:  # signing out must not fail: the claim then runs out on its own
        logging.getLogger("shadowline.app").exception("giving back %s on sign-out failed", held.serial)


def app() -> None:
    """The signed-in user's navigation and the page they opened."""
    try:  # PostgreSQL: the app never migrates; a schema not at this code's revision is one line, and a reload after `shadowline migrate` works
        state.database()
    except SchemaError as error:
        st.error(str(error), icon=":material/database:")
        st.stop()

    user = current_user()
    if user is None:
        # Every URL answers (no "Page not found"); the tab is sent to sign in and back to this page.
        pages = [st.Page(signed_out(""), title="Shadowline", url_path="start", default=True)]
        pages += [st.Page(signed_out(url), title=title, icon=icon, url_path=url) for _, title, icon, url, _ in PAGES]
        st.navigation(pages, position="hidden").run()
        st.stop()

    with st.sidebar:
        st.markdown(f"**{user.name}** · {user.role.value}")
        if st.button("Sign out", key="auth.sign_out"):
            _give_back_held_phone(user)
            sign_out()
            st.rerun()
        watch_session()

    alarm_banner(state.database(), user.role.value)
    waiting = waiting_requests(state.database())
    requests_banner(state.database(), user, waiting)
    # Managers see how many requests wait for them in the navigation, wherever they are.
    counts = {"automation": f" · {len(waiting)} waiting"} if user.role is Role.MANAGER and waiting else {}
    pages = [
        st.Page(path, title=title + counts.get(url, ""), icon=icon, url_path=url)
        if user.role in roles
        else st.Page(not_for_you(title, roles, user), title=title, icon=icon, url_path=url, visibility="hidden")
        for path, title, icon, url, roles in PAGES
    ]
    # Streamlit serves its default page at "/" only; a hidden one that opens the Live line keeps "/live" a real address.
    start = st.Page(lambda: st.switch_page(pages[0]), title="Shadowline", url_path="start", default=True, visibility="hidden")
    st.navigation([start, *pages]).run()


# A database restart or network blip shows one line and the page comes back by itself (app/outage.py).
guard_page(app)
