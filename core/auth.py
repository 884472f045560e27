"""Who may do what: password hashing, the permission table, and the sign-in throttle.

Passwords are hashed with scrypt (a memory-hard KDF, in Python's standard library) with a random
salt per user; only ``scrypt$n$r$p$salt$hash`` is stored. Permissions are data: one table from
action to the roles allowed. Every write path calls :func:`require` on the server side; a page
hiding a button is not a check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from core.vocabulary import Role

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8
#: Failed sign-ins allowed before each further attempt must wait (doubling, up to the cap).
FREE_ATTEMPTS = 3
MAX_DELAY_SECONDS = 300.0


class Action(StrEnum):
    """Everything in the app that changes state."""

    DECIDE_PHONE = "decide_phone"
    LABEL_PHONE = "label_phone"
    LEVEL_DOWN = "level_down"
    LEVEL_UP = "level_up"
    REQUEST_PROMOTION = "request_promotion"
    APPROVE_PROMOTION = "approve_promotion"
    ROLLBACK = "rollback"
    SWITCH_MODEL = "switch_model"
    MANAGE_USERS = "manage_users"
    EDIT_SETTINGS = "edit_settings"
    VIEW_AUDIT = "view_audit"
    VIEW_COMPARISON = "view_comparison"
    VIEW_DRIFT = "view_drift"
    MANAGE_SESSIONS = "manage_sessions"
    ACKNOWLEDGE_ALARM = "acknowledge_alarm"
    SET_DRIFT_REFERENCE = "set_drift_reference"
    EDIT_DRIFT_SETTINGS = "edit_drift_settings"
    EDIT_ANSWER_SETTINGS = "edit_answer_settings"


_ALL = frozenset(Role)
PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.DECIDE_PHONE: frozenset({Role.SUPERVISOR}),
    Action.LABEL_PHONE: frozenset({Role.ENGINEER}),
    Action.LEVEL_DOWN: _ALL,  # anyone may make the line safer at once
    Action.LEVEL_UP: frozenset({Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
    Action.REQUEST_PROMOTION: frozenset({Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER}),
    Action.APPROVE_PROMOTION: frozenset({Role.MANAGER}),
    Action.ROLLBACK: _ALL,
    Action.SWITCH_MODEL: frozenset({Role.ENGINEER, Role.MANAGER}),
    Action.MANAGE_USERS: frozenset({Role.ADMIN}),
    Action.EDIT_SETTINGS: frozenset({Role.ADMIN}),
    Action.VIEW_AUDIT: frozenset({Role.MANAGER, Role.ADMIN}),
    Action.VIEW_COMPARISON: frozenset({Role.ENGINEER, Role.MANAGER}),
    Action.VIEW_DRIFT: frozenset({Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
    Action.MANAGE_SESSIONS: frozenset({Role.ADMIN}),
    Action.ACKNOWLEDGE_ALARM: frozenset({Role.ENGINEER, Role.MANAGER}),
    # Which production period counts as normal is a quality decision, not an admin's.
    Action.SET_DRIFT_REFERENCE: frozenset({Role.ENGINEER, Role.MANAGER}),
    # Loosening a threshold hides drift: the engineers who watch it and the admin, all audited.
    Action.EDIT_DRIFT_SETTINGS: frozenset({Role.ENGINEER, Role.ADMIN}),
    # The inspection service's answer budget and fail-safe: the engineers who tune the line and the admin, audited.
    Action.EDIT_ANSWER_SETTINGS: frozenset({Role.ENGINEER, Role.ADMIN}),
}


class PermissionDeniedError(PermissionError):
    """A user tried an action their role does not allow."""


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user as plain data (what pages keep in session state)."""

    name: str
    role: Role


def may(role: Role, action: Action) -> bool:
    return role in PERMISSIONS[action]


def require(user: CurrentUser, action: Action) -> None:
    """Raise :class:`PermissionDeniedError` unless ``user``'s role allows ``action``."""
    if not may(user.role, action):
        allowed = ", ".join(sorted(r.value for r in PERMISSIONS[action]))
        raise PermissionDeniedError(f"{user.name} ({user.role.value}) may not {action.value.replace('_', ' ')}; allowed: {allowed}")


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, self-describing so parameters can change later."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; constant-time comparison, False for malformed hashes."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def throttle_delay(failed_attempts: int) -> float:
    """Seconds a user must wait before the next sign-in attempt after ``failed_attempts`` failures."""
    if failed_attempts < FREE_ATTEMPTS:
        return 0.0
    return float(min(MAX_DELAY_SECONDS, 2 ** (failed_attempts - FREE_ATTEMPTS + 1)))


def generate_password() -> str:
    """A random password for a first admin, printed once."""
    return secrets.token_urlsafe(12)


#: Name of the browser cookie that carries a sign-in session (its value: ``token.signature``).
SESSION_COOKIE = "shadowline_session"


def new_session_token() -> str:
    """A random, opaque session token (256 bits); the browser keeps it, the database only its hash."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The sha256 kept in the database for a session token (the token is random: no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign_session_token(token: str, secret: bytes) -> str:
    """The cookie value for ``token``: the token and its HMAC-SHA256 under the installation's secret."""
    signature = hmac.new(secret, token.encode(), hashlib.sha256).digest()
    return f"{token}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


def unsign_session_token(value: str | None, secret: bytes) -> str | None:
    """The token inside a cookie value, or None when it is missing, malformed or not signed by ``secret``.

    A forged or truncated cookie is refused here, before any database lookup.
    """
    if not value or value.count(".") != 1 or len(value) > 200:
        return None
    token = value.split(".", 1)[0]
    return token if hmac.compare_digest(sign_session_token(token, secret), value) else None


def load_session_secret(path: Path) -> bytes:
    """The installation's key for signing session cookies, made once (32 random bytes, mode 0600)."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    try:
        os.link(temporary, path)  # first writer wins: two processes starting at once agree on one key
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes()
