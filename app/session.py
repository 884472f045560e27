"""Who is signed in, for each run of a page: the session cookie looked up in the database.

The cookie is set by ``/signin`` (``app/gate.py``); Streamlit hands it to every run through
``st.context.cookies`` (read-only). Nothing about the user is kept in the browser or trusted from
session state: a session ended elsewhere (sign-out in another tab, an admin, the idle timeout)
ends here on the next run, and :func:`watch_session` reruns an idle tab within seconds to notice.

Under Streamlit's AppTest there is no browser connection (no headers, no cookies); tests seed
``st.session_state["auth.user"]`` instead, which a browser's run never reads.
"""

from __future__ import annotations

import json
from functools import cache
from urllib.parse import quote

import streamlit as st

from app import state
from core.auth import SESSION_COOKIE, CurrentUser, load_session_secret, unsign_session_token
from db.models import utcnow
from db.sessions import SessionPolicy, end_by_token, find_open, touch_session

#: The user a test seeds under AppTest (never read for a browser's run).
USER_KEY = "auth.user"
#: How often an open tab checks that its session still holds (signed out in another tab, ended by an admin).
WATCH_SECONDS = 5
SIGN_IN_PATH = "/signin"


@cache
def _secret() -> bytes:
    return load_session_secret(state.settings().session_secret_file)


def _policy() -> SessionPolicy:
    settings = state.settings()
    return SessionPolicy.from_minutes(idle_minutes=settings.session_idle_minutes, hours=settings.session_hours)


def _in_browser() -> bool:
    """A run for a browser connection (AppTest has none: no request headers at all)."""
    return bool(st.context.headers)


def _token() -> str | None:
    return unsign_session_token(st.context.cookies.get(SESSION_COOKIE), _secret())


def current_user() -> CurrentUser | None:
    """The signed-in user of this run, or None; records the activity for the idle timeout."""
    if not _in_browser():
        user = st.session_state.get(USER_KEY)
        return user if isinstance(user, CurrentUser) else None
    token = _token()
    if token is None:
        return None
    database = state.database()
    now = utcnow()
    with database.read() as session:
        found = find_open(session=session, token=token, policy=_policy(), now=now)
    if found is None or not found.touch_due(now):
        return None if found is None else found.user
    with database.write() as session:
        return touch_session(session=session, token=token, policy=_policy(), now=now)


def sign_out() -> None:
    """End this browser's session, in every tab that shares it (audited)."""
    if not _in_browser():
        st.session_state.pop(USER_KEY, None)
        return
    token = _token()
    if token is not None:
        with state.database().write() as session:
            end_by_token(session=session, token=token)


@st.fragment(run_every=WATCH_SECONDS)
def watch_session() -> None:
    """Rerun the whole page as soon as this tab's session has ended elsewhere (draws nothing)."""
    if not _in_browser():
        return
    from app.outage import rerun_when_database_down

    token = _token()
    with rerun_when_database_down(), state.database().read() as session:
        alive = token is not None and find_open(session=session, token=token, policy=_policy()) is not None
    if not alive:
        st.rerun(scope="app")


def signed_out_page(url_path: str) -> None:
    """What a tab shows once its session has ended: a note, and the way back to sign in (to this page)."""
    target = "/" + url_path
    href = SIGN_IN_PATH + ("" if target == "/" else f"?next={quote(target, safe='/')}")
    st.title("Signed out")
    st.info("This browser is signed out (here or in another tab, by an admin, or after a while without use).", icon=":material/logout:")
    st.html(f'<a href="{href}" target="_self">Sign in again</a>')
    if _in_browser():
        st.html(f"<script>window.location.replace({json.dumps(href)});</script>", unsafe_allow_javascript=True)
