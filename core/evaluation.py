"""Measure a model version on held-out phones from the synthetic line.

Box level: precision and recall at the decision threshold (IoU >= 0.5, class must match) and
mAP50 (COCO-style 101-point interpolated AP, averaged over the classes present in the truth).
Phone level (does this phone have a defect?): recall, escape rate (defective phones passed) and
false-reject rate (good phones rejected), each with its Wilson 95 % interval and sample size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.camera import get_scenario, render_run_phone
from core.detector.adapter import Detector
from core.detector.card import read_card, write_card
from core.detector.detections import Detections
from core.detector.onnx_backend import box_iou

#: Run seed of evaluation phones: never used by a training recipe (those use 1000 and 2000).
DEFAULT_EVAL_SEED = 777_000
#: Scenarios recorded in a model card after training: what the drift monitoring must catch.
STANDARD_SCENARIOS = ("normal", "dim-lights", "blur", "new-colour", "new-defect")
IOU_MATCH = 0.5


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when ``total`` is 0."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def average_precision(scores: np.ndarray, matched: np.ndarray, n_truth: int) -> float:
    """COCO 101-point interpolated AP from per-prediction scores and true-positive flags."""
    if n_truth == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / n_truth
    precision = tp / np.maximum(tp + fp, 1e-9)
    # Precision envelope: the best precision at any recall at least this high.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in idx]))


def match_predictions(pred: Detections, truth_boxes: np.ndarray, truth_classes: np.ndarray) -> np.ndarray:
    """Greedy matching by descending confidence: a flag per prediction, True if it hits a free truth box."""
    matched = np.zeros(len(pred), bool)
    taken = np.zeros(len(truth_boxes), bool)
    for i in np.argsort(-pred.confidence, kind="stable"):
        if not len(truth_boxes):
            break
        ious = box_iou(pred.xyxy[i], truth_boxes)
        ious[(truth_classes != pred.class_id[i]) | taken] = 0
        best = int(ious.argmax())
        if ious[best] >= IOU_MATCH:
            matched[i] = taken[best] = True
    return matched


@dataclass
class _Tally:
    scores: dict[int, list[float]]
    hits: dict[int, list[bool]]
    truths: dict[int, int]
    tp: int = 0
    fp: int = 0
    fn: int = 0
    defective: int = 0
    caught: int = 0
    good: int = 0
    false_rejects: int = 0


@dataclass(frozen=True)
class TruthPhone:
    """One image with its true boxes (``xyxy`` pixels), classes and whether it is defective."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    defective: bool


def evaluate(
    detector: Detector,
    scenario: str = "normal",
    count: int = 500,
    seed: int = DEFAULT_EVAL_SEED,
    *,
    defect_rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``detector`` on ``count`` phones of ``scenario`` from run seed ``seed``.

    Drifting scenarios ramp over the first half of the run and hold their drifted value for the
    second half, so the numbers show the drifted condition, not only the way there.

    Returns:
        A JSON-ready dict; see the module docstring for the metrics.
    """
    if count <= 0:
        raise ValueError(f"count must be > 0, got {count}")
    sc = get_scenario(scenario).with_ramp(ramp=max(1, count // 2))
    # The generator's defects by name: a version that lacks one cannot find it (its boxes count as missed).
    model_ids = {name: class_id for class_id, name in detector.info.class_names.items()}

    def phones() -> Iterator[TruthPhone]:
        for index in range(count):
            phone = render_run_phone(sc, seed, index, defect_rate=defect_rate)
            yield TruthPhone(
                phone.image,
                np.array([d.box for d in phone.defects], np.float32).reshape(-1, 4),
                np.array([model_ids.get(d.kind.value, -1) for d in phone.defects], np.int64),
                phone.is_defective,
            )

    return {"scenario": scenario, "seed": seed, **evaluate_phones(detector, phones(), count=count, progress=progress)}


def class_map_for(dataset_classes: list[str], model_classes: dict[int, str]) -> tuple[dict[int, int], list[str]]:
    """Map a data set's class ids to a model's by name; returns the map and the data set's classes the model lacks.

    A class the model lacks maps to -1: its boxes still make the phone defective (phone-level
    figures count them) but no prediction can match them (box-level recall counts them as missed).
    """
    by_name = {name: class_id for class_id, name in model_classes.items()}
    mapping = {index: by_name.get(name, -1) for index, name in enumerate(dataset_classes)}
    return mapping, [name for name in dataset_classes if name not in by_name]


def yolo_split_phones(root: Path, split: str = "val", class_map: dict[int, int] | None = None) -> Iterator[TruthPhone]:
    """The images of one split of a YOLO-format data set with their labels (normalised ``class cx cy w h``).

    Args:
        class_map: Data set class id to model class id (see :func:`class_map_for`); None keeps the ids.
    """
    from core.imaging import InvalidImageError, read_image

    for image_path in sorted((root / "images" / split).glob("*")):
        try:
            image = read_image(image_path)
        except InvalidImageError:
            continue
        height, width = image.shape[:2]
        label = root / "labels" / split / f"{image_path.stem}.txt"
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()] if label.is_file() else []
        boxes = [
            ((float(cx) - float(w) / 2) * width, (float(cy) - float(h) / 2) * height, (float(cx) + float(w) / 2) * width, (float(cy) + float(h) / 2) * height)
            for _, cx, cy, w, h in rows
        ]
        ids = [int(r[0]) for r in rows]
        if class_map is not None:
            ids = [class_map.get(i, -1) for i in ids]
        yield TruthPhone(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(ids, np.int64), bool(rows))


def evaluate_phones(
    detector: Detector, phones: Iterable[TruthPhone], *, count: int | None = None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Box and phone-level metrics of ``detector`` over any stream of phones with their truth."""
    threshold = detector.info.decision_threshold
    tally = _Tally(scores={}, hits={}, truths={})
    latencies = []
    seen = 0
    for phone in phones:
        detections = detector.detect(phone.image)
        latencies.append(detections.latency_ms)
        truth_boxes, truth_classes = phone.boxes, phone.classes
        matched = match_predictions(detections, truth_boxes, truth_classes)
        for k in truth_classes:
            tally.truths[int(k)] = tally.truths.get(int(k), 0) + 1
        for conf, k, hit in zip(detections.confidence, detections.class_id, matched, strict=True):
            tally.scores.setdefault(int(k), []).append(float(conf))
            tally.hits.setdefault(int(k), []).append(bool(hit))
        confident = detections.confidence >= threshold
        confident_hits = int((matched & confident).sum())
        tally.tp += confident_hits
        tally.fp += int(confident.sum()) - confident_hits
        tally.fn += len(truth_boxes) - confident_hits
        rejected = detector.verdict_is_reject(detections)
        if phone.defective:
            tally.defective += 1
            tally.caught += int(rejected)
        else:
            tally.good += 1
            tally.false_rejects += int(rejected)
        seen += 1
        if progress:
            progress(seen, count or seen)
    if seen == 0:
        raise ValueError("no phones to evaluate on")

    per_class = {}
    for k, n_truth in sorted(tally.truths.items()):
        if k < 0:
            continue  # a class the model does not know: counted in recall, no AP of its own
        scores = np.array(tally.scores.get(k, []), np.float32)
        hits = np.array(tally.hits.get(k, []), bool)
        confident = scores >= threshold
        found = int((hits & confident).sum())
        per_class[detector.info.class_names.get(k, str(k))] = {
            "ap50": average_precision(scores, hits, n_truth),
            "instances": n_truth,
            "precision": found / int(confident.sum()) if confident.any() else 0.0,
            "recall": found / n_truth,
        }
    aps = [v["ap50"] for v in per_class.values()]
    phone_recall = tally.caught / tally.defective if tally.defective else float("nan")
    return {
        "model_version": detector.version,
        "backend": detector.info.backend,
        "count": seen,
        "decision_threshold": threshold,
        "precision": tally.tp / (tally.tp + tally.fp) if tally.tp + tally.fp else 0.0,
        "recall": tally.tp / (tally.tp + tally.fn) if tally.tp + tally.fn else float("nan"),
        "map50": float(np.mean(aps)) if aps else float("nan"),
        "per_class": per_class,
        "defective_phones": tally.defective,
        "good_phones": tally.good,
        "phone_recall": phone_recall,
        "phone_recall_ci95": wilson_interval(tally.caught, tally.defective),
        "escape_rate": 1 - phone_recall if tally.defective else float("nan"),
        "escapes": tally.defective - tally.caught,
        "false_reject_rate": tally.false_rejects / tally.good if tally.good else float("nan"),
        "false_reject_rate_ci95": wilson_interval(tally.false_rejects, tally.good),
        "false_rejects": tally.false_rejects,
        "latency_ms_median": float(np.median(latencies)),
    }


#: Calibration phones come from the validation run seed: used for model selection, never for evaluation.
CALIBRATION_SEED = 2000
#: An escaped defect costs this many false rejects when the decision threshold is chosen.
ESCAPE_COST = 5.0
#: Decision thresholds the calibration may choose from.
THRESHOLD_RANGE = (0.20, 0.90)


def choose_threshold(scores: np.ndarray, defective: np.ndarray) -> tuple[float, float]:
    """The reject threshold (on a 0.01 grid within :data:`THRESHOLD_RANGE`) that minimises
    ``ESCAPE_COST x escapes + false rejects`` on these phones; returns ``(threshold, cost)``.

    Usually a whole band of thresholds costs the same: the gap between the highest-scored good phones
    and the lowest-scored defective ones. The middle of the widest such band is chosen, as far from
    both as the phones allow, so that unseen phones a little either side of the validation ones
    still fall on the right side (its edge would turn the first slightly fainter defect into an escape).
    """
    grid = np.round(np.arange(THRESHOLD_RANGE[0], THRESHOLD_RANGE[1] + 0.001, 0.01), 2)
    rejected = scores[None, :] >= grid[:, None]
    costs = ESCAPE_COST * (defective[None, :] & ~rejected).sum(axis=1) + (~defective[None, :] & rejected).sum(axis=1)
    best = costs == costs.min()
    runs: list[tuple[int, int]] = []  # (start, end) index ranges of consecutive best thresholds
    for index in np.flatnonzero(best):
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], int(index))
        else:
            runs.append((int(index), int(index)))
    first, last = max(runs, key=lambda run: (run[1] - run[0], run[0]))  # the widest; among equals the higher
    return float(grid[(first + last + 1) // 2]), float(costs.min())


def calibrate_decision_threshold(detector: Detector, *, count: int = 400, seed: int = CALIBRATION_SEED) -> dict[str, Any]:
    """Choose the reject threshold on validation phones with :func:`choose_threshold`.

    The search stays within [THRESHOLD_RANGE]: lower, a single hard validation phone can drag the
    threshold to the detection floor, and false rejects explode as soon as the inputs drift.
    """
    scenario = get_scenario("normal")
    scores, defective = [], []
    for index in range(count):
        phone = render_run_phone(scenario, seed, index, defect_rate=0.5)
        scores.append(detector.detect(phone.image).max_confidence)
        defective.append(phone.is_defective)
    threshold, cost = choose_threshold(np.array(scores, dtype=float), np.array(defective, dtype=bool))
    return {"decision_threshold": threshold, "cost": cost, "count": count, "seed": seed, "escape_cost": ESCAPE_COST, "range": list(THRESHOLD_RANGE)}


def record_standard_evaluations(model_dir: Path, *, count: int = 500, seed: int = DEFAULT_EVAL_SEED, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Calibrate the decision threshold, evaluate every standard scenario, write both into the card."""
    calibration = calibrate_decision_threshold(Detector(model_dir))
    card = read_card(model_dir)
    card["decision_threshold"] = calibration["decision_threshold"]
    card["calibration"] = calibration
    write_card(model_dir, card)
    progress(f"decision threshold {calibration['decision_threshold']:.2f} (calibrated on {calibration['count']} validation phones)")
    detector = Detector(model_dir)
    results = {}
    for scenario in STANDARD_SCENARIOS:
        result = evaluate(detector, scenario, count, seed)
        results[scenario] = result
        progress(
            f"{scenario:>11}: mAP50={result['map50']:.3f} P={result['precision']:.3f} R={result['recall']:.3f} "
            f"phone recall={result['phone_recall']:.3f} false-reject={result['false_reject_rate']:.3f}"
        )
    card = read_card(model_dir)
    card["evaluation"] = results
    card["metrics"] = {k: results["normal"][k] for k in ("precision", "recall", "map50", "phone_recall", "escape_rate", "false_reject_rate")}
    write_card(model_dir, card)
    return results


def _dataset_scores(detector: Detector, root: Path, split: str, class_map: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    scores, defective = [], []
    for phone in yolo_split_phones(root, split, class_map):
        scores.append(detector.detect(phone.image).max_confidence)
        defective.append(phone.defective)
    return np.array(scores, dtype=float), np.array(defective, dtype=bool)


def evaluate_dataset(detector: Detector, root: Path, split: str = "val") -> dict[str, Any]:
    """Box and phone-level figures of ``detector`` on one split of a stored data set (classes matched by name)."""
    from core.dataset_import import dataset_classes

    classes = dataset_classes(root)
    class_map, missing = class_map_for(classes, detector.info.class_names)
    result = evaluate_phones(detector, yolo_split_phones(root, split, class_map))
    return {"dataset": Path(root).name, "split": split, "classes_model_lacks": missing, **result}


def record_dataset_evaluation(model_dir: Path, root: Path, *, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Calibrate the decision threshold on a data set's validation split, evaluate there, write both into the card.

    The plant's data set has no third split: the figures are measured on the same images the
    threshold was chosen on, and the card says so (``calibrated_on_same_images``).
    """
    from core.dataset_import import dataset_classes

    detector = Detector(model_dir)
    class_map, missing = class_map_for(dataset_classes(root), detector.info.class_names)
    if missing:
        progress(f"classes of the data set that {detector.version} lacks (their boxes count as missed): {', '.join(missing)}")
    scores, defective = _dataset_scores(detector, root, "val", class_map)
    if not len(scores):
        raise ValueError(f"data set {Path(root).name} has no validation images to calibrate on")
    if defective.all() or not defective.any():
        progress("the validation split holds only defective or only good phones: the threshold is chosen from one side only")
    threshold, cost = choose_threshold(scores, defective)
    calibration = {
        "decision_threshold": threshold,
        "cost": cost,
        "count": len(scores),
        "dataset": Path(root).name,
        "split": "val",
        "escape_cost": ESCAPE_COST,
        "range": list(THRESHOLD_RANGE),
    }
    card = read_card(model_dir)
    card["decision_threshold"] = threshold
    card["calibration"] = calibration
    write_card(model_dir, card)
    progress(f"decision threshold {threshold:.2f} (calibrated on {len(scores)} validation images of {Path(root).name})")
    result = evaluate_dataset(Detector(model_dir), root, "val")
    result["calibrated_on_same_images"] = True
    card = read_card(model_dir)
    card.setdefault("evaluation", {})["held_out"] = result
    card["metrics"] = {k: result[k] for k in ("precision", "recall", "map50", "phone_recall", "escape_rate", "false_reject_rate")}
    write_card(model_dir, card)
    return result


def describe_result(result: dict[str, Any]) -> list[str]:
    """Lines for people: box figures, per class, phone-level figures with their 95 % intervals."""
    lines = [
        f"  mAP50 {result['map50']:.3f}  precision {result['precision']:.3f}  recall {result['recall']:.3f} "
        f"(boxes, threshold {result['decision_threshold']:.2f})"
    ]
    for name, figures in result["per_class"].items():
        lines.append(
            f"    {name:<16} AP50 {figures['ap50']:.3f}  precision {figures.get('precision', float('nan')):.3f}  "
            f"recall {figures.get('recall', float('nan')):.3f}  ({figures['instances']} boxes)"
        )
    lo, hi = result["phone_recall_ci95"]
    lines.append(
        f"  phone recall {result['phone_recall']:.3f} [{lo:.3f}, {hi:.3f}] of {result['defective_phones']} defective phones; escapes {result['escapes']}"
    )
    lo, hi = result["false_reject_rate_ci95"]
    lines.append(
        f"  false-reject rate {result['false_reject_rate']:.3f} [{lo:.3f}, {hi:.3f}] of {result['good_phones']} good phones "
        f"({result['false_rejects']} rejected)"
    )
    return lines
