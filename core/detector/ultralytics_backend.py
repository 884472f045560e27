"""The one module that imports Ultralytics: training, ONNX export and ``.pt`` prediction.

Ultralytics is imported lazily, inside functions, after :func:`configure_offline` has set the
environment so that it never reaches for the network: no font, asset, checkpoint or package
download, ever. Everything else in Shadowline talks to the detector through
:mod:`core.detector.adapter`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.extras import require_training
from core.settings import get_settings

#: The Ultralytics architecture the shipped model is built from (no pretrained weights).
DEFAULT_ARCHITECTURE = "yolov8n.yaml"


def configure_offline(config_dir: Path | None = None, *, feature: str = "this") -> Path:
    """Point Ultralytics at a project-owned config folder and forbid downloads.

    Must run before ``import ultralytics``. Puts a TTF font where Ultralytics looks for
    ``Arial.ttf`` so its plotting and dataset checks never try to download one. Every use of
    Ultralytics passes here first, so an installation without the ``train`` extra is told how to
    add it (:class:`core.extras.TrainingUnavailableError`) before anything is imported.

    Args:
        config_dir: Ultralytics' config folder (default: under the cache folder).
        feature: What needs Ultralytics, for the message when the ``train`` extra is missing.

    Returns:
        The config folder used.
    """
    require_training(feature)
    config_dir = config_dir or get_settings().cache_dir / "ultralytics"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = font_dir / name
        if not target.exists():
            import matplotlib

            source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            shutil.copyfile(source, target)
    return config_dir


@dataclass(frozen=True)
class EpochProgress:
    """What the trainer reports after each epoch."""

    epoch: int
    epochs: int
    losses: dict[str, float]
    metrics: dict[str, float]


def train(
    data_yaml: Path,
    workdir: Path,
    *,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
    architecture: str = DEFAULT_ARCHITECTURE,
    threads: int = 2,
    on_epoch: Callable[[EpochProgress], None] | None = None,
    augment: dict[str, float] | None = None,
    optimiser: dict[str, float | str] | None = None,
    init_weights: Path | None = None,
) -> Path:
    """Train a detector from its YAML architecture, with no pretrained weights.

    Args:
        data_yaml: A YOLO-format data file.
        workdir: Folder for Ultralytics' run output.
        epochs: Training epochs.
        imgsz: Square training image size in pixels.
        batch: Batch size.
        seed: Training seed.
        architecture: Ultralytics model YAML, from the package's own configs.
        threads: Torch CPU threads.
        on_epoch: Called after each epoch with losses and validation metrics.
        augment: Overrides of Ultralytics augmentation hyper-parameters.
        optimiser: Overrides of Ultralytics optimiser settings (``optimizer``, ``lr0``, ``warmup_epochs``, ...).
        init_weights: Start from these ``.pt`` weights (one of our own model versions, already
            checked against its card) instead of random initialisation.

    Returns:
        Path of the best ``.pt`` checkpoint.
    """
    configure_offline(feature="training")
    import torch
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # Ultralytics trains on cpu_count-1 threads; on a small machine use every core.
    torch_utils.NUM_THREADS = threads
    torch.set_num_threads(threads)
    model = YOLO(str(init_weights)) if init_weights else YOLO(architecture)

    if on_epoch is not None:

        def report(trainer: Any) -> None:
            if trainer.epoch + 1 > trainer.epochs:
                return  # the final re-validation of the best weights, not a new epoch
            # Ultralytics keeps the running mean of each loss in a dict of scalar tensors.
            losses = {str(k).split("/")[-1]: float(v) for k, v in (trainer.tloss or {}).items()}
            metrics = {k.split("/")[-1].replace("(B)", ""): float(v) for k, v in (trainer.metrics or {}).items()}
            on_epoch(EpochProgress(trainer.epoch + 1, trainer.epochs, losses, metrics))

        model.add_callback("on_fit_epoch_end", report)

    model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        deterministic=True,
        # False would make Ultralytics rebuild from the YAML and drop init_weights (never downloads here).
        pretrained=init_weights is not None,
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        project=str(workdir),
        name="train",
        exist_ok=True,
        verbose=False,
        **(augment or {}),
        **(optimiser or {}),
    )
    trainer = model.trainer
    assert trainer is not None, "Ultralytics keeps its trainer after train()"
    best = Path(trainer.best)
    return best if best.exists() else Path(trainer.last)


def export_onnx(weights: Path, input_size: tuple[int, int]) -> Path:
    """Export ``weights`` to ONNX beside it, with a fixed input ``(1, 3, height, width)`` and no NMS inside."""
    configure_offline(feature="ONNX export")
    from ultralytics import YOLO

    exported = YOLO(str(weights)).export(format="onnx", imgsz=list(input_size), simplify=True, dynamic=False, device="cpu", verbose=False)
    return Path(exported)


class UltralyticsPredictor:
    """Ultralytics' own ``predict`` on a ``.pt`` file: the reference path, slower but simple."""

    def __init__(self, weights: Path, imgsz: int) -> None:
        configure_offline(feature="running a .pt model (the ultralytics backend)")
        from ultralytics import YOLO

        self._model: Any = YOLO(str(weights), task="detect")
        self._imgsz = imgsz
        self.class_names: dict[int, str] = dict(self._model.names)

    def predict(self, image_bgr: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` xyxy in pixels, confidences ``(N,)`` and class ids ``(N,)``."""
        result = self._model.predict(image_bgr, imgsz=self._imgsz, conf=conf, iou=iou, device="cpu", verbose=False)[0]
        boxes = result.boxes
        return (
            boxes.xyxy.cpu().numpy().astype(np.float32),
            boxes.conf.cpu().numpy().astype(np.float32),
            boxes.cls.cpu().numpy().astype(np.int64),
        )


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model, for its card."""
    configure_offline(feature="training")
    import cv2
    import onnxruntime
    import torch
    import ultralytics

    return {
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


@dataclass(frozen=True)
class CheckpointFacts:
    """What an Ultralytics ``.pt`` says about itself.

    Attributes:
        task: Ultralytics' task (``detect``, ``segment``, ``classify``, ``pose``, ``obb``).
        class_names: ``{id: name}`` in class-id order.
        imgsz: The square size it was trained at, in pixels.
        stride: The largest stride of its head (input sides must be multiples of it).
        architecture: The model YAML it was built from (e.g. ``yolov8n.yaml``), when recorded.
        model_class: The Python class of the network (``DetectionModel``...).
    """

    task: str
    class_names: dict[int, str]
    imgsz: int
    stride: int
    architecture: str | None
    model_class: str


def inspect_checkpoint(weights: Path) -> CheckpointFacts:
    """Load an Ultralytics ``.pt`` and read its task, classes and training size.

    A ``.pt`` is a pickle: loading it may run code. Only files the plant's own lab made belong here.

    Raises:
        ValueError: The file is not a checkpoint Ultralytics can load (the message says why).
    """
    configure_offline()
    from ultralytics import YOLO

    try:
        model: Any = YOLO(str(weights))
    except Exception as error:  # Ultralytics raises many kinds for a file that is not its checkpoint
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].replace("ERROR ❌️ ", "").replace("ERROR ", "")[:200]
        raise ValueError(f"not a model file Ultralytics can load ({type(error).__name__}: {first})") from None
    network = model.model
    if isinstance(network, (str, Path)) or network is None:
        raise ValueError("not an Ultralytics PyTorch checkpoint")
    args = dict(getattr(network, "args", {}) or {})
    imgsz = args.get("imgsz", 640)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(int(v) for v in imgsz)
    strides = getattr(network, "stride", None)
    stride = int(max(float(v) for v in strides)) if strides is not None and len(strides) else 32
    yaml_info = getattr(network, "yaml", {}) or {}
    return CheckpointFacts(
        task=str(model.task),
        class_names={int(k): str(v) for k, v in dict(model.names).items()},
        imgsz=int(imgsz),
        stride=stride,
        architecture=str(yaml_info.get("yaml_file")) if yaml_info.get("yaml_file") else None,
        model_class=type(network).__name__,
    )
