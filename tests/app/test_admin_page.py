"""The Admin page: the people who sign in, who is signed in, and ending a session."""

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
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))


def _sam_signed_in(database):
    """The supervisor sam, signed in from a browser; returns the session."""
    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="admin")
        _, started = start_session(session=session, name="sam", password="line-one-pass", policy=POLICY, client="Chromium", address="10.0.0.7")
    return started


def test_an_admin_sees_the_open_sessions_and_ends_one(database, app_for):
    started = _sam_signed_in(database)
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("root", Role.ADMIN)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    table = at.dataframe[1].value  # [0] is everyone who may sign in
    assert list(table["person"]) == ["sam"] and list(table["from"]) == ["10.0.0.7"]
    at.button(key="admin.end").click().run()  # nothing chosen yet: nothing ended
    assert any("Choose the session to end first" in w.value for w in at.warning)
    with database.read() as session:
        assert find_open(session=session, token=started.token, policy=POLICY) is not None
    at.selectbox(key="admin.session").select_index(0)  # inside the form: sent with its submit
    at.button(key="admin.end").click().run()
    assert not at.exception
    assert any("Ended" in s.value for s in at.success)
    assert at.dataframe[1].value.empty
    with database.read() as session:
        assert find_open(session=session, token=started.token, policy=POLICY) is None
        ended = session.scalar(select(AuditEntry).where(AuditEntry.action == "session.end"))
    assert ended.actor == "root"


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER])
def test_only_admins_reach_the_admin_page(database, app_for, role):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("x", role)
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(PAGE)


def _admin_page(app_for, name: str = "root"):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(name, Role.ADMIN)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def test_an_admin_adds_a_person_who_then_signs_in(database, app_for):
    from db.users import sign_in

    at = _admin_page(app_for)
    at.text_input(key="admin.new_name").input("nina")
    at.selectbox(key="admin.new_role").select(Role.ENGINEER)
    at.text_input(key="admin.new_password").input("nina-pass-2026")
    at.text_input(key="admin.new_password_again").input("nina-pass-2026")
    at.button(key="admin.add").click().run()
    assert not at.exception and any("nina added as engineer" in s.value for s in at.success), [e.value for e in at.error]
    people = at.dataframe[0].value
    assert people[people["person"] == "nina"].iloc[0].to_dict() | {"added": None} == {"person": "nina", "role": "engineer", "may sign in": "yes", "added": None}
    with database.write() as session:
        assert sign_in(session=session, name="nina", password="nina-pass-2026").user == CurrentUser("nina", Role.ENGINEER)
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.create", AuditEntry.entity_id == "nina"))
    assert entry.actor == "root"
    assert at.text_input(key="admin.new_name").value == "" and at.text_input(key="admin.new_password").value == "", "the form is empty again"


def test_two_different_passwords_add_nobody(database, app_for):
    at = _admin_page(app_for)
    at.text_input(key="admin.new_name").input("olga")
    at.text_input(key="admin.new_password").input("olga-pass-2026")
    at.text_input(key="admin.new_password_again").input("olga-pass-2027")
    at.button(key="admin.add").click().run()
    assert any("differ" in e.value for e in at.error)
    assert "olga" not in set(at.dataframe[0].value["person"])
    assert at.text_input(key="admin.new_name").value == "olga", "a refused form keeps what was typed"


def test_disabling_a_person_signs_them_out_everywhere_and_enabling_lets_them_back(database, app_for):
    from db.users import sign_in

    started = _sam_signed_in(database)
    at = _admin_page(app_for)
    at.selectbox(key="admin.person").select("sam").run()
    at.checkbox(key="admin.active.sam").uncheck()
    at.button(key="admin.change").click().run()
    assert not at.exception and any("sam: disabled, signed out everywhere" in s.value for s in at.success), [e.value for e in at.error]
    with database.write() as session:
        assert find_open(session=session, token=started.token, policy=POLICY) is None
        assert sign_in(session=session, name="sam", password="line-one-pass").user is None
    assert any("Nobody is signed in" in i.value for i in at.info), "no session of sam's is listed as open"
    at.checkbox(key="admin.active.sam").check()
    at.selectbox(key="admin.role.sam").select(Role.ENGINEER)
    at.button(key="admin.change").click().run()
    assert any("role supervisor -> engineer" in s.value and "may sign in again" in s.value for s in at.success)
    with database.write() as session:
        assert sign_in(session=session, name="sam", password="line-one-pass").user == CurrentUser("sam", Role.ENGINEER)
        changes = session.scalars(select(AuditEntry).where(AuditEntry.action == "user.change").order_by(AuditEntry.id)).all()
    assert [(c.actor, c.after) for c in changes] == [("root", {"active": False}), ("root", {"role": "engineer", "active": True})]


def test_the_last_active_admin_cannot_be_disabled_or_demoted(database, app_for):
    with database.read() as session:
        from db.users import list_users

        admins = [u.name for u in list_users(session=session) if u.role is Role.ADMIN and u.active]
    if not admins:
        with database.write() as session:
            add_user(session=session, name="boss", role=Role.ADMIN, password="boss-pass-2026", actor="test")
        admins = ["boss"]
    [only] = admins
    at = _admin_page(app_for, only)
    at.selectbox(key="admin.person").select(only).run()
    at.selectbox(key=f"admin.role.{only}").select(Role.MANAGER)
    at.button(key="admin.change").click().run()
    assert any("last active admin" in e.value for e in at.error), [e.value for e in at.error]
    at.selectbox(key=f"admin.role.{only}").select(Role.ADMIN)
    at.checkbox(key=f"admin.active.{only}").uncheck()
    at.button(key="admin.change").click().run()
    assert any("last active admin" in e.value for e in at.error)
    people = at.dataframe[0].value
    assert people[people["person"] == only].iloc[0]["may sign in"] == "yes"


def test_a_new_password_is_set_and_ends_the_old_sessions(database, app_for):
    from db.users import sign_in

    started = _sam_signed_in(database)
    at = _admin_page(app_for)
    at.selectbox(key="admin.person").select("sam").run()
    at.text_input(key="admin.password.sam").input("new-pass-2026")
    at.text_input(key="admin.password_again.sam").input("new-pass-2026")
    at.button(key="admin.change").click().run()
    assert any("password set" in s.value for s in at.success)
    with database.write() as session:
        assert find_open(session=session, token=started.token, policy=POLICY) is None
        assert sign_in(session=session, name="sam", password="line-one-pass").user is None
        assert sign_in(session=session, name="sam", password="new-pass-2026").user is not None
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.change"))
    assert entry.after == {"password": "set"}, "the audit log says a password was set, never what it is"
