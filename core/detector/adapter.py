"""The detector as the rest of Shadowline sees it: load a model version, check it, detect.

A model version is a folder with ``card.json`` and weights (``model.onnx``, ``model.pt``). Before
anything is loaded, the sha256 of the weights file is compared with the card (and with the hash
the registry recorded, when given): a ``.pt`` file is a pickle and may run code, so weights the
card does not vouch for are refused with :class:`ModelIntegrityError`.

On CPU the ONNX export with onnxruntime is the shipped path (``shadowline bench detector``
measures it against Ultralytics' ``predict``); ``backend="ultralytics"`` runs the ``.pt``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from core.detector.card import WEIGHTS_FILES, ModelError, ModelIntegrityError, ModelNotFoundError, read_card, verify_weights
from core.detector.detections import Detections
from core.imaging import decode_image_bytes, read_image, to_bgr8

Backend = Literal["auto", "onnx", "ultralytics"]

#: Boxes below this confidence are dropped before NMS: low enough for mAP and the policy's band.
DEFAULT_MIN_CONFIDENCE = 0.05
#: A phone is rejected when a box reaches this confidence (the model's own verdict).
DEFAULT_DECISION_THRESHOLD = 0.35
DEFAULT_IOU = 0.5


class _Predictor(Protocol):
    def predict(self, image_bgr: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded detector knows about itself."""

    version: str
    backend: str
    imgsz: int
    class_names: dict[int, str]
    decision_threshold: float
    weights_sha256: str
    model_dir: Path


class Detector:
    """A loaded, verified model version.

    Args:
        model_dir: The version folder.
        backend: ``"onnx"``, ``"ultralytics"`` or ``"auto"`` (ONNX when its export exists).
        expected_sha256: The registry's hash of the weights, checked as well as the card's.
        threads: CPU threads for onnxruntime (0 = its default).
        spin: onnxruntime's idle threads spin-wait (see :class:`core.detector.onnx_backend.OnnxPredictor`).
        narrow_when_busy: An inference that starts while another runs takes one thread (the same class).
    """

    def __init__(
        self,
        model_dir: Path,
        backend: Backend = "auto",
        *,
        expected_sha256: str | None = None,
        threads: int = 0,
        spin: bool = True,
        narrow_when_busy: bool = False,
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelNotFoundError(f"model folder {model_dir} does not exist")
        card = read_card(model_dir)
        if backend == "auto":
            backend = "onnx" if (model_dir / WEIGHTS_FILES["onnx"]).is_file() else "ultralytics"
        if backend not in WEIGHTS_FILES:
            raise ValueError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(WEIGHTS_FILES)}")
        weights = verify_weights(model_dir, card, backend, expected_sha256)
        imgsz = int(card["imgsz"])
        predictor: _Predictor
        try:
            if backend == "onnx":
                from core.detector.onnx_backend import OnnxPredictor

                predictor = OnnxPredictor(weights, threads=threads, spin=spin, narrow_when_busy=narrow_when_busy)
            else:
                from core.detector.ultralytics_backend import UltralyticsPredictor

                predictor = UltralyticsPredictor(weights, imgsz)
        except Exception as error:  # a file that passed the hash but does not load is still unusable
            raise ModelNotFoundError(f"could not load {weights}: {error}") from error
        self._predictor = predictor
        self.card = card
        self.info = ModelInfo(
            version=str(card["version"]),
            backend=backend,
            imgsz=imgsz,
            class_names={int(k): str(v) for k, v in card["classes"].items()},
            decision_threshold=float(card.get("decision_threshold", DEFAULT_DECISION_THRESHOLD)),
            weights_sha256=card["weights"][WEIGHTS_FILES[backend]]["sha256"],
            model_dir=model_dir,
        )

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def gives_features(self) -> bool:
        """Whether :meth:`detect` also returns the model's pooled features (the ONNX path does)."""
        return bool(getattr(self._predictor, "gives_features", False))

    def detect(
        self,
        image: np.ndarray | bytes | Path,
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        iou: float = DEFAULT_IOU,
        resized: np.ndarray | None = None,
    ) -> Detections:
        """Find defects on one image.

        Args:
            image: A decoded array (any of the kinds :func:`core.imaging.to_bgr8` accepts), encoded
                bytes, or a file path.
            min_confidence: Boxes below this are dropped.
            iou: NMS overlap threshold.
            resized: The BGR image already resized (bilinear) for its input metrics; the ONNX path
                uses it instead of resizing again when the sizes agree (the result is the same).

        Raises:
            core.imaging.InvalidImageError: The input is not an image that can be inspected.
        """
        if isinstance(image, bytes):
            bgr = decode_image_bytes(image)
        elif isinstance(image, (str, Path)):
            bgr = read_image(Path(image))
        else:
            bgr = to_bgr8(image)
        started = time.perf_counter()
        features = None
        predict_with_features = getattr(self._predictor, "predict_with_features", None)
        if predict_with_features is not None:
            boxes, confidence, classes, features = predict_with_features(bgr, min_confidence, iou, resized=resized)
        else:
            boxes, confidence, classes = self._predictor.predict(bgr, min_confidence, iou)
        latency_ms = (time.perf_counter() - started) * 1000
        return Detections(
            boxes,
            confidence,
            classes,
            class_names=self.info.class_names,
            model_version=self.info.version,
            latency_ms=latency_ms,
            image_size=(bgr.shape[1], bgr.shape[0]),
            features=features,
        )

    def verdict_is_reject(self, detections: Detections) -> bool:
        """The model's own verdict: reject when a box reaches the decision threshold."""
        return detections.max_confidence >= self.info.decision_threshold


__all__ = ["Detections", "Detector", "ModelError", "ModelInfo", "ModelIntegrityError", "ModelNotFoundError"]
