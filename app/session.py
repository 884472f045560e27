"""The signed-in user, kept in session state as plain data; the sign-in form."""

from __future__ import annotations

import streamlit as st

from app import state
from core.auth import CurrentUser
from db.users import sign_in

USER_KEY = "auth.user"


def current_user() -> CurrentUser | None:
    user = st.session_state.get(USER_KEY)
    return user if isinstance(user, CurrentUser) else None


def sign_out() -> None:
    st.session_state.pop(USER_KEY, None)


def sign_in_page() -> None:
    """The only page a visitor who is not signed in can see."""
    st.title("Shadowline")
    st.caption("Sign in to watch the line, review phones, and decide how far automation goes.")
    with st.form("auth.form"):
        name = st.text_input("User name", key="auth.name")
        password = st.text_input("Password", type="password", key="auth.password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        with state.database().write() as session:
            result = sign_in(session=session, name=name.strip(), password=password)
        if result.user is None:
            st.error(result.message)
        else:
            st.session_state[USER_KEY] = result.user
            st.rerun()
    st.caption("First time? `shadowline init` printed the admin's password; an admin adds people with `shadowline users add NAME --role ROLE`.")
