"""Build YOLO data sets from the synthetic line and train a model version into ``models/<version>/``.

A model version folder holds ``model.pt``, ``model.onnx`` and ``card.json``. The card records the
data recipe and seeds, architecture, image size, epochs, metrics, the sha256 of each weights file
and library versions; the detector adapter refuses weights whose hash the card does not vouch for.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from core.camera import get_scenario, render_run_phone
from core.detector import ultralytics_backend
from core.detector.card import WEIGHTS_ONNX, WEIGHTS_PT, sha256_file, write_card
from core.vocabulary import DefectClass


@dataclass(frozen=True)
class DataRecipe:
    """How a generated data set is made. Train and val come from different run seeds.

    Attributes:
        train_count: Training images.
        val_count: Validation images.
        train_seed: Run seed of the training phones.
        val_seed: Run seed of the validation phones.
        defect_rate: Share of phones with at least one defect.
        scenario: Scenario the phones are photographed under (``normal`` = trained conditions).
    """

    train_count: int = 500
    val_count: int = 120
    train_seed: int = 1000
    val_seed: int = 2000
    defect_rate: float = 0.6
    scenario: str = "normal"


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained from a data set."""

    version: str
    epochs: int = 60
    imgsz: int = 320
    batch: int = 16
    seed: int = 0
    architecture: str = ultralytics_backend.DEFAULT_ARCHITECTURE
    #: ONNX input (height, width): the camera's 4:3 frames letterboxed to 320 wide fill 320x256 with little padding.
    onnx_input: tuple[int, int] = (256, 320)
    augment: dict[str, float] = field(default_factory=lambda: {"hsv_v": 0.3, "flipud": 0.5, "close_mosaic": 10})
    #: Optimiser settings when training starts from an earlier version (fine-tuning); empty: Ultralytics' own.
    fine_tune: dict[str, float | str] = field(default_factory=dict)


def yolo_label_lines(boxes: list[tuple[int, tuple[float, float, float, float]]], width: int, height: int) -> list[str]:
    """YOLO label lines ``class cx cy w h`` (normalised) for ``(class_id, xyxy)`` boxes."""
    lines = []
    for class_id, (x1, y1, x2, y2) in boxes:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_data_yaml(root: Path, target: Path | None = None, classes: list[str] | None = None) -> Path:
    """Write the data file Ultralytics reads (at ``target``, default ``root/data.yaml``).

    Args:
        classes: Class names in id order (default: the generator's, :class:`DefectClass`).
    """
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(classes or [c.value for c in DefectClass]))
    data_yaml = target or root / "data.yaml"
    data_yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


def build_generated_dataset(root: Path, recipe: DataRecipe, progress: Callable[[str], None] = print, classes: list[str] | None = None) -> Path:
    """Render a YOLO-format data set from the synthetic line.

    Args:
        classes: The target version's classes: the generator's defects are written with these ids
            (by name). Default: the generator's own.

    Returns:
        Path of its ``data.yaml``.
    """
    scenario = get_scenario(recipe.scenario)
    names = classes or [c.value for c in DefectClass]
    for split, count, seed in (("train", recipe.train_count, recipe.train_seed), ("val", recipe.val_count, recipe.val_seed)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            phone = render_run_phone(scenario, seed, index, defect_rate=recipe.defect_rate)
            stem = f"{split}-{seed}-{index:05d}"
            cv2.imwrite(str(images / f"{stem}.jpg"), phone.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            height, width = phone.image.shape[:2]
            boxes = [(names.index(d.kind.value), d.box) for d in phone.defects]
            (labels / f"{stem}.txt").write_text("\n".join(yolo_label_lines(boxes, width, height)))
        progress(f"data set: {count} {split} images from run seed {seed}")
    return write_data_yaml(root, classes=names)


def export_onnx_into(folder: Path, onnx_input: tuple[int, int]) -> Path:
    """Export ``folder/model.pt`` to ``folder/model.onnx`` with a fixed ``(height, width)`` input.

    If the folder already has a card, its ONNX hash and input size are brought up to date.
    """
    exported = ultralytics_backend.export_onnx(folder / WEIGHTS_PT, onnx_input)
    target = folder / WEIGHTS_ONNX
    if exported != target:
        shutil.move(exported, target)
    if (folder / "card.json").exists():
        from core.detector.card import read_card

        card = read_card(folder)
        card["onnx_input"] = list(onnx_input)
        card["weights"][WEIGHTS_ONNX] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
        write_card(folder, card)
    return target


def train_model_version(
    config: TrainConfig,
    models_dir: Path,
    data_yaml: Path,
    *,
    data_description: dict[str, Any],
    workdir: Path,
    progress: Callable[[str], None] = print,
    on_epoch: Callable[[ultralytics_backend.EpochProgress], None] | None = None,
    init_from: Path | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Train, export and write ``models_dir/<version>/`` with weights and card.

    ``classes`` are the data's class names in id order (default: the generator's); the card records them.

    Returns:
        The model version folder.
    """
    target = models_dir / config.version
    if target.exists():
        raise FileExistsError(f"model version {config.version!r} already exists at {target}; choose another --version")

    def report(epoch: ultralytics_backend.EpochProgress) -> None:
        losses = " ".join(f"{k}={v:.3f}" for k, v in epoch.losses.items())
        m = epoch.metrics
        scores = "  ".join(f"{name}={m.get(key, float('nan')):.3f}" for name, key in (("mAP50", "mAP50"), ("P", "precision"), ("R", "recall")))
        progress(f"epoch {epoch.epoch}/{epoch.epochs}  {losses}  {scores}")
        if on_epoch:
            on_epoch(epoch)

    lineage = None
    init_weights = None
    if init_from is not None:
        from core.detector.card import read_card, verify_weights

        parent = read_card(init_from)
        init_weights = verify_weights(init_from, parent, "ultralytics")  # a .pt is a pickle: only vouched-for weights
        lineage = {"version": parent["version"], "pt_sha256": parent["weights"][WEIGHTS_PT]["sha256"], "epochs": parent.get("epochs")}
    started = time.monotonic()
    best = ultralytics_backend.train(
        data_yaml,
        workdir,
        epochs=config.epochs,
        imgsz=config.imgsz,
        batch=config.batch,
        seed=config.seed,
        architecture=config.architecture,
        on_epoch=report,
        augment=config.augment,
        optimiser=config.fine_tune if init_weights is not None else None,
        init_weights=init_weights,
    )
    train_seconds = time.monotonic() - started
    staging = workdir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(best, staging / WEIGHTS_PT)
    export_onnx_into(staging, config.onnx_input)

    card = {
        "version": config.version,
        "task": "detect",
        "classes": {str(i): name for i, name in enumerate(classes or [c.value for c in DefectClass])},
        "architecture": config.architecture,
        "pretrained": False,
        "init_from": lineage,
        "imgsz": config.imgsz,
        "onnx_input": list(config.onnx_input),
        "epochs": config.epochs,
        "train_config": asdict(config),
        "data": data_description,
        "train_seconds": round(train_seconds, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights": {name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size} for name in (WEIGHTS_PT, WEIGHTS_ONNX)},
        "libraries": ultralytics_backend.library_versions(),
        "evaluation": {},
    }
    write_card(staging, card)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staging, target)
    progress(f"model version {config.version} written to {target} in {train_seconds:.0f} s")
    return target


def train_from_dataset(
    dataset_root: Path,
    config: TrainConfig,
    models_dir: Path,
    *,
    cache_dir: Path,
    init_from: Path | None = None,
    eval_count: int = 500,
    progress: Callable[[str], None] = print,
    on_epoch: Callable[[ultralytics_backend.EpochProgress], None] | None = None,
) -> Path:
    """Train a version on an exported data set (checked against its manifest), then evaluate it on the
    set's held-out split and on every scenario (``eval_count`` phones each; 0 skips), and measure its
    drift reference on the set's images. The card records the data set, its hash and the labels used."""
    import tempfile

    from core.dataset import read_manifest
    from core.dataset_import import dataset_classes
    from core.detector.adapter import Detector
    from core.detector.card import read_card
    from core.drift.reference import compute_model_reference, dataset_images
    from core.evaluation import class_map_for, evaluate_phones, record_standard_evaluations, yolo_split_phones

    root = Path(dataset_root).resolve()
    manifest = read_manifest(root)
    description = {
        "source": "dataset",
        "name": manifest["name"],
        "sha256": manifest["sha256"],
        "counts": manifest["counts"],
        "labels": [e["label_id"] for e in manifest["labelled"]],
        "inspections": [e["inspection_id"] for e in manifest["labelled"]],
        "generated": manifest["recipe"].get("generated"),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="train-", dir=cache_dir) as tmp:
        work = Path(tmp)
        classes = dataset_classes(root)
        data_yaml = write_data_yaml(root, target=work / "data.yaml", classes=classes)
        folder = train_model_version(
            config,
            models_dir,
            data_yaml,
            data_description=description,
            workdir=work / "runs",
            init_from=init_from,
            progress=progress,
            on_epoch=on_epoch,
            classes=classes,
        )
    generator = {c.value for c in DefectClass}
    if eval_count and generator <= set(classes):  # calibrates the decision threshold first, then every scenario
        record_standard_evaluations(folder, count=eval_count, progress=progress)
    elif eval_count:  # a plant's own classes: the generated scenarios cannot judge it
        from core.evaluation import record_dataset_evaluation

        record_dataset_evaluation(folder, root, progress=progress)
    detector = Detector(folder)
    held_out = evaluate_phones(detector, yolo_split_phones(root, "val", class_map_for(classes, detector.info.class_names)[0]))
    card = read_card(folder)
    card.setdefault("evaluation", {})["held_out"] = {"dataset": manifest["name"], **held_out}
    write_card(folder, card)
    progress(f"held-out split of {manifest['name']}: phone recall {held_out['phone_recall']:.3f}, false-reject rate {held_out['false_reject_rate']:.3f}")
    compute_model_reference(folder, dataset_images(root), progress=progress)
    return folder
