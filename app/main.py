"""Shadowline's Streamlit entry point: sign-in, then the pages the user's role may see.

Pages a role may not see are not registered for that session at all, so their URLs lead
nowhere; every action is checked again on the server side by core/ before it is written.
"""

from __future__ import annotations

import streamlit as st

from app import state
from app.session import current_user, sign_in_page, sign_out
from app.widgets import alarm_banner, requests_banner, waiting_requests
from core.vocabulary import Role
from db.migrate import SchemaError

st.set_page_config(page_title="Shadowline", page_icon=":material/visibility:", layout="wide")

try:  # PostgreSQL: the app never migrates; a schema not at this code's revision is one line, and a reload after `shadowline migrate` works
    state.database()
except SchemaError as error:
    st.error(str(error), icon=":material/database:")
    st.stop()

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
]

user = current_user()
if user is None:
    st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:")]).run()
    st.stop()

with st.sidebar:
    st.markdown(f"**{user.name}** · {user.role.value}")
    if st.button("Sign out", key="auth.sign_out"):
        sign_out()
        st.rerun()

alarm_banner(state.database(), user.role.value)
waiting = waiting_requests(state.database())
requests_banner(state.database(), user, waiting)
# Managers see how many requests wait for them in the navigation, wherever they are.
counts = {"automation": f" · {len(waiting)} waiting"} if user.role is Role.MANAGER and waiting else {}
visible = [
    st.Page(path, title=title + counts.get(url, ""), icon=icon, url_path=url, default=i == 0)
    for i, (path, title, icon, url, roles) in enumerate(PAGES)
    if user.role in roles
]
st.navigation(visible).run()
