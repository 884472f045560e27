"""Blue/green model versions per line: a candidate (green) shadows the active (blue); switch; roll back.

The worker runs the candidate beside the active model on the same phones, so the two can be
compared before a switch. Switching makes the candidate active and keeps the old version as the
line's *previous* (and as its candidate, so it stays loaded and keeps being compared): rollback
swaps them back and takes effect on the worker's next batch. The worker also refuses to write a
phone decided by a version that stopped being active while it was inspecting (db/pipeline.py).
Engineers switch freely below canary; in canary and full automation a manager must approve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.auth import Action, CurrentUser, require
from db import ladder as ladder_db
from db.engine import Database
from db.lines import LineConfig, get_line, update_settings
from db.models import ModelVersion


class DeploymentError(ValueError):
    """A model change that is refused; the message says why."""


@dataclass(frozen=True)
class SwitchOutcome:
    applied: bool
    message: str
    request_id: int | None = None


def _model_id(session: Session, version: str) -> int:
    model_id = session.scalar(select(ModelVersion.id).where(ModelVersion.version == version))
    if model_id is None:
        known = ", ".join(session.scalars(select(ModelVersion.version).order_by(ModelVersion.version)))
        raise DeploymentError(f"no registered model version {version!r}; registered: {known or 'none'}")
    return model_id


def require_register(user: CurrentUser) -> None:
    """Registering a model version is a deployment step: engineers and managers."""
    require(user, Action.SWITCH_MODEL)


def set_candidate(database: Database, user: CurrentUser, *, line_name: str, version: str | None, note: str | None = None) -> str:
    """Make ``version`` the line's candidate (green), running in shadow beside the active model; None removes it."""
    require(user, Action.SWITCH_MODEL)
    with database.write() as session:
        line = get_line(session=session, name=line_name, for_update=True)
        model_id = _model_id(session, version) if version else None
        if model_id is not None and model_id == line.active_model_id:
            raise DeploymentError(f"{version} is already the active model of {line.name}")
        update_settings(session=session, line_id=line.id, actor=user.name, note=note, candidate_model_id=model_id)
    return f"{line_name}: candidate is now {version or 'none'}"


def apply_switch(session: Session, line: LineConfig, *, actor: str, note: str | None) -> str:
    """Swap candidate and active (the checks are the caller's)."""
    if line.candidate_model_id is None:
        raise DeploymentError(f"{line.name} has no candidate model to switch to")
    update_settings(
        session=session,
        line_id=line.id,
        actor=actor,
        note=note,
        active_model_id=line.candidate_model_id,
        candidate_model_id=line.active_model_id,
        previous_model_id=line.active_model_id,
    )
    return f"{line.name}: {line.candidate_model_version} is active; {line.active_model_version} stays loaded for rollback"


def switch(database: Database, user: CurrentUser, *, line_name: str, to_version: str | None = None, note: str | None = None) -> SwitchOutcome:
    """Make the candidate (or ``to_version``, which must be the candidate) active; a request for a manager in canary or full.

    The line is locked and read afresh first (:func:`db.lines.lock_line`): of two people switching
    at once, the second sees the first one's result. A page passes ``to_version`` (the candidate it
    showed), so the second is refused instead of swapping the versions back: after a switch the old
    version is the candidate, and a bare "switch" would bring it back.
    """
    from core.ladder.actions import may_switch_directly

    require(user, Action.SWITCH_MODEL)
    with database.write() as session:
        line = get_line(session=session, name=line_name, for_update=True)
        if line.candidate_model_id is None:
            raise DeploymentError(f"{line.name} has no candidate: set one first (it must run in shadow before a switch)")
        if to_version is not None and to_version != line.candidate_model_version:
            raise DeploymentError(f"{to_version} is not the candidate of {line.name} ({line.candidate_model_version}): set it as candidate first")
        if not may_switch_directly(user, line):
            require(user, Action.REQUEST_PROMOTION)
            request = ladder_db.create_request(
                session=session,
                line=line,
                kind="model_switch",
                to_level=line.level.value,
                to_share=None,
                actor=user.name,
                evidence={"from": line.active_model_version, "to": line.candidate_model_version},
                note=note,
                model_version_id=line.candidate_model_id,
            )
            return SwitchOutcome(False, f"request {request.id}: {line.name} is in {line.level.value}, a manager must approve the switch", request.id)
        return SwitchOutcome(True, apply_switch(session, line, actor=user.name, note=note))


def rollback(database: Database, user: CurrentUser, *, line_name: str, from_version: str | None = None, note: str | None = None) -> str:
    """Make the previous version active again, at once (anyone may: it is the safe direction).

    Args:
        from_version: The active version the person saw when they asked (a page passes it). Checked
            under the line's lock: when someone switched or rolled back in the meantime, the rollback
            is refused rather than applied to a line the person did not see (two people rolling back
            at once roll back once).
    """
    require(user, Action.ROLLBACK)
    with database.write() as session:
        line = get_line(session=session, name=line_name, for_update=True)
        if from_version is not None and from_version != line.active_model_version:
            raise DeploymentError(f"{line.name} now runs {line.active_model_version}, not {from_version}: someone changed it meanwhile; nothing rolled back")
        if line.previous_model_id is None:
            raise DeploymentError(f"{line.name} has no previous model version to roll back to")
        update_settings(
            session=session,
            line_id=line.id,
            actor=user.name,
            note=note or "rollback",
            active_model_id=line.previous_model_id,
            # The version just removed stays loaded as the candidate (a switch brings it back), but it
            # is no rollback target: rolling "back" to it would undo the rollback.
            previous_model_id=None,
            candidate_model_id=line.active_model_id,
        )
    return f"{line_name}: rolled back to {line.previous_model_version}; {line.active_model_version} stays as candidate"


@dataclass(frozen=True)
class VersionFolder:
    """A folder under the models directory that could be registered, and what its card says."""

    path: Path
    version: str | None
    problem: str | None


def version_folders(models_dir: Path, *, registered_paths: set[str], registered_versions: set[str]) -> list[VersionFolder]:
    """Folders with a ``card.json`` under ``models_dir`` not registered yet (by path or version), each checked.

    A bad card is reported with its problem, never raised: one broken folder leaves the others usable.
    """
    from core.detector.card import CARD_NAME, card_problem
    from db.registry import model_folder

    # Stored paths are relative to the models folder (or absolute): compare folders, not strings.
    registered_paths = {str(model_folder(path, Path(models_dir)).resolve()) for path in registered_paths}
    found = []
    for folder in sorted(p for p in Path(models_dir).iterdir() if p.is_dir() and (p / CARD_NAME).is_file()) if Path(models_dir).is_dir() else []:
        if str(folder.resolve()) in registered_paths:
            continue
        try:
            card = json.loads((folder / CARD_NAME).read_text())
        except (OSError, ValueError) as error:
            found.append(VersionFolder(folder, None, f"card.json is unreadable: {error}"))
            continue
        problem = card_problem(card)
        version = card.get("version") if isinstance(card, dict) and isinstance(card.get("version"), str) else None
        if version in registered_versions:
            continue
        found.append(VersionFolder(folder, version, None if problem is None else f"card.json {problem}"))
    return found


def register(database: Database, user: CurrentUser, *, model_dir: Path) -> str:
    """Register the version in ``model_dir`` after checking its card and its weights' hashes (engineers, managers)."""
    from core.detector.card import ModelError
    from db.registry import register_model_version

    require_register(user)
    try:
        with database.write() as session:
            registered = register_model_version(session=session, model_dir=model_dir, actor=user.name)
    except ModelError as error:
        raise DeploymentError(str(error)) from None
    return f"registered {registered.version} ({registered.path}): set it as a line's candidate to run it in shadow"
