"""Sign-in sessions in the database: opened by a right password, ended by sign-out, an admin, idleness or expiry; audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.auth import token_digest
from core.vocabulary import Role
from db.models import AuditEntry, SignInSession, utcnow
from db.sessions import SessionPolicy, end_by_token, end_session, find_open, list_active, start_session, touch_session
from db.users import add_user

POLICY = SessionPolicy(idle=timedelta(minutes=30), lifetime=timedelta(hours=8))


@pytest.fixture
def sam(database):
    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="admin")
    return database


def _start(database, password="line-one-pass", now=None):
    with database.write() as session:
        return start_session(session=session, name="sam", password=password, policy=POLICY, client="pytest", address="127.0.0.1", now=now)


def _actions(database) -> list[str]:
    with database.read() as session:
        return list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.startswith("session.")).order_by(AuditEntry.id)))


def test_a_right_password_opens_a_session_stored_as_a_hash_and_a_wrong_one_is_audited(sam):
    result, refused = _start(sam, password="wrong-password")
    assert refused is None and "Wrong user name or password" in result.message
    _, started = _start(sam)
    assert started is not None and started.user.name == "sam"
    with sam.read() as session:
        row = session.scalar(select(SignInSession))
        assert row.token_sha256 == token_digest(started.token) != started.token
        assert find_open(session=session, token=started.token, policy=POLICY).user.role is Role.SUPERVISOR
        assert find_open(session=session, token=started.token + "x", policy=POLICY) is None
    assert _actions(sam) == ["session.sign_in_failed", "session.sign_in"]


def test_idle_timeout_and_expiry_end_a_session_and_activity_keeps_it(sam):
    now = utcnow()
    _, started = _start(sam, now=now)
    token = started.token
    with sam.write() as session:
        assert touch_session(session=session, token=token, policy=POLICY, now=now + timedelta(minutes=25)) is not None
    with sam.read() as session:
        # 50 minutes after sign-in, but 25 after the last activity: still open.
        assert find_open(session=session, token=token, policy=POLICY, now=now + timedelta(minutes=50)) is not None
        assert find_open(session=session, token=token, policy=POLICY, now=now + timedelta(minutes=56)) is None  # idle
    with sam.write() as session:
        for minutes in range(20, 8 * 60, 20):  # busy all shift long
            assert touch_session(session=session, token=token, policy=POLICY, now=now + timedelta(minutes=minutes)) is not None
        assert touch_session(session=session, token=token, policy=POLICY, now=now + timedelta(hours=8)) is None  # expired
    with sam.read() as session:
        row = session.scalar(select(SignInSession))
        assert (row.end_reason, row.ended_by) == ("expired", "system")


def test_sign_out_ends_the_session_and_an_admin_ends_another(sam):
    _, first = _start(sam)
    _, second = _start(sam)
    with sam.read() as session:
        assert {s.user for s in list_active(session=session, policy=POLICY)} == {"sam"}
        assert len(list_active(session=session, policy=POLICY)) == 2
    with sam.write() as session:
        assert end_by_token(session=session, token=first.token) == "sam"
        assert end_by_token(session=session, token=first.token) is None  # already ended
        second_id = session.scalar(select(SignInSession.id).where(SignInSession.token_sha256 == token_digest(second.token)))
        assert end_session(session=session, session_id=second_id, actor="admin")
        assert not end_session(session=session, session_id=second_id, actor="admin")
    with sam.read() as session:
        assert list_active(session=session, policy=POLICY) == []
        assert find_open(session=session, token=second.token, policy=POLICY) is None
    assert _actions(sam)[-2:] == ["session.sign_out", "session.end"]
