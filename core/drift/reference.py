"""References: what a line's phones are compared with.

By default a model version's own training and validation images: their input metrics and the
model's outputs on them are computed once, by :func:`compute_model_reference`, and stored beside
the weights as ``reference.json`` (its sha256 in the card), with a few sample images for people
to look at. Training sets are enriched with defects, so before comparing, the reference is
resampled to the share of defective phones the line normally sees (:func:`stratify`). A line
may instead accept a period of its own production as the reference (see ``db/drift.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.detector.card import ModelError, read_card, sha256_file, write_card
from core.drift.metrics import BOX_CATEGORIES, INPUT_METRICS, RateCount, Sample
from core.image_metrics import compute_input_metrics

REFERENCE_FILE = "reference.json"
SAMPLES_DIR = "reference-samples"
#: Sample images kept for the Drift page (half good, half defective where possible).
SAMPLE_IMAGES = 6
FORMAT = 1


class ReferenceError(ModelError):
    """A reference is missing, unreadable or does not match its card."""


@dataclass(frozen=True)
class ReferencePhone:
    """One reference image's values."""

    metrics: dict[str, float]
    max_confidence: float
    boxes: int
    verdict: str
    defective: bool | None


@dataclass
class Reference:
    """A reference sample and where it came from.

    Attributes:
        source: ``model`` (training/validation images) or ``production`` (an accepted period).
        description: For people: which images, how many.
        sample: The metric values.
        defective: Per phone, the truth (known for training images), aligned with ``sample.values``.
        sample_images: Files to show beside current images.
    """

    source: str
    description: str
    sample: Sample
    defective: np.ndarray | None = None
    sample_images: list[Path] = field(default_factory=list)

    @property
    def phones(self) -> int:
        return max((v.size for v in self.sample.values.values()), default=0)


def box_category(count: int) -> str:
    """Boxes per phone as a category: ``0``, ``1``, ``2`` or ``3+``."""
    return BOX_CATEGORIES[min(int(count), len(BOX_CATEGORIES) - 1)]


def sample_from_phones(phones: list[ReferencePhone]) -> tuple[Sample, np.ndarray | None]:
    """Metric columns from per-phone values; the human rates are the model's error rate against the truth."""
    values: dict[str, np.ndarray] = {name: np.array([p.metrics[name] for p in phones], dtype=np.float64) for name in INPUT_METRICS}
    values["max_confidence"] = np.array([p.max_confidence for p in phones], dtype=np.float64)
    values["boxes_per_phone"] = np.array([box_category(p.boxes) for p in phones])
    values["defect_rate"] = np.array([p.verdict for p in phones])
    truth = [p.defective for p in phones]
    defective = np.array(truth, dtype=bool) if phones and all(t is not None for t in truth) else None
    rates = {"failure_rate": RateCount(0, len(phones))}
    if defective is not None:
        errors = int(np.sum((values["defect_rate"] == "reject") != defective))
        # Against perfect judges, a disagreement or an override is the model being wrong.
        rates["disagreement_rate"] = RateCount(errors, len(phones))
        rates["override_rate"] = RateCount(errors, len(phones))
    return Sample(values=values, rates=rates), defective


def stratify(reference: Reference, defect_rate: float, seed: int = 0) -> Reference:
    """The reference resampled (without replacement, deterministically) to ``defect_rate`` defective phones.

    Keeps as many phones as the rarer side allows. A reference without truth is returned as it is.
    """
    if reference.defective is None or reference.phones == 0:
        return reference
    defective = reference.defective
    bad, good = np.flatnonzero(defective), np.flatnonzero(~defective)
    if defect_rate <= 0:
        keep_bad, keep_good = 0, good.size
    else:
        keep_bad = min(bad.size, round(good.size * defect_rate / (1 - defect_rate)))
        keep_good = min(good.size, round(keep_bad * (1 - defect_rate) / defect_rate)) if keep_bad < bad.size or good.size == 0 else good.size
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([rng.choice(bad, keep_bad, replace=False), rng.choice(good, keep_good, replace=False)]))
    values = {name: column[chosen] for name, column in reference.sample.values.items()}
    kept_truth = defective[chosen]
    rates = dict(reference.sample.rates)
    errors = int(np.sum((values["defect_rate"] == "reject") != kept_truth))
    rates.update(disagreement_rate=RateCount(errors, chosen.size), override_rate=RateCount(errors, chosen.size), failure_rate=RateCount(0, chosen.size))
    description = f"{reference.description}, resampled to {defect_rate:.0%} defective ({chosen.size} phones)"
    return replace(reference, sample=Sample(values=values, rates=rates, limits=dict(reference.sample.limits)), defective=kept_truth, description=description)


def measure_phone(image: np.ndarray, detector: Any, decision_threshold: float, defective: bool | None, admission: Any = None) -> ReferencePhone:
    """Input metrics and the model's output on one image (as the worker computes them).

    Args:
        admission: A :class:`core.admission.AdmissionFit` that collects the image for the admission check.
    """
    detections = detector.detect(image)
    metrics = compute_input_metrics(image).as_dict()
    if admission is not None:
        admission.add(image, metrics, detections.features)
    return ReferencePhone(
        metrics=metrics,
        max_confidence=detections.max_confidence,
        boxes=len(detections),
        verdict="reject" if detections.max_confidence >= decision_threshold else "pass",
        defective=defective,
    )


def generated_images(recipe: dict[str, Any]) -> Iterator[tuple[str, np.ndarray, bool]]:
    """The training and validation phones of a generated data recipe, as stored (JPEG, quality 92)."""
    from core.camera import get_scenario, render_run_phone

    scenario = get_scenario(str(recipe.get("scenario", "normal")))
    for split, count, seed in (("train", recipe["train_count"], recipe["train_seed"]), ("val", recipe["val_count"], recipe["val_seed"])):
        for index in range(int(count)):
            phone = render_run_phone(scenario, int(seed), index, defect_rate=float(recipe["defect_rate"]))
            ok, encoded = cv2.imencode(".jpg", phone.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            if decoded is None:
                raise RuntimeError("JPEG decoding failed")
            yield f"{split}-{seed}-{index:05d}", decoded, phone.is_defective


def dataset_images(root: Path) -> Iterator[tuple[str, np.ndarray, bool]]:
    """The images of a YOLO-format data set (train and val); a phone is defective when its label file has a box."""
    from core.imaging import InvalidImageError, read_image

    for split in ("train", "val"):
        for image_path in sorted((root / "images" / split).glob("*")):
            label = root / "labels" / split / f"{image_path.stem}.txt"
            try:
                image = read_image(image_path)
            except InvalidImageError:
                continue
            defective = label.is_file() and bool(label.read_text().strip())
            yield f"{split}-{image_path.stem}", image, defective


def compute_model_reference(
    folder: Path,
    images: Iterable[tuple[str, np.ndarray, bool]] | None = None,
    *,
    detector: Any = None,
    progress: Callable[[str], None] = print,
    description: str | None = None,
) -> Path:
    """Measure a model version's reference and store it beside its weights; returns the reference file.

    Args:
        folder: The model version folder (its card names the data it was trained on).
        images: ``(name, image, defective)`` triples; by default the card's generated data recipe.
        detector: A loaded detector of this version (loaded from ``folder`` when omitted).
    """
    from core.detector.adapter import Detector

    folder = Path(folder)
    card = read_card(folder)
    if images is None:
        data = card.get("data", {})
        if data.get("source") != "generated" or "recipe" not in data:
            raise ReferenceError(
                f"the card of {card['version']} names no generated data recipe: measure it on the plant's images "
                f"(`shadowline reference compute --model {card['version']} --dataset NAME`)"
            )
        images = generated_images(data["recipe"])
        description = f"training and validation images of {card['version']} ({data['recipe']['train_count']} + {data['recipe']['val_count']}, generated)"
    else:
        description = description or f"training and validation images of {card['version']}"
    detector = detector or Detector(folder)
    threshold = detector.info.decision_threshold
    samples_dir = folder / SAMPLES_DIR
    samples_dir.mkdir(exist_ok=True)
    for old in samples_dir.glob("*.jpg"):
        old.unlink()
    phones: list[ReferencePhone] = []
    names: list[str] = []
    kept = {True: 0, False: 0}
    from core.admission import AdmissionError, AdmissionFit, forget_admitter, save_admitter

    admission = AdmissionFit()
    for name, image, defective in images:
        phones.append(measure_phone(image, detector, threshold, defective, admission))
        names.append(name)
        if kept[defective] < SAMPLE_IMAGES // 2:
            cv2.imwrite(str(samples_dir / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
            kept[defective] += 1
        if len(phones) % 200 == 0:
            progress(f"reference: {len(phones)} images measured")
    if not phones:
        raise ReferenceError("no images to measure a reference from")
    payload = {
        "format": FORMAT,
        "model_version": card["version"],
        "description": f"{description}; {len(phones)} phones",
        "decision_threshold": threshold,
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "names": names,
        "defective": [p.defective for p in phones],
        "metrics": {metric: [round(p.metrics[metric], 4) for p in phones] for metric in INPUT_METRICS},
        "max_confidence": [round(p.max_confidence, 5) for p in phones],
        "boxes": [p.boxes for p in phones],
        "verdict": [p.verdict for p in phones],
    }
    path = folder / REFERENCE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    tmp.replace(path)
    card["reference"] = {
        "file": REFERENCE_FILE,
        "sha256": sha256_file(path),
        "phones": len(phones),
        "description": payload["description"],
        "computed_at": payload["computed_at"],
    }
    write_card(folder, card)
    progress(f"reference: {len(phones)} phones written to {path}")
    try:
        save_admitter(folder, admission.fit(), images=len(phones), description=payload["description"])
        progress(f"admission check: fitted on the same {len(phones)} images, written to {folder / 'admission.npz'}")
    except AdmissionError as error:
        forget_admitter(folder)
        progress(f"admission check NOT fitted ({error}): this version will decide no phone on its own")
    return path


def load_model_reference(folder: Path) -> Reference:
    """The stored reference of a model version, checked against the sha256 in its card."""
    folder = Path(folder)
    card = read_card(folder)
    entry = card.get("reference")
    path = folder / REFERENCE_FILE
    if not entry or not path.is_file():
        raise ReferenceError(f"model {card['version']} has no drift reference: run `shadowline reference compute --model {card['version']}`")
    actual = sha256_file(path)
    if actual != entry.get("sha256"):
        raise ReferenceError(f"{path} has sha256 {actual[:12]}..., its card says {str(entry.get('sha256'))[:12]}...: refusing a changed reference")
    try:
        payload = json.loads(path.read_text())
        phones = [
            ReferencePhone(
                metrics={metric: float(payload["metrics"][metric][i]) for metric in INPUT_METRICS},
                max_confidence=float(payload["max_confidence"][i]),
                boxes=int(payload["boxes"][i]),
                verdict=str(payload["verdict"][i]),
                defective=payload["defective"][i],
            )
            for i in range(len(payload["verdict"]))
        ]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ReferenceError(f"{path} is not a drift reference: {error!r}") from None
    sample, defective = sample_from_phones(phones)
    images = sorted((folder / SAMPLES_DIR).glob("*.jpg"))
    return Reference(source="model", description=str(payload.get("description", "")), sample=sample, defective=defective, sample_images=images)
