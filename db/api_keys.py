"""API keys of the inspection service: one per station and line, stored hashed, revocable, audited.

A key reads ``slk_<prefix>_<secret>``: the prefix (public, unique) finds the row, the sha256 of
the whole key is compared in constant time. The key is returned once by :func:`create_key` and
never stored; a lost key is revoked and a new one made.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from db import audit
from db.models import ApiKey, Line, utcnow

KEY_PREFIX = "slk"
_KEY = re.compile(r"^slk_([a-z0-9]{8})_([A-Za-z0-9_-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiKeyError(ValueError):
    """A key that cannot be created or revoked as asked (unknown line, duplicate name, no such key)."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as plain data, never the key itself."""

    id: int
    prefix: str
    line_id: int
    line: str
    name: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(key: ApiKey, line_name: str) -> KeyInfo:
    return KeyInfo(key.id, key.prefix, key.line_id, line_name, key.name, key.created_at, key.created_by, key.revoked_at)


def create_key(*, session: Session, line_name: str, name: str, actor: str) -> tuple[KeyInfo, str]:
    """Make a key for station ``name`` on a line; returns its info and the key (shown once)."""
    if not _NAME.match(name):
        raise ApiKeyError(f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    line = session.scalar(select(Line).where(Line.name == line_name))
    if line is None:
        raise ApiKeyError(f"no line named {line_name!r}")
    if session.scalar(select(ApiKey.id).where(ApiKey.line_id == line.id, ApiKey.name == name, ApiKey.revoked_at.is_(None))) is not None:
        raise ApiKeyError(f"line {line_name} already has an active key named {name!r}; revoke it first or choose another name")
    stale = session.scalar(select(ApiKey).where(ApiKey.line_id == line.id, ApiKey.name == name))
    if stale is not None:  # a revoked key's name may be reused: the old row keeps its history under a new name
        stale.name = f"{name}~revoked-{stale.id}"[:64]
        session.flush()
    prefix = secrets.token_hex(4)
    while session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is not None:
        prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(prefix=prefix, key_sha256=_digest(key), line_id=line.id, name=name, created_by=actor)
    session.add(row)
    session.flush()
    audit.record(
        session=session, actor=actor, action="api_key.create", entity="api_key", entity_id=row.id, after={"line": line_name, "name": name, "prefix": prefix}
    )
    return _info(row, line.name), key


def list_keys(*, session: Session, line_name: str | None = None, include_revoked: bool = False) -> list[KeyInfo]:
    query = select(ApiKey, Line.name).join(Line, Line.id == ApiKey.line_id).order_by(Line.name, ApiKey.name)
    if line_name is not None:
        query = query.where(Line.name == line_name)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return [_info(key, name) for key, name in session.execute(query)]


def revoke_key(*, session: Session, key_ref: str, actor: str, line_name: str | None = None) -> KeyInfo:
    """Revoke a key by its prefix (or, with ``line_name``, its name); audited. Revoking twice is refused."""
    query = select(ApiKey, Line.name).join(Line, Line.id == ApiKey.line_id).where(ApiKey.revoked_at.is_(None))
    query = query.where(Line.name == line_name, ApiKey.name == key_ref) if line_name else query.where(ApiKey.prefix == key_ref)
    found = session.execute(query).first()
    if found is None:
        where = f" on line {line_name}" if line_name else ""
        raise ApiKeyError(f"no active key {key_ref!r}{where}; `shadowline keys list` shows them")
    key, name = found
    key.revoked_at = utcnow()
    key.revoked_by = actor
    audit.record(
        session=session, actor=actor, action="api_key.revoke", entity="api_key", entity_id=key.id, before={"line": name, "name": key.name, "prefix": key.prefix}
    )
    session.flush()
    return _info(key, name)


def authenticate(*, session: Session, key: str) -> KeyInfo | None:
    """The active key matching ``key``, or None (malformed, unknown, wrong secret or revoked).

    Plain columns, not the row as an object: the inspection service checks a key on every posted phone.
    """
    match = _KEY.match(key or "")
    if match is None:
        return None
    found = session.execute(_key_query().where(ApiKey.prefix == match.group(1))).first()
    if found is None:
        return None
    *fields, key_sha256 = found  # KeyInfo's fields in its order, then the hash to compare
    info = KeyInfo(*fields)
    if not hmac.compare_digest(key_sha256, _digest(key)) or not info.active:
        return None
    return info


@cache
def _key_query() -> Select[*tuple[Any, ...]]:
    """A key's :class:`KeyInfo` fields in their order, then its hash."""
    return select(
        ApiKey.id, ApiKey.prefix, ApiKey.line_id, Line.name, ApiKey.name, ApiKey.created_at, ApiKey.created_by, ApiKey.revoked_at, ApiKey.key_sha256
    ).join(Line, Line.id == ApiKey.line_id)
