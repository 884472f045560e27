"""INT8 as a model version of its own: ``shadowline model quantize --version V --to V-int8``.

A static INT8 model is a different model: its boxes and scores move a little, so it gets its own
folder, card, drift reference, admission check and evaluation, and it reaches a line the way any
version does (registered, run as a candidate in shadow beside its parent, switched by a person).

How it is made (onnxruntime's quantisation tooling, no torch):

1. The parent's FP32 ONNX graph gets the admission check's feature output first
   (:func:`core.detector.onnx_backend.with_feature_output`), so the INT8 graph carries it too.
2. Calibration images are the parent's own validation images (its card's generated data recipe),
   letterboxed exactly as at inference.
3. ``quantize_static``: QDQ format, weights per channel (signed INT8), activations unsigned INT8,
   ranges from the calibration images (:data:`DEFAULT_CALIBRATION`). The detection head's decoding
   (the distribution-to-box step, the sigmoid scores and the concatenation of boxes, in pixels,
   with scores, in 0..1) stays in FP32: one INT8 scale shared by a box coordinate of 300 and a
   score of 0.3 would leave the score a handful of levels. The feature pooling stays FP32 too, and
   so does the stem, the first convolution (unless ``fp32_stem=False``): on its three input channels
   onnxruntime's INT8 convolution is slower than its FP32 one (0.65 against 0.22 ms a phone, one
   thread), and the first layer is the one where INT8 loses the most of the picture.
4. The new folder holds ``model.onnx`` and ``card.json`` (parent, calibration images with their
   sha256, method, excluded nodes, library versions); then the decision threshold is carried over
   from the parent (the same rule on the same kind of score), the drift reference and admission
   check are measured anew with the INT8 model (its features and scores are its own), and every
   standard scenario is evaluated with the parent's seeds.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.detector.card import WEIGHTS_ONNX, ModelError, read_card, sha256_file, verify_weights, write_card
from core.detector.onnx_backend import FEATURES_OUTPUT, letterbox, with_feature_output

#: Validation images used to calibrate the activation ranges.
DEFAULT_CALIBRATION = 120
#: Calibration methods offered (onnxruntime's names).
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")
DEFAULT_METHOD = "MinMax"
#: Which nodes stay in FP32: the head's decoding only (``decode``), or the whole detection head (``head``).
EXCLUDE_CHOICES = ("decode", "head")
DEFAULT_EXCLUDE = "decode"


class QuantizationError(ModelError):
    """The parent cannot be quantised (no ONNX, no calibration images, a version that exists)."""


def head_index(graph: Any) -> int:
    """Index of the detection head: the highest ``/model.N/`` module of an Ultralytics export."""
    indices = [int(m.group(1)) for node in graph.node if (m := re.match(r"/model\.(\d+)/", node.name))]
    if not indices:
        raise QuantizationError("not an Ultralytics YOLO export: no /model.N/ nodes")
    return max(indices)


def nodes_kept_in_fp32(graph: Any, exclude: str = DEFAULT_EXCLUDE, *, fp32_stem: bool = True) -> list[str]:
    """Names of the nodes that stay FP32 (see the module docstring).

    Args:
        graph: The ONNX graph (with the feature output already added).
        exclude: ``"decode"``: the head's decoding after its convolution branches (``cv2``/``cv3``
            stay INT8); ``"head"``: the whole head.
        fp32_stem: Keep the first module (``/model.0/``, the stem convolution and its activation) in FP32.
    """
    if exclude not in EXCLUDE_CHOICES:
        raise ValueError(f"exclude must be one of {', '.join(EXCLUDE_CHOICES)}, got {exclude!r}")
    head = f"/model.{head_index(graph)}/"
    kept = []
    for node in graph.node:
        if node.name.startswith("/shadowline/") or (fp32_stem and node.name.startswith("/model.0/")):
            kept.append(node.name)
        elif node.name.startswith(head):
            branch = node.name[len(head) :].split("/")[0].split(".")[0]
            if exclude == "head" or branch not in ("cv2", "cv3"):
                kept.append(node.name)
    return kept


def calibration_images(card: dict[str, Any], count: int) -> Iterator[tuple[str, np.ndarray, str]]:
    """The parent's own validation images: ``(name, BGR image, sha256)``.

    For a generated recipe the image is the validation phone as stored for training (JPEG,
    quality 92, decoded) and its hash is that of the JPEG bytes. Versions trained on an exported
    data set are not supported yet (their card does not say where the set lies).
    """
    import cv2

    data = card.get("data", {})
    if data.get("source") == "generated" and "recipe" in data:
        from core.camera import get_scenario, render_run_phone

        recipe = data["recipe"]
        scenario = get_scenario(str(recipe.get("scenario", "normal")))
        seed = int(recipe["val_seed"])
        for index in range(min(count, int(recipe["val_count"]))):
            phone = render_run_phone(scenario, seed, index, defect_rate=float(recipe["defect_rate"]))
            ok, encoded = cv2.imencode(".jpg", phone.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise QuantizationError("JPEG encoding failed")
            payload = encoded.tobytes()
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            if image is None:
                raise QuantizationError("JPEG decoding failed")
            yield f"val-{seed}-{index:05d}", image, hashlib.sha256(payload).hexdigest()
        return
    raise QuantizationError(
        f"the card of {card['version']} names no generated data recipe to calibrate on; versions trained on an exported data set cannot be quantised yet"
    )


class _Blobs:
    """onnxruntime's CalibrationDataReader over letterboxed images."""

    def __init__(self, input_name: str, blobs: list[np.ndarray]) -> None:
        self._input = input_name
        self._blobs = iter(blobs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        blob = next(self._blobs, None)
        return None if blob is None else {self._input: blob}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that make and run an INT8 version (no torch involved)."""
    import cv2
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def quantize_model_bytes(
    fp32_model: bytes, blobs: list[np.ndarray], *, method: str = DEFAULT_METHOD, exclude: str = DEFAULT_EXCLUDE, fp32_stem: bool = True
) -> tuple[bytes, list[str]]:
    """Static INT8 (QDQ, per-channel) of an ONNX YOLO export with the feature output.

    Returns:
        The INT8 model's bytes and the names of the nodes kept in FP32.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    with_features = with_feature_output(fp32_model) or fp32_model
    model = onnx.load_from_string(with_features)
    kept = nodes_kept_in_fp32(model.graph, exclude, fp32_stem=fp32_stem)
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="shadowline-quantize-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(with_features)
        quantize_static(
            source,
            target,
            _Blobs(input_name, blobs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options={"CalibMovingAverage": False},
        )
        return target.read_bytes(), kept


def quantize_version(
    parent_dir: Path,
    new_version: str,
    *,
    models_dir: Path | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    method: str = DEFAULT_METHOD,
    exclude: str = DEFAULT_EXCLUDE,
    fp32_stem: bool = True,
    eval_count: int = 500,
    progress: Callable[[str], None] = print,
) -> Path:
    """Make ``new_version``, the static INT8 version of the model in ``parent_dir``; returns its folder.

    Args:
        parent_dir: The parent version folder (its ``model.onnx`` is checked against its card).
        new_version: Name of the new version (a folder of that name must not exist yet).
        models_dir: Where to write it (default: beside the parent).
        calibration: Validation images used to calibrate the activation ranges.
        method: Calibration method (:data:`CALIBRATION_METHODS`).
        exclude: Which nodes stay FP32 (:data:`EXCLUDE_CHOICES`).
        fp32_stem: Keep the stem (the first convolution) in FP32.
        eval_count: Phones per scenario for the evaluation (0 skips it).
    """
    from core.detector.adapter import Detector

    parent_dir = Path(parent_dir)
    parent = read_card(parent_dir)
    weights = verify_weights(parent_dir, parent, "onnx")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", new_version):
        raise QuantizationError(f"version name {new_version!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    target = Path(models_dir or parent_dir.parent) / new_version
    if target.exists():
        raise QuantizationError(f"model version {new_version!r} already exists at {target}; choose another --to")
    if calibration < 1:
        raise ValueError(f"calibration images must be >= 1, got {calibration}")
    fp32 = weights.read_bytes()
    probe = Detector(parent_dir)
    input_size = tuple(int(v) for v in parent.get("onnx_input", (probe.info.imgsz, probe.info.imgsz)))
    names, hashes, blobs = [], [], []
    for name, image, digest in calibration_images(parent, calibration):
        blobs.append(letterbox(image, (input_size[0], input_size[1]))[0])
        names.append(name)
        hashes.append(digest)
    if not blobs:
        raise QuantizationError(f"no calibration images for {parent['version']}")
    progress(f"quantize: calibrating on {len(blobs)} validation images of {parent['version']} ({method})")
    int8, kept = quantize_model_bytes(fp32, blobs, method=method, exclude=exclude, fp32_stem=fp32_stem)

    work = Path(tempfile.mkdtemp(prefix=f".{new_version}-", dir=target.parent))
    try:
        (work / WEIGHTS_ONNX).write_bytes(int8)
        card: dict[str, Any] = {
            key: parent[key]
            for key in ("task", "classes", "architecture", "pretrained", "imgsz", "onnx_input", "data", "train_config", "provenance")
            if key in parent
        }
        card.update(
            {
                "version": new_version,
                "parent": {"version": parent["version"], "onnx_sha256": parent["weights"][WEIGHTS_ONNX]["sha256"]},
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "weights": {WEIGHTS_ONNX: {"sha256": sha256_file(work / WEIGHTS_ONNX), "bytes": (work / WEIGHTS_ONNX).stat().st_size}},
                "quantization": {
                    "method": "static INT8, onnxruntime quantize_static, QDQ format",
                    "weights": "INT8 (signed), per channel",
                    "activations": "UINT8, per tensor",
                    "calibration_method": method,
                    "calibration": {
                        "source": f"validation images of {parent['version']}",
                        "images": [{"name": n, "sha256": h} for n, h in zip(names, hashes, strict=True)],
                        "count": len(names),
                        "input": list(input_size),
                    },
                    "kept_fp32": {"rule": exclude, "stem": fp32_stem, "nodes": kept},
                    "libraries": library_versions(),
                },
                "libraries": library_versions(),
                # The same rule on the same kind of score: the parent's threshold, so the two are compared like for like.
                "decision_threshold": parent.get("decision_threshold"),
                "calibration": {**parent.get("calibration", {}), "carried_over_from": parent["version"]},
            }
        )
        if card["decision_threshold"] is None:
            card.pop("decision_threshold")
        write_card(work, card)
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress(f"quantize: {target / WEIGHTS_ONNX} ({card['weights'][WEIGHTS_ONNX]['bytes'] / 1e6:.1f} MB, {len(kept)} nodes kept in FP32)")
    detector = Detector(target)
    if not detector.gives_features:
        raise QuantizationError(f"the INT8 graph of {new_version} lost the feature output {FEATURES_OUTPUT}")
    from core.drift.reference import compute_model_reference

    compute_model_reference(target, detector=detector, progress=progress)
    if eval_count:
        record_evaluations(target, count=eval_count, progress=progress)
    return target


def record_evaluations(model_dir: Path, *, count: int, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every standard scenario with the parent's seeds and write the results into the card."""
    from core.detector.adapter import Detector
    from core.evaluation import DEFAULT_EVAL_SEED, STANDARD_SCENARIOS, evaluate

    detector = Detector(model_dir)
    results = {}
    for scenario in STANDARD_SCENARIOS:
        result = evaluate(detector, scenario, count, DEFAULT_EVAL_SEED)
        results[scenario] = result
        progress(f"{scenario:>11}: mAP50={result['map50']:.3f} phone recall={result['phone_recall']:.3f} false-reject={result['false_reject_rate']:.3f}")
    card = read_card(model_dir)
    card["evaluation"] = results
    card["metrics"] = {k: results["normal"][k] for k in ("precision", "recall", "map50", "phone_recall", "escape_rate", "false_reject_rate")}
    write_card(model_dir, card)
    return results


def compare_with_parent(model_dir: Path, parent_dir: Path | None = None) -> list[dict[str, Any]]:
    """Per scenario, the parent's and this version's box mAP50 and phone recall (with intervals), from the two cards.

    Args:
        model_dir: The INT8 version.
        parent_dir: Its parent's folder (default: the folder of the parent's name beside it).
    """
    card = read_card(model_dir)
    parent_version = card.get("parent", {}).get("version")
    if not parent_version:
        raise QuantizationError(f"{card['version']} has no parent in its card")
    parent = read_card(parent_dir or Path(model_dir).parent / parent_version)
    if parent["version"] != parent_version:
        raise QuantizationError(f"{parent_dir} holds {parent['version']}, not {card['version']}'s parent {parent_version}")
    rows = []
    for scenario, mine in card.get("evaluation", {}).items():
        theirs = parent.get("evaluation", {}).get(scenario)
        if theirs is None or (theirs.get("seed"), theirs.get("count")) != (mine.get("seed"), mine.get("count")):
            continue  # not the same phones: no comparison
        rows.append(
            {
                "scenario": scenario,
                "parent_map50": theirs["map50"],
                "map50": mine["map50"],
                "parent_phone_recall": theirs["phone_recall"],
                "parent_phone_recall_ci95": theirs["phone_recall_ci95"],
                "phone_recall": mine["phone_recall"],
                "phone_recall_ci95": mine["phone_recall_ci95"],
                "parent_false_reject_rate": theirs["false_reject_rate"],
                "false_reject_rate": mine["false_reject_rate"],
                "phones": mine["count"],
                "seed": mine["seed"],
            }
        )
    return rows
