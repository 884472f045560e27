"""Users and sign-in: accounts with roles, password checks with a throttle, all changes audited."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.auth import CurrentUser, hash_password, throttle_delay, verify_password
from core.vocabulary import Role
from db import audit
from db.models import ReviewTask, User, utcnow

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class UserError(ValueError):
    """A user cannot be created or changed as asked."""


@dataclass(frozen=True)
class UserRow:
    name: str
    role: Role
    active: bool
    created_at: datetime


@dataclass(frozen=True)
class SignInResult:
    """The answer to a sign-in attempt; ``user`` is None when it failed, with a message why."""

    user: CurrentUser | None
    message: str
    retry_after_s: float = 0.0


def add_user(*, session: Session, name: str, role: Role, password: str, actor: str) -> None:
    """Create a user (the caller checks the actor may manage users)."""
    if not USER_NAME.match(name):
        raise UserError(f"invalid user name {name!r}: letters, digits and . _ @ - (at most 64)")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise UserError(f"user {name!r} already exists")
    try:
        password_hash = hash_password(password)
    except ValueError as error:
        raise UserError(str(error)) from None
    session.add(User(name=name, role=role.value, password_hash=password_hash))
    audit.record(session=session, actor=actor, action="user.create", entity="user", entity_id=name, after={"role": role.value, "active": True})
    session.flush()


def change_user(*, session: Session, name: str, actor: str, role: Role | None = None, active: bool | None = None, password: str | None = None) -> list[str]:
    """Change a user's role, whether they may sign in, or their password (the caller checks the actor
    may manage users); audited, returns what changed in words (empty when nothing did).

    Disabling someone or setting their password ends their open sessions at once (every tab of
    theirs is signed out); a new role applies from their next page. The last active admin can be
    neither disabled nor given another role: nobody could manage users any more.
    """
    found = session.scalar(select(User).where(User.name == name))
    if found is None:
        raise UserError(f"no user {name!r}")
    if found.role == Role.ADMIN.value and found.active and (role not in (None, Role.ADMIN) or active is False):
        # An admin may stop being one: every active admin's row is locked, in one order, so two admins
        # demoting each other at the same moment cannot both pass the check (nor deadlock).
        admins = session.scalars(select(User).where(User.role == Role.ADMIN.value, User.active.is_(True)).order_by(User.id).with_for_update()).all()
        if [admin.id for admin in admins] == [found.id]:
            raise UserError(f"{name} is the last active admin: make someone else an admin first")
    user = session.scalar(select(User).where(User.id == found.id).with_for_update())
    assert user is not None
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    if role is not None and role.value != user.role:
        before["role"], after["role"] = user.role, role.value
    if active is not None and active != user.active:
        before["active"], after["active"] = user.active, active
    if password is not None:
        try:
            user.password_hash = hash_password(password)
        except ValueError as error:
            raise UserError(str(error)) from None
        user.failed_logins = 0
        user.last_failed_at = None
        after["password"] = "set"
    if not after:
        return []
    if "role" in after:
        user.role = str(after["role"])
    if "active" in after:
        user.active = bool(after["active"])
    audit.record(session=session, actor=actor, action="user.change", entity="user", entity_id=name, before=before, after=after)
    if after.get("active") is False:
        # The phones they held in the Review queue go back to it at once, not when their claims run out.
        session.execute(
            update(ReviewTask)
            .where(ReviewTask.claimed_by == name, ReviewTask.status == "claimed")
            .values(status="open", claimed_by=None, claim_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    if after.get("active") is False or "password" in after:
        from db.sessions import end_sessions_of  # db.sessions signs in through this module

        end_sessions_of(session=session, user_id=user.id, actor=actor, reason="user disabled" if after.get("active") is False else "password set")
    words = []
    if "role" in after:
        words.append(f"role {before['role']} -> {after['role']}")
    if "active" in after:
        words.append("may sign in again" if after["active"] else "disabled, signed out everywhere")
    if "password" in after:
        words.append("password set, signed out everywhere")
    return words


def list_users(*, session: Session) -> list[UserRow]:
    return [UserRow(u.name, Role(u.role), u.active, u.created_at) for u in session.scalars(select(User).order_by(User.name))]


def count_users(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def sign_in(*, session: Session, name: str, password: str, now: datetime | None = None) -> SignInResult:
    """Check a password; failures are counted and slow down the next attempts of that account."""
    now = now or utcnow()
    # The user's row is locked for the check and the count: without it, attempts at the same moment
    # all read the same failure count under READ COMMITTED and each write count+1 (lost updates that
    # would let a guesser past the throttle). A row lock, not a retry loop: the unit is tiny.
    user = session.scalar(select(User).where(User.name == name).with_for_update())
    if user is None or not user.active:
        # Same message as a wrong password: do not reveal which accounts exist.
        return SignInResult(None, "Wrong user name or password.")
    wait = throttle_delay(user.failed_logins)
    if user.last_failed_at is not None and wait > 0:
        ready_at = user.last_failed_at + timedelta(seconds=wait)
        if now < ready_at:
            remaining = (ready_at - now).total_seconds()
            return SignInResult(None, f"Too many failed attempts: try again in {remaining:.0f} s.", remaining)
    if not verify_password(password, user.password_hash):
        user.failed_logins += 1
        user.last_failed_at = now
        delay = throttle_delay(user.failed_logins)
        suffix = f" Next attempt possible in {delay:.0f} s." if delay else ""
        return SignInResult(None, "Wrong user name or password." + suffix, delay)
    user.failed_logins = 0
    user.last_failed_at = None
    return SignInResult(CurrentUser(user.name, Role(user.role)), f"Signed in as {user.name}.")
