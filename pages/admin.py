"""Admin: the people who sign in (add, change a role, disable, set a password) and who is signed in right now; all audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import pandas as pd
import streamlit as st

from app import state
from app.session import current_user
from app.widgets import browser_in_words, local_time
from core.auth import MIN_PASSWORD_LENGTH, Action, CurrentUser, PermissionDeniedError, require
from core.vocabulary import Role
from db.sessions import SessionPolicy, end_session, list_active
from db.users import UserError, add_user, change_user, list_users

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

T = TypeVar("T")

ROLE_WORDS = {
    Role.SUPERVISOR: "supervisor: judges phones in the Review queue",
    Role.ENGINEER: "engineer: labels, models, drift, line settings",
    Role.MANAGER: "manager: approves moves up the automation ladder",
    Role.ADMIN: "admin: people, sessions, plant settings",
}


def _apply(user: CurrentUser, password: str, again: str, write: Callable[[Session], T]) -> T | Literal[False]:
    """An admin's change of people, checked and written in one transaction; a refusal is shown and gives False."""
    try:
        require(user, Action.MANAGE_USERS)
        if password != again:
            raise UserError("the two passwords differ")
        with state.database().write() as session:
            return write(session)
    except (UserError, PermissionDeniedError) as error:
        st.error(str(error))
        st.toast(f"Not saved: {error}", icon=":material/error:")  # the form's bottom may be below the fold; a toast is seen
        return False


def _done(flash: str, *forget: str) -> None:
    """Run the page again to show ``flash`` above the refreshed table, these inputs emptied (no password left in a form)."""
    st.session_state["admin.flash"] = flash
    # Emptied at the start of the next run, before the inputs exist: dropping their state here is not
    # enough, the browser sends the typed values back with the rerun (seen in Chromium).
    st.session_state["admin.forget"] = list(forget)
    st.rerun()


def people_section(user: CurrentUser) -> None:
    """Everyone who may sign in, and the forms to add a person or change one."""
    settings = state.settings()
    database = state.database()
    st.subheader("People")
    for key in st.session_state.pop("admin.forget", []):
        st.session_state[key] = ""
    flash = st.session_state.pop("admin.flash", None)
    if flash:
        st.success(flash)  # what the last change did (the page ran again to show it in the table)
    with database.read() as session:
        people = list_users(session=session)
    table = pd.DataFrame(
        [
            {
                "person": p.name,
                "role": p.role.value,
                "may sign in": "yes" if p.active else "no (disabled)",
                "added": local_time(p.created_at, settings.plant_timezone, "%Y-%m-%d"),
            }
            for p in people
        ],
        columns=["person", "role", "may sign in", "added"],
    )
    st.dataframe(table, hide_index=True, width="stretch", key="admin.people")
    add_column, change_column = st.columns(2)
    # Not cleared on submit: a refused name or password keeps what was typed; a success clears the form below.
    with add_column, st.form("admin.add_person"):
        st.markdown("**Add a person**")
        name = st.text_input("User name", key="admin.new_name", help="Letters, digits and . _ @ - (at most 64).")
        role = st.selectbox("Role", list(Role), format_func=ROLE_WORDS.__getitem__, key="admin.new_role")
        hint = f"At least {MIN_PASSWORD_LENGTH} characters; tell it to them yourself."
        first = st.text_input("Password", type="password", key="admin.new_password", help=hint)
        again = st.text_input("Password again", type="password", key="admin.new_password_again")
        if st.form_submit_button("Add", key="admin.add"):
            added = _apply(user, first, again, lambda session: add_user(session=session, name=name.strip(), role=Role(role), password=first, actor=user.name))
            if added is not False:
                _done(
                    f"{name.strip()} added as {Role(role).value}: they sign in with the password you chose.",
                    "admin.new_name",
                    "admin.new_password",
                    "admin.new_password_again",
                )
    with change_column:
        st.markdown("**Change a person**")
        names = [p.name for p in people]
        chosen = st.selectbox("Person", names, key="admin.person")
        person = next((p for p in people if p.name == chosen), None)
        if person is None:
            return
        # Keys carry the person's name: choosing another one starts the form from their own settings.
        with st.form(f"admin.change.{person.name}"):
            roles = list(Role)
            new_role = st.selectbox("Role", roles, index=roles.index(person.role), format_func=ROLE_WORDS.__getitem__, key=f"admin.role.{person.name}")
            active = st.checkbox(
                "May sign in", value=person.active, key=f"admin.active.{person.name}", help="Unticked: no sign-ins, and their open sessions end now."
            )
            password = st.text_input("New password (leave empty to keep theirs)", type="password", key=f"admin.password.{person.name}")
            password_again = st.text_input("New password again", type="password", key=f"admin.password_again.{person.name}")
            if st.form_submit_button("Save", key="admin.change"):
                changed = _apply(
                    user,
                    password,
                    password_again,
                    lambda session: change_user(
                        session=session, name=person.name, actor=user.name, role=Role(new_role), active=active, password=password or None
                    ),
                )
                if changed == []:
                    st.info("Nothing to change.")
                elif changed:
                    _done(f"{person.name}: " + "; ".join(changed) + ".", f"admin.password.{person.name}", f"admin.password_again.{person.name}")


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
        # No session chosen at first: the newest is usually the admin's own, and one click would end it.
        chosen = st.selectbox("Session", list(labels), index=None, placeholder="choose the session to end", format_func=labels.__getitem__, key="admin.session")
        ended = st.form_submit_button("End session", key="admin.end")
    if ended and chosen is None:
        st.warning("Choose the session to end first.")
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
                "browser": browser_in_words(s.client),
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
people_section(user)
sessions_section(user)
