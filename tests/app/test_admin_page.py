"""The Admin page: who is signed in, and ending a session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.auth import CurrentUser
from core.vocabulary import Role
from db.models import AuditEntry
from db.sessions import SessionPolicy, find_open, start_session
from db.users import add_user

PAGE = "../pages/admin.py"


def test_an_admin_sees_the_open_sessions_and_ends_one(database, app_for):
    policy = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))
    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="admin")
        _, started = start_session(session=session, name="sam", password="line-one-pass", policy=policy, client="Chromium", address="10.0.0.7")
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("root", Role.ADMIN)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["person"]) == ["sam"] and list(table["from"]) == ["10.0.0.7"]
    at.button(key="admin.end").click().run()
    assert not at.exception
    assert any("Ended" in s.value for s in at.success)
    assert at.dataframe[0].value.empty
    with database.read() as session:
        assert find_open(session=session, token=started.token, policy=policy) is None
        ended = session.scalar(select(AuditEntry).where(AuditEntry.action == "session.end"))
    assert ended.actor == "root"


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER])
def test_only_admins_reach_the_admin_page(database, app_for, role):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("x", role)
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(PAGE)
