"""Sign-in sessions: started by a correct password, looked up on every page run, ended by sign-out,
by an admin, by the idle timeout or at their expiry. Starts, ends and failed sign-ins are audited.

The browser holds only the random token (in a signed, HttpOnly cookie); rows keep its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth import CurrentUser, new_session_token, token_digest
from core.vocabulary import Role
from db import audit
from db.models import SignInSession, User, utcnow
from db.users import SignInResult, sign_in

#: Seen-at is written at most this often per session (each page run would otherwise be a write).
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class SessionPolicy:
    """How long a sign-in lasts: ``idle`` without a page run, ``lifetime`` at most."""

    idle: timedelta
    lifetime: timedelta

    @classmethod
    def from_minutes(cls, *, idle_minutes: float, hours: float) -> SessionPolicy:
        return cls(idle=timedelta(minutes=idle_minutes), lifetime=timedelta(hours=hours))


@dataclass(frozen=True)
class StartedSession:
    """A successful sign-in: the token for the browser's cookie, and who it is."""

    token: str
    user: CurrentUser
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    """One open session as the admin's list shows it."""

    id: int
    user: str
    role: Role
    started_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    client: str | None
    address: str | None


def start_session(
    *,
    session: Session,
    name: str,
    password: str,
    policy: SessionPolicy,
    client: str | None = None,
    address: str | None = None,
    now: datetime | None = None,
) -> tuple[SignInResult, StartedSession | None]:
    """Check the password (with its throttle) and, when right, open a session; both outcomes audited."""
    now = now or utcnow()
    result = sign_in(session=session, name=name, password=password, now=now)
    if result.user is None:
        audit.record(
            session=session,
            actor=name[:64] or "?",
            action="session.sign_in_failed",
            entity="user",
            entity_id=name[:64],
            note=result.message,
            after={"address": address},
        )
        return result, None
    user = session.scalar(select(User).where(User.name == result.user.name))
    assert user is not None  # sign_in just found it
    token = new_session_token()
    row = SignInSession(
        token_sha256=token_digest(token),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + policy.lifetime,
        client=(client or "")[:200] or None,
        address=(address or "")[:64] or None,
    )
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=user.name,
        action="session.sign_in",
        entity="session",
        entity_id=row.id,
        after={"address": address, "expires_at": row.expires_at.isoformat()},
    )
    return result, StartedSession(token, result.user, row.expires_at)


def _open_row(session: Session, token: str, policy: SessionPolicy, now: datetime) -> SignInSession | None:
    row = session.scalar(select(SignInSession).where(SignInSession.token_sha256 == token_digest(token)))
    if row is None or row.ended_at is not None or not row.user.active:
        return None
    if now >= row.expires_at or now - row.last_seen_at >= policy.idle:
        return None
    return row


@dataclass(frozen=True)
class OpenSession:
    """What a page run needs from its session: who, and when they were last seen."""

    user: CurrentUser
    last_seen_at: datetime

    def touch_due(self, now: datetime) -> bool:
        return now - self.last_seen_at >= TOUCH_EVERY


def find_open(*, session: Session, token: str, policy: SessionPolicy, now: datetime | None = None) -> OpenSession | None:
    """The open session of ``token`` (None when unknown, ended, expired or idle too long); reads only."""
    row = _open_row(session, token, policy, now or utcnow())
    return None if row is None else OpenSession(CurrentUser(row.user.name, Role(row.user.role)), row.last_seen_at)


def touch_session(*, session: Session, token: str, policy: SessionPolicy, now: datetime | None = None) -> CurrentUser | None:
    """Like :func:`find_user`, and record the activity (at most every ``TOUCH_EVERY``) for the idle timeout.

    A session found expired or idle is closed here, so the admin's list and the audit log say why.
    """
    now = now or utcnow()
    row = session.scalar(select(SignInSession).where(SignInSession.token_sha256 == token_digest(token)))
    if row is None or row.ended_at is not None:
        return None
    if _open_row(session, token, policy, now) is None:
        reason = "expired" if now >= row.expires_at else ("idle" if row.user.active else "user inactive")
        _end(session, row, actor=audit.SYSTEM_ACTOR, reason=reason, now=now)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return CurrentUser(row.user.name, Role(row.user.role))


def _end(session: Session, row: SignInSession, *, actor: str, reason: str, now: datetime) -> None:
    row.ended_at = now
    row.ended_by = actor
    row.end_reason = reason
    action = "session.sign_out" if reason == "signed out" else "session.end"
    audit.record(session=session, actor=actor, action=action, entity="session", entity_id=row.id, before={"user": row.user.name}, after={"reason": reason})


def end_by_token(*, session: Session, token: str, now: datetime | None = None) -> str | None:
    """Sign out: end the session of ``token`` (in every tab that shares it); returns its user, or None."""
    row = session.scalar(select(SignInSession).where(SignInSession.token_sha256 == token_digest(token)))
    if row is None or row.ended_at is not None:
        return None
    _end(session, row, actor=row.user.name, reason="signed out", now=now or utcnow())
    return row.user.name


def end_session(*, session: Session, session_id: int, actor: str, now: datetime | None = None) -> bool:
    """An admin ends someone's session (the caller checks the permission); False if it was not open."""
    row = session.get(SignInSession, session_id)
    if row is None or row.ended_at is not None:
        return False
    _end(session, row, actor=actor, reason="ended by admin", now=now or utcnow())
    return True


def end_sessions_of(*, session: Session, user_id: int, actor: str, reason: str, now: datetime | None = None) -> int:
    """End every open session of a user (disabled, password reset); returns how many were open."""
    rows = session.scalars(select(SignInSession).where(SignInSession.user_id == user_id, SignInSession.ended_at.is_(None))).all()
    for row in rows:
        _end(session, row, actor=actor, reason=reason, now=now or utcnow())
    return len(rows)


def list_active(*, session: Session, policy: SessionPolicy, now: datetime | None = None) -> list[ActiveSession]:
    """Open sessions (not ended, not expired, not idle too long), most recently active first."""
    now = now or utcnow()
    rows = session.scalars(
        select(SignInSession)
        .where(SignInSession.ended_at.is_(None), SignInSession.expires_at > now, SignInSession.last_seen_at > now - policy.idle)
        .order_by(SignInSession.last_seen_at.desc())
    ).all()
    return [ActiveSession(r.id, r.user.name, Role(r.user.role), r.created_at, r.last_seen_at, r.expires_at, r.client, r.address) for r in rows]
