"""Model cards: the ``card.json`` beside a model version's weights, and the hashes it vouches for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CARD_NAME = "card.json"
WEIGHTS_PT = "model.pt"
WEIGHTS_ONNX = "model.onnx"
#: Weights file of each detector backend.
WEIGHTS_FILES = {"onnx": WEIGHTS_ONNX, "ultralytics": WEIGHTS_PT}


class ModelError(RuntimeError):
    """Base of the errors about a model version that cannot be used."""


class ModelNotFoundError(ModelError):
    """The folder, its card or its weights file is missing or unreadable."""


class ModelIntegrityError(ModelError):
    """The weights' sha256 differs from the card (or the registry): tampered or corrupted."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(model_dir: Path) -> dict[str, Any]:
    """The model card of a version folder, or :class:`ModelNotFoundError`."""
    card_path = Path(model_dir) / CARD_NAME
    if not card_path.is_file():
        raise ModelNotFoundError(f"no model card at {card_path}: is {model_dir} a model version folder?")
    try:
        card: dict[str, Any] = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelNotFoundError(f"model card {card_path} is unreadable: {error}") from None
    for key in ("version", "imgsz", "weights", "classes"):
        if key not in card:
            raise ModelNotFoundError(f"model card {card_path} lacks the field {key!r}")
    return card


def class_list(card: dict[str, Any]) -> list[str]:
    """A version's defect classes in class-id order: the one source of class names (never code)."""
    return [str(name) for _, name in sorted(((int(k), v) for k, v in card.get("classes", {}).items()), key=lambda item: item[0])]


def write_card(model_dir: Path, card: dict[str, Any]) -> Path:
    """Write ``card`` atomically (temporary file, then rename)."""
    path = Path(model_dir) / CARD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(path)
    return path


def verify_weights(model_dir: Path, card: dict[str, Any], backend: str, expected_sha256: str | None = None) -> Path:
    """Check the weights file of ``backend`` against the card (and the registry); return its path."""
    name = WEIGHTS_FILES[backend]
    path = Path(model_dir) / name
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {path} is missing")
    vouched = card["weights"].get(name, {}).get("sha256")
    if not vouched:
        raise ModelIntegrityError(f"the card of {model_dir} does not vouch for {name}: refusing to load it")
    actual = sha256_file(path)
    if actual != vouched:
        raise ModelIntegrityError(f"{path} has sha256 {actual[:12]}..., the card says {vouched[:12]}...: refusing tampered or corrupted weights")
    if expected_sha256 and expected_sha256 != actual:
        raise ModelIntegrityError(f"{path} has sha256 {actual[:12]}..., the registry recorded {expected_sha256[:12]}... when the version was registered")
    return path
