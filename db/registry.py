"""The model registry: versions found in models/ (and later from retraining), with their hashes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.detector.card import WEIGHTS_ONNX, WEIGHTS_PT, ModelIntegrityError, class_list, read_card, sha256_file
from db import audit
from db.models import ModelVersion


@dataclass(frozen=True)
class RegisteredModel:
    id: int
    version: str
    path: str
    onnx_sha256: str | None


def stored_model_path(model_dir: Path, models_dir: Path) -> str:
    """How a version's folder is recorded: relative to the models folder when it lies there.

    Every machine of a plant keeps the versions under its own ``SHADOWLINE_MODELS_DIR`` (a shared
    mount, mounted anywhere, or a copy): ``scratch-v3`` means the same on each, where an absolute
    path names one machine's disk. A folder outside the models folder keeps its absolute path
    (:func:`model_folder` still finds a copy by name under another machine's models folder).
    """
    folder = Path(os.path.abspath(model_dir))
    # As given first (a version folder may be a link into another tree), then with links resolved.
    for base, candidate in ((Path(os.path.abspath(models_dir)), folder), (Path(models_dir).resolve(), folder.resolve())):
        if candidate != base and candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return str(folder.resolve())


def register_model_version(*, session: Session, model_dir: Path, actor: str, models_dir: Path | None = None) -> RegisteredModel:
    """Register the version in ``model_dir`` after checking its weights against its card.

    Idempotent: a version already registered is returned as it is (its recorded hashes stay
    the reference that the worker checks the files against).

    Args:
        models_dir: This machine's models folder (``settings.models_dir``; the process's settings
            when omitted): the path is stored relative to it (:func:`stored_model_path`).
    """
    if models_dir is None:
        from core.settings import get_settings

        models_dir = get_settings().models_dir
    card = read_card(model_dir)
    existing = session.scalar(select(ModelVersion).where(ModelVersion.version == card["version"]))
    if existing is not None:
        return RegisteredModel(existing.id, existing.version, existing.path, existing.onnx_sha256)
    hashes: dict[str, str | None] = {}
    for name in (WEIGHTS_ONNX, WEIGHTS_PT):
        path = Path(model_dir) / name
        vouched = card["weights"].get(name, {}).get("sha256")
        if path.is_file():
            actual = sha256_file(path)
            if actual != vouched:
                raise ModelIntegrityError(f"{path} does not match its card (sha256 {actual[:12]}... vs {str(vouched)[:12]}...): not registering it")
            hashes[name] = actual
        else:
            hashes[name] = None
    model = ModelVersion(
        version=str(card["version"]),
        path=stored_model_path(Path(model_dir), models_dir),
        onnx_sha256=hashes[WEIGHTS_ONNX],
        pt_sha256=hashes[WEIGHTS_PT],
        card=card,
    )
    session.add(model)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="model.register",
        entity="model",
        entity_id=model.version,
        after={"path": model.path, "onnx_sha256": model.onnx_sha256, "pt_sha256": model.pt_sha256},
    )
    return RegisteredModel(model.id, model.version, model.path, model.onnx_sha256)


def get_model(*, session: Session, model_id: int) -> RegisteredModel | None:
    model = session.get(ModelVersion, model_id)
    return RegisteredModel(model.id, model.version, model.path, model.onnx_sha256) if model else None


def version_names(*, session: Session) -> dict[int, str]:
    """Every registered version's name by its id (one light query: no cards, no lines)."""
    return {model_id: version for model_id, version in session.execute(select(ModelVersion.id, ModelVersion.version))}


def list_models(*, session: Session) -> list[dict[str, object]]:
    """Every registered version with its card's headline figures and where it runs (active, candidate, previous)."""
    from db.lines import list_lines

    lines = list_lines(session=session)
    rows = []
    for model in session.scalars(select(ModelVersion).order_by(ModelVersion.registered_at)):
        # "active on line-1, line-2; candidate on line-3": each role once, then its lines (a version on many lines stays readable).
        slots = {
            "active": [line.name for line in lines if line.active_model_id == model.id],
            "candidate": [line.name for line in lines if line.candidate_model_id == model.id],
            "previous": [line.name for line in lines if line.previous_model_id == model.id],
        }
        roles = [f"{role} on {', '.join(names)}" for role, names in slots.items() if names]
        card = model.card if isinstance(model.card, dict) else {}
        evaluations = _mapping(card.get("evaluation"))
        # A trained version's headline is its `normal` scenario; an imported one's the plant's held-out images.
        normal = _mapping(evaluations.get("normal") or evaluations.get("held_out"))
        rows.append(
            {
                "id": model.id,
                "version": model.version,
                "status": "; ".join(roles) or "registered, not in use",
                "path": model.path,
                "onnx_sha256": model.onnx_sha256,
                "registered_at": model.registered_at,
                # The version it was fine-tuned from, or the FP32 parent of a quantized one.
                "init_from": _mapping(card.get("init_from")).get("version") or _quantized_from(card),
                "map50": _figure(normal.get("map50")),
                "phone_recall": _figure(normal.get("phone_recall")),
                "false_reject_rate": _figure(normal.get("false_reject_rate")),
                "decision_threshold": _figure(card.get("decision_threshold")),
                "classes": ", ".join(class_list(card)),
            }
        )
    return rows


def _quantized_from(card: dict[str, Any]) -> str | None:
    parent = _mapping(card.get("parent")).get("version")
    return f"{parent} (INT8 of it)" if parent and card.get("quantization") else None


def refresh_card(*, session: Session, model_dir: Path) -> bool:
    """Copy a registered version's card (threshold, figures, reference) from its folder into the registry.

    Only the card's descriptive fields change: the weights' hashes recorded at registration stay
    the reference the worker checks the files against. Returns False when the version is not registered.
    """
    card = read_card(model_dir)
    model = session.scalar(select(ModelVersion).where(ModelVersion.version == card["version"]))
    if model is None:
        return False
    model.card = card
    return True


def model_classes(*, session: Session, model_id: int | None) -> list[str]:
    """A registered version's defect classes in class-id order (from its card); [] for none."""
    model = session.get(ModelVersion, model_id) if model_id is not None else None
    return class_list(model.card or {}) if model is not None else []


def line_classes(*, session: Session, line_id: int | None) -> list[str]:
    """The classes people label with on a line: its active version's, then those only its candidate knows.

    With ``line_id`` None, every line's, in the same order. Blue and green may name different classes
    (a plant's own model beside the shipped one): labels keep names, so both stay usable.
    """
    from db.models import LineSettings

    query = select(LineSettings)
    if line_id is not None:
        query = query.where(LineSettings.line_id == line_id)
    names: list[str] = []
    for settings in session.scalars(query.order_by(LineSettings.line_id)):
        for model_id in (settings.active_model_id, settings.candidate_model_id):
            names += [name for name in model_classes(session=session, model_id=model_id) if name not in names]
    return names


def model_folder(stored: str, models_dir: Path | None) -> Path:
    """A registered version's folder on this machine.

    A stored path is relative to the models folder (``SHADOWLINE_MODELS_DIR``, each machine's own:
    a shared mount or a copy), so it resolves under this machine's. An absolute one (a folder
    registered from outside the models folder, or before migration 0014) is used as it is when it
    exists here, else found under this machine's models folder by the version folder's name. The
    card's hashes are checked on load either way, so a different folder of the same name is
    refused, not used.
    """
    path = Path(stored)
    if not path.is_absolute():
        return (models_dir or Path.cwd()) / path
    if path.is_dir() or models_dir is None:
        return path
    local = models_dir / path.name
    return local if local.is_dir() else path


def _mapping(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else empty: a card registered before it was validated never breaks the list."""
    return value if isinstance(value, dict) else {}


def _figure(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
