"""Users in the database: the first admin, sign-in with a throttle, audited changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.vocabulary import Role
from db.models import AuditEntry, User, utcnow
from db.users import UserError, add_user, list_users, sign_in

pytestmark = pytest.mark.both_backends


def test_init_creates_one_first_admin_with_a_hashed_password(database):
    with database.read() as session:
        users = list_users(session=session)
        stored = session.scalar(select(User.password_hash).where(User.name == "admin"))
    assert [(u.name, u.role) for u in users] == [("admin", Role.ADMIN)]
    assert stored.startswith("scrypt$")


def test_sign_in_throttles_repeated_failures_and_resets_on_success(database):
    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="admin")
    now = utcnow()
    with database.write() as session:
        for attempt in range(3):
            result = sign_in(session=session, name="sam", password="wrong", now=now + timedelta(seconds=attempt))
            assert result.user is None and "Wrong" in result.message
        blocked = sign_in(session=session, name="sam", password="line-one-pass", now=now + timedelta(seconds=3))
        assert blocked.user is None and "try again" in blocked.message, "even the right password waits"
        ok = sign_in(session=session, name="sam", password="line-one-pass", now=now + timedelta(seconds=10))
        assert ok.user is not None and ok.user.role is Role.SUPERVISOR
        assert session.scalar(select(User.failed_logins).where(User.name == "sam")) == 0


def test_unknown_user_gets_the_same_message_as_a_wrong_password(database):
    with database.write() as session:
        assert sign_in(session=session, name="nobody", password="x").message == sign_in(session=session, name="admin", password="wrong").message


def test_user_creation_is_audited_and_checked(database):
    with database.write() as session:
        add_user(session=session, name="erin", role=Role.ENGINEER, password="long-enough", actor="admin")
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.create", AuditEntry.entity_id == "erin"))
        assert entry.actor == "admin" and entry.after == {"role": "engineer", "active": True}
    for name, password in (("erin", "long-enough"), ("bad name", "long-enough"), ("zed", "short")):
        with pytest.raises(UserError), database.write() as session:
            add_user(session=session, name=name, role=Role.ENGINEER, password=password, actor="admin")
