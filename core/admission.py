"""The admission check: may the model decide this phone on its own, or is the image unlike what it was validated on?

A model version is only as good as its validation data. Before the model decides a phone alone
(partial automation, canary, full automation), the phone's image must look like the version's
reference images (its training and validation phones). Three checks, cheapest first:

1. **Camera**: the image's aspect ratio and size match the reference camera's (a 1x1 image, a
   1x5000 strip, a sensor of another shape), and a grey image where the reference is colour.
2. **Ranges**: each input metric (brightness, contrast, sharpness, colour) lies inside the
   reference's range widened by :data:`RANGE_MARGIN` of its width (a lens cap: brightness 3,
   reference 61-142).
3. **Novelty**: a score from the model's own view of the image (the backbone's deepest feature
   map, average-pooled: an extra output of the ONNX graph) and the input metrics, the mean
   distance to the ``k`` nearest reference images after standardising. The threshold is
   calibrated so that :data:`DEFAULT_TARGET_RATE` of normal phones would be sent to people
   (cross-fitted: each reference image scored against the others, so the calibration scores
   are those of unseen normal phones).

The fitted check is part of the model version: ``admission.npz`` beside its weights (plain
arrays, never a pickle), with its sha256 and calibration in the card. scikit-learn fits it
(``NearestNeighbors``); at run time it is a few lines of NumPy. A version without a fitted check
may run, but decides nothing on its own.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.detector.card import read_card, sha256_file, write_card
from core.image_metrics import InputMetrics

ADMISSION_FILE = "admission.npz"
FORMAT = 1
#: Share of normal phones the novelty threshold sends to people.
DEFAULT_TARGET_RATE = 0.01
#: Reference images each phone is compared with (mean distance to the nearest ``k``).
NEIGHBOURS = 5
#: Cross-fitting folds for the calibration scores.
FOLDS = 5
#: A metric may lie this share of the reference's range width outside it.
RANGE_MARGIN = 0.25
#: Percentiles that bound a metric's reference range (robust to a stray reference image).
RANGE_PERCENTILES = (0.5, 99.5)
#: The image's aspect ratio may differ from the reference camera's by this factor.
ASPECT_TOLERANCE = 1.1
#: The image's width may be this factor smaller or larger than the reference camera's.
SIZE_TOLERANCE = 2.0
#: Metrics that are compared on a log scale (they span orders of magnitude).
LOG_METRICS = ("contrast", "sharpness", "colourfulness")
#: The input metrics the ranges and the novelty score use.
ADMISSION_METRICS = ("brightness", "contrast", "sharpness", "colourfulness", "mean_b", "mean_g", "mean_r")


class AdmissionError(RuntimeError):
    """A version's admission check is missing, changed or unreadable."""


@dataclass(frozen=True)
class AdmissionResult:
    """The admission check's answer for one phone.

    Attributes:
        admitted: True when the model may decide this phone on its own.
        check: Which check answered: ``ok``, ``camera``, ``range``, ``novelty``, ``repeat`` (a frozen camera), ``missing`` or ``error``.
        reason: One sentence for people when not admitted, else None.
        novelty: Where the phone's score lies among normal phones' (0..1; 0.99 = higher than 99 %), when computed.
    """

    admitted: bool
    check: str
    reason: str | None = None
    novelty: float | None = None

    @classmethod
    def refused(cls, reason: str, *, check: str, novelty: float | None = None) -> AdmissionResult:
        return cls(False, check, reason, novelty)


def _metric_vector(metrics: dict[str, float] | InputMetrics) -> np.ndarray:
    values = metrics.as_dict() if isinstance(metrics, InputMetrics) else metrics
    return np.array([np.log1p(max(values[m], 0.0)) if m in LOG_METRICS else values[m] for m in ADMISSION_METRICS], np.float64)


def _is_grey(image: np.ndarray) -> bool:
    """Whether every sampled pixel's channels lie within 2 levels of each other (B to G, G to R)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    step = max(1, min(image.shape[:2]) // 64)
    blue, green, red = cv2.split(np.ascontiguousarray(image[::step, ::step]))
    # OpenCV's absolute difference of uint8 planes: exact, and a quarter of the time of NumPy's in int16.
    return bool(cv2.absdiff(blue, green).max() <= 2 and cv2.absdiff(green, red).max() <= 2)


@dataclass(frozen=True)
class Admitter:
    """A fitted admission check (see the module docstring).

    Attributes:
        widths: Reference image widths, shape ``(2,)``: min and max.
        aspects: Reference aspect ratios (width / height), shape ``(2,)``: min and max.
        colour: Whether the reference images are in colour.
        ranges: Allowed metric ranges, shape ``(M, 2)``, in the order of :data:`ADMISSION_METRICS`
            (raw units, before any log).
        centre: Standardisation centre of the joined vector (features, then metrics), shape ``(D,)``.
        scale: Standardisation scale, shape ``(D,)`` (with each block's weight folded in).
        points: The reference images' standardised vectors, shape ``(N, D)``.
        calibration: Cross-fitted scores of the reference images, sorted, shape ``(N,)``.
        target_rate: Share of normal phones the threshold sends to people.
        threshold: Novelty score above which a phone is not admitted.
        feature_size: Length of the model's feature vector (0 when the model gives none).
    """

    widths: np.ndarray
    aspects: np.ndarray
    colour: bool
    ranges: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    points: np.ndarray
    calibration: np.ndarray
    target_rate: float
    threshold: float
    feature_size: int

    # -- scoring ------------------------------------------------------------------------------

    def _vector(self, features: np.ndarray | None, metrics: InputMetrics | dict[str, float]) -> np.ndarray:
        parts = []
        if self.feature_size:
            if features is None or features.shape != (self.feature_size,):
                got = "none" if features is None else str(features.shape)
                raise AdmissionError(f"the model gave features of shape {got}, the check was fitted on ({self.feature_size},)")
            parts.append(features.astype(np.float64))
        parts.append(_metric_vector(metrics))
        return (np.concatenate(parts) - self.centre) / self.scale

    @cached_property
    def _squared_norms(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self.points, self.points)

    def score(self, features: np.ndarray | None, metrics: InputMetrics | dict[str, float]) -> float:
        """Mean distance to the nearest :data:`NEIGHBOURS` reference images (higher = less like them)."""
        vector = self._vector(features, metrics)
        # |p - v|^2 = |p|^2 - 2 p.v + |v|^2: one matrix-vector product, a fifth of the time of the difference matrix.
        squared = self._squared_norms - 2 * (self.points @ vector) + vector @ vector
        distances = np.sqrt(np.maximum(squared, 0.0))
        k = min(NEIGHBOURS, len(distances))
        return float(np.partition(distances, k - 1)[:k].mean())

    def novelty(self, score: float) -> float:
        """The share of normal (calibration) phones whose score is below ``score``: 0..1."""
        return float(np.searchsorted(self.calibration, score, side="left") / len(self.calibration))

    def with_target_rate(self, target_rate: float) -> Admitter:
        """The same check with the threshold recalibrated for another target rate."""
        from dataclasses import replace

        return replace(self, target_rate=target_rate, threshold=calibrated_threshold(self.calibration, target_rate))

    # -- the check ----------------------------------------------------------------------------

    def check(self, image: np.ndarray, metrics: InputMetrics, features: np.ndarray | None) -> AdmissionResult:
        """Judge one phone: camera, then metric ranges, then novelty."""
        height, width = image.shape[:2]
        aspect = width / max(height, 1)
        lo_aspect, hi_aspect = self.aspects
        if not lo_aspect / ASPECT_TOLERANCE <= aspect <= hi_aspect * ASPECT_TOLERANCE:
            return AdmissionResult.refused(
                f"not the line's camera: {width}x{height} px (aspect {aspect:.2f}), reference aspect {lo_aspect:.2f}-{hi_aspect:.2f}", check="camera"
            )
        lo_width, hi_width = self.widths
        if not lo_width / SIZE_TOLERANCE <= width <= hi_width * SIZE_TOLERANCE:
            return AdmissionResult.refused(f"not the line's camera: {width}x{height} px, reference width {lo_width:.0f}-{hi_width:.0f} px", check="camera")
        values = metrics.as_dict()
        for (lo, hi), name in zip(self.ranges, ADMISSION_METRICS, strict=True):
            value = values[name]
            margin = RANGE_MARGIN * (hi - lo)
            if not lo - margin <= value <= hi + margin:
                return AdmissionResult.refused(f"out of range: {name} {value:.3g}, reference {lo:.3g}-{hi:.3g}", check="range")
        if self.colour and _is_grey(image):
            return AdmissionResult.refused("not the line's camera: a grey image, the reference is in colour", check="camera")
        score = self.score(features, metrics)
        novelty = self.novelty(score)
        if score > self.threshold:
            return AdmissionResult.refused(
                f"unlike the reference: novelty {novelty:.2f} (score {score:.2f} > {self.threshold:.2f})", check="novelty", novelty=novelty
            )
        return AdmissionResult(True, "ok", None, novelty)

    # -- storage ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=np.array(FORMAT),
            widths=self.widths,
            aspects=self.aspects,
            colour=np.array(self.colour),
            ranges=self.ranges,
            centre=self.centre,
            scale=self.scale,
            points=self.points.astype(np.float32),
            calibration=self.calibration,
            target_rate=np.array(self.target_rate),
            threshold=np.array(self.threshold),
            feature_size=np.array(self.feature_size),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Admitter:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                if int(stored["format"]) != FORMAT:
                    raise AdmissionError(f"admission check format {int(stored['format'])}, this version reads {FORMAT}")
                return cls(
                    widths=stored["widths"],
                    aspects=stored["aspects"],
                    colour=bool(stored["colour"]),
                    ranges=stored["ranges"],
                    centre=stored["centre"],
                    scale=stored["scale"],
                    points=stored["points"].astype(np.float64),
                    calibration=stored["calibration"],
                    target_rate=float(stored["target_rate"]),
                    threshold=float(stored["threshold"]),
                    feature_size=int(stored["feature_size"]),
                )
        except (KeyError, ValueError, OSError) as error:
            raise AdmissionError(f"not an admission check: {error}") from None


def calibrated_threshold(calibration: np.ndarray, target_rate: float) -> float:
    """The score above which ``target_rate`` of the calibration phones lie."""
    if not 0 < target_rate < 1:
        raise ValueError(f"target rate must be in (0, 1), got {target_rate}")
    return float(np.quantile(calibration, 1 - target_rate, method="higher"))


def fit_admitter(
    features: np.ndarray | None, metrics: list[dict[str, float]], sizes: list[tuple[int, int]], colour: list[bool], *, target_rate: float = DEFAULT_TARGET_RATE
) -> Admitter:
    """Fit the check on a version's reference images.

    Args:
        features: The model's pooled features per image, shape ``(N, F)``, or None when the model gives none.
        metrics: Input metrics per image (:meth:`InputMetrics.as_dict`).
        sizes: ``(width, height)`` per image.
        colour: Whether each image is in colour.
        target_rate: Share of normal phones the novelty threshold may send to people.
    """
    from sklearn.model_selection import KFold
    from sklearn.neighbors import NearestNeighbors

    n = len(metrics)
    if n < NEIGHBOURS * FOLDS:
        raise AdmissionError(f"{n} reference images are too few to fit an admission check (need {NEIGHBOURS * FOLDS})")
    raw_metrics = np.array([[m[name] for name in ADMISSION_METRICS] for m in metrics], np.float64)
    ranges = np.stack([np.percentile(raw_metrics, RANGE_PERCENTILES[0], axis=0), np.percentile(raw_metrics, RANGE_PERCENTILES[1], axis=0)], axis=1)
    metric_block = np.array([_metric_vector(m) for m in metrics])
    blocks = [metric_block]
    feature_size = 0
    if features is not None:
        feature_size = int(features.shape[1])
        blocks.insert(0, features.astype(np.float64))
    joined = np.concatenate(blocks, axis=1)
    centre = joined.mean(axis=0)
    spread = joined.std(axis=0)
    spread = np.maximum(spread, 1e-3 * float(np.median(spread)) + 1e-9)
    # Each block weighs the same whatever its length: the model's view and the camera's metrics.
    weights = np.concatenate([np.full(b.shape[1], np.sqrt(b.shape[1])) for b in blocks])
    scale = spread * weights
    points = (joined - centre) / scale
    calibration = np.empty(n)
    for train, held in KFold(n_splits=FOLDS, shuffle=True, random_state=0).split(points):
        neighbours = NearestNeighbors(n_neighbors=NEIGHBOURS).fit(points[train])
        distances, _ = neighbours.kneighbors(points[held])
        calibration[held] = distances.mean(axis=1)
    calibration.sort()
    widths = np.array([w for w, _ in sizes], np.float64)
    aspects = np.array([w / max(h, 1) for w, h in sizes], np.float64)
    return Admitter(
        widths=np.array([widths.min(), widths.max()]),
        aspects=np.array([aspects.min(), aspects.max()]),
        colour=bool(np.mean(colour) > 0.5),
        ranges=ranges,
        centre=centre,
        scale=scale,
        points=points,
        calibration=calibration,
        target_rate=target_rate,
        threshold=calibrated_threshold(calibration, target_rate),
        feature_size=feature_size,
    )


class AdmissionFit:
    """Collects what a fit needs while a reference is measured, image by image."""

    def __init__(self) -> None:
        self.features: list[np.ndarray] = []
        self.metrics: list[dict[str, float]] = []
        self.sizes: list[tuple[int, int]] = []
        self.colour: list[bool] = []

    def add(self, image: np.ndarray, metrics: dict[str, float], features: np.ndarray | None) -> None:
        if features is not None:
            self.features.append(np.asarray(features, np.float64))
        self.metrics.append(metrics)
        self.sizes.append((int(image.shape[1]), int(image.shape[0])))
        self.colour.append(not _is_grey(image))

    def fit(self, *, target_rate: float = DEFAULT_TARGET_RATE) -> Admitter:
        features = np.stack(self.features) if self.features and len(self.features) == len(self.metrics) else None
        return fit_admitter(features, self.metrics, self.sizes, self.colour, target_rate=target_rate)


def save_admitter(folder: Path, admitter: Admitter, *, images: int, description: str) -> Path:
    """Write ``admission.npz`` beside the weights and record it (hash, calibration) in the card."""
    folder = Path(folder)
    path = folder / ADMISSION_FILE
    tmp = path.with_name(f".{ADMISSION_FILE}.tmp")
    tmp.write_bytes(admitter.to_bytes())
    tmp.replace(path)
    card = read_card(folder)
    card["admission"] = {
        "file": ADMISSION_FILE,
        "sha256": sha256_file(path),
        "fitted_on": description,
        "images": images,
        "features": "backbone feature map, average-pooled (ONNX extra output) + input metrics" if admitter.feature_size else "input metrics only",
        "feature_size": admitter.feature_size,
        "neighbours": NEIGHBOURS,
        "target_rate": admitter.target_rate,
        "threshold": round(admitter.threshold, 6),
        "range_margin": RANGE_MARGIN,
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_card(folder, card)
    return path


def forget_admitter(folder: Path) -> None:
    """Remove a version's admission check (a new reference makes the old one stale)."""
    folder = Path(folder)
    card = read_card(folder)
    if card.pop("admission", None) is not None:
        write_card(folder, card)
    (folder / ADMISSION_FILE).unlink(missing_ok=True)


def load_admitter_from(folder: Path, *, target_rate: float | None = None) -> Admitter:
    """The fitted check of a model version folder, verified against its card."""
    folder = Path(folder)
    card = read_card(folder)
    entry: dict[str, Any] | None = card.get("admission")
    path = folder / ADMISSION_FILE
    if not entry or not path.is_file():
        raise AdmissionError(f"model {card['version']} has no admission check: run `shadowline reference compute --model {card['version']}`")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise AdmissionError(f"{path} has sha256 {actual[:12]}..., its card says {str(entry.get('sha256'))[:12]}...: refusing a changed admission check")
    admitter = Admitter.from_bytes(data)
    if target_rate is not None and target_rate != admitter.target_rate:
        admitter = admitter.with_target_rate(target_rate)
    return admitter


def load_admitter(detector: Any, *, target_rate: float | None = None) -> Admitter:
    """The fitted check of a loaded detector's version (its folder), verified against its card."""
    admitter = load_admitter_from(detector.info.model_dir, target_rate=target_rate)
    if admitter.feature_size and not getattr(detector, "gives_features", False):
        raise AdmissionError(f"the check of {detector.version} needs the model's features, which its {detector.info.backend} backend does not give")
    return admitter
