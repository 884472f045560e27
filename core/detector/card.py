"""Model cards: the ``card.json`` beside a model version's weights, and the hashes it vouches for."""

from __future__ import annotations

import hashlib
import json
import re
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
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(f"model card {card_path} is unreadable: {error}") from None
    problem = card_problem(card)
    if problem:
        raise ModelNotFoundError(f"model card {card_path} {problem}")
    return dict(card)


_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def card_problem(card: object) -> str | None:
    """What is wrong with a parsed card, in a few words (None when its required fields are sound).

    Checked before a version is registered, so that one bad card can never break a page or
    ``model list`` for every line later.
    """
    if not isinstance(card, dict):
        return f"is not a JSON object (found {type(card).__name__})"
    for key in ("version", "imgsz", "weights", "classes"):
        if key not in card:
            return f"lacks the field {key!r}"
    if not isinstance(card["version"], str) or not _VERSION_NAME.match(card["version"]):
        return f"has an invalid version {card['version']!r}: letters, digits and . _ - (at most 64)"
    imgsz = card["imgsz"]
    sizes = imgsz if isinstance(imgsz, list) else [imgsz]
    if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 4096 for v in sizes):
        return f"has an invalid imgsz {imgsz!r}: a whole number of pixels (32-4096) or a list of two"
    classes = card["classes"]
    names = list(classes.values()) if isinstance(classes, dict) else classes
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return f"has invalid classes {classes!r}: a list (or id -> name object) of class names"
    weights = card["weights"]
    if not isinstance(weights, dict) or not weights or not all(isinstance(w, dict) and isinstance(w.get("sha256"), str) for w in weights.values()):
        return 'has invalid weights: an object of file name -> {"sha256": ...}'
    for key in ("evaluation", "init_from", "data", "reference", "admission", "calibration"):
        if key in card and card[key] is not None and not isinstance(card[key], dict):
            return f"has an invalid {key!r}: an object was expected, found {type(card[key]).__name__}"
    threshold = card.get("decision_threshold")
    if threshold is not None and (not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1):
        return f"has an invalid decision_threshold {threshold!r}: a number in [0, 1]"
    return None


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
