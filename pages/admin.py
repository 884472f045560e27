"""Admin: who is signed in right now, and ending a session (audited)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.session import current_user
from app.widgets import local_time
from core.auth import Action, CurrentUser, PermissionDeniedError, require
from db.sessions import SessionPolicy, end_session, list_active


def sessions_section(user: CurrentUser) -> None:
    """Active sign-in sessions, newest activity first, with a way to end one."""
    settings = state.settings()
    database = state.database()
    policy = SessionPolicy.from_minutes(idle_minutes=settings.session_idle_minutes, hours=settings.session_hours)
    st.subheader("Signed-in sessions")
    st.caption(
        f"A session ends when its person signs out, after {settings.session_idle_minutes:g} minutes without use "
        f"(`SHADOWLINE_SESSION_IDLE_MINUTES`), {settings.session_hours:g} hours after sign-in (`SHADOWLINE_SESSION_HOURS`), "
        "or when you end it here. Times in " + settings.plant_timezone + "."
    )
    with database.read() as session:
        active = list_active(session=session, policy=policy)
    if not active:
        st.info("Nobody is signed in.")
        return
    zone = settings.plant_timezone
    labels = {s.id: f"#{s.id} {s.user} ({s.role.value}), signed in {local_time(s.started_at, zone, '%H:%M')}" for s in active}
    with st.form("admin.end_session"):
        chosen = st.selectbox("Session", list(labels), format_func=labels.__getitem__, key="admin.session")
        ended = st.form_submit_button("End session", key="admin.end")
    if ended and chosen is not None:
        require(user, Action.MANAGE_SESSIONS)
        with database.write() as session:
            done = end_session(session=session, session_id=int(chosen), actor=user.name)
            active = list_active(session=session, policy=policy)
        if done:
            st.success(f"Ended {labels[chosen]}: every tab of that browser is signed out within seconds.")
        else:
            st.warning("That session had already ended.")
    table = pd.DataFrame(
        [
            {
                "session": s.id,
                "person": s.user,
                "role": s.role.value,
                "signed in": local_time(s.started_at, zone, "%Y-%m-%d %H:%M"),
                "last active": local_time(s.last_seen_at, zone, "%H:%M:%S"),
                "ends at the latest": local_time(s.expires_at, zone, "%Y-%m-%d %H:%M"),
                "from": s.address or "",
                "browser": (s.client or "")[:60],
            }
            for s in active
        ],
        columns=["session", "person", "role", "signed in", "last active", "ends at the latest", "from", "browser"],
    )
    st.dataframe(table, hide_index=True, width="stretch")


user = current_user()
try:
    require(user, Action.MANAGE_SESSIONS)  # type: ignore[arg-type]
except (PermissionDeniedError, AttributeError):
    st.error("This page is for admins.")
    st.stop()
assert user is not None
st.title("Admin")
sessions_section(user)
