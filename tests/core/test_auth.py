"""Password hashing, the throttle, and the permission table."""

from __future__ import annotations

import pytest

from core.auth import PERMISSIONS, Action, CurrentUser, PermissionDeniedError, hash_password, may, require, throttle_delay, verify_password
from core.vocabulary import Role


def test_passwords_are_salted_kdf_hashes_that_verify():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second, "a random salt per hash"
    assert "correct horse" not in first
    assert verify_password("correct horse", first)
    assert not verify_password("correct hors", first)


@pytest.mark.parametrize("stored", [None, "", "plain", "md5$abc", "scrypt$x$8$1$AAAA$BBBB", "scrypt$16384$8$1$!!$!!"])
def test_malformed_hashes_never_verify(stored):
    assert not verify_password("anything", stored)


def test_short_passwords_are_refused():
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")


@pytest.mark.parametrize(("failures", "delay"), [(0, 0), (2, 0), (3, 2), (4, 4), (6, 16), (40, 300)])
def test_throttle_doubles_after_the_free_attempts_up_to_a_cap(failures, delay):
    assert throttle_delay(failures) == delay


def test_every_action_has_roles_and_anyone_may_make_the_line_safer():
    assert set(PERMISSIONS) == set(Action)
    assert PERMISSIONS[Action.LEVEL_DOWN] == frozenset(Role)
    assert PERMISSIONS[Action.ROLLBACK] == frozenset(Role)
    assert PERMISSIONS[Action.APPROVE_PROMOTION] == frozenset({Role.MANAGER})


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    [
        (Role.SUPERVISOR, Action.DECIDE_PHONE, True),
        (Role.ENGINEER, Action.DECIDE_PHONE, False),  # engineers label, supervisors decide
        (Role.ADMIN, Action.APPROVE_PROMOTION, False),  # only a manager approves automation
        (Role.SUPERVISOR, Action.VIEW_AUDIT, False),
        (Role.ADMIN, Action.MANAGE_USERS, True),
        (Role.MANAGER, Action.MANAGE_USERS, False),
    ],
)
def test_require(role, action, allowed):
    user = CurrentUser("x", role)
    assert may(role, action) is allowed
    if allowed:
        require(user, action)
    else:
        with pytest.raises(PermissionDeniedError, match="may not"):
            require(user, action)


def test_session_cookies_are_signed_and_a_forged_one_is_refused(tmp_path):
    from core.auth import load_session_secret, new_session_token, sign_session_token, unsign_session_token

    secret = load_session_secret(tmp_path / "session.key")
    assert load_session_secret(tmp_path / "session.key") == secret, "made once, then read"
    assert (tmp_path / "session.key").stat().st_mode & 0o077 == 0, "readable by its owner only"
    token = new_session_token()
    cookie = sign_session_token(token, secret)
    assert unsign_session_token(cookie, secret) == token
    for forged in (None, "", token, f"{token}.", cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), sign_session_token(token, b"x" * 32), cookie + ".x"):
        assert unsign_session_token(forged, secret) is None, forged
