"""The typed value every detector result travels in, whatever backend produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes found on one image.

    Attributes:
        xyxy: Boxes, shape ``(N, 4)``, float32, ``x1, y1, x2, y2`` in pixels of the input image.
        confidence: Shape ``(N,)``, float32, in ``[0, 1]``.
        class_id: Shape ``(N,)``, int64, indices into ``class_names``.
        class_names: ``{class_id: name}`` of the model.
        model_version: The model version that produced them.
        latency_ms: Wall time of preprocessing, inference and NMS, in milliseconds.
        image_size: ``(width, height)`` of the input image in pixels.
        features: The model's own view of the image, shape ``(F,)`` float32: its deepest backbone
            feature map, average-pooled (what the admission check compares); None when the backend
            gives none.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: dict[int, str] = field(default_factory=dict)
    model_version: str = ""
    latency_ms: float = 0.0
    image_size: tuple[int, int] = (0, 0)
    features: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(f"confidence and class_id must have shape ({n},), got {self.confidence.shape} and {self.class_id.shape}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, **kwargs: Any) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), **kwargs)

    @property
    def max_confidence(self) -> float:
        """Highest box confidence, 0.0 when there is no box."""
        return float(self.confidence.max()) if len(self) else 0.0

    def above(self, threshold: float) -> Detections:
        """A copy with only the boxes of confidence ``>= threshold``."""
        keep = self.confidence >= threshold
        return Detections(
            self.xyxy[keep], self.confidence[keep], self.class_id[keep], self.class_names, self.model_version, self.latency_ms, self.image_size, self.features
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Plain JSON-ready rows ``{x1, y1, x2, y2, confidence, class_id, class_name}``."""
        return [
            {
                "x1": round(float(b[0]), 1),
                "y1": round(float(b[1]), 1),
                "x2": round(float(b[2]), 1),
                "y2": round(float(b[3]), 1),
                "confidence": round(float(c), 4),
                "class_id": int(k),
                "class_name": self.class_names.get(int(k), str(int(k))),
            }
            for b, c, k in zip(self.xyxy, self.confidence, self.class_id, strict=True)
        ]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], **kwargs: Any) -> Detections:
        """Inverse of :meth:`to_records`."""
        if not records:
            return cls.empty(**kwargs)
        return cls(
            np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in records], np.float32),
            np.array([r["confidence"] for r in records], np.float32),
            np.array([r["class_id"] for r in records], np.int64),
            **kwargs,
        )
