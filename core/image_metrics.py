"""Input metrics of one image: what data-drift monitoring compares with the reference.

All metrics except the size are computed on the image resized to :data:`METRICS_WIDTH` pixels
wide, so that a camera of another resolution does not by itself look like drift (sharpness
especially depends on scale).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

METRICS_WIDTH = 320
#: Colour statistics need no detail: they are taken on a thumbnail this wide.
COLOUR_WIDTH = 80


@dataclass(frozen=True)
class InputMetrics:
    """Per-image input metrics.

    Attributes:
        width: Original width in pixels.
        height: Original height in pixels.
        brightness: Mean grey level, 0..255.
        contrast: Standard deviation of grey levels.
        sharpness: Variance of the Laplacian (falls when the camera blurs).
        colourfulness: Hasler and Süsstrunk's colourfulness (0 for grey images).
        mean_b: Mean blue channel, 0..255.
        mean_g: Mean green channel, 0..255.
        mean_r: Mean red channel, 0..255.
    """

    width: int
    height: int
    brightness: float
    contrast: float
    sharpness: float
    colourfulness: float
    mean_b: float
    mean_g: float
    mean_r: float

    def as_dict(self) -> dict[str, float]:
        # What dataclasses.asdict gives, without its deep copy of each float (a fifth of the time; read per phone).
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(field.name for field in fields(InputMetrics))


def scaled_for_metrics(image_bgr: np.ndarray) -> np.ndarray:
    """The image resized (bilinear) to :data:`METRICS_WIDTH` pixels wide, the scale the metrics are taken at.

    A detector whose input is that wide resizes a landscape image to exactly this size too, so it
    can take this copy instead of resizing again (:func:`core.detector.onnx_backend.letterbox`).
    """
    height, width = image_bgr.shape[:2]
    if width == METRICS_WIDTH:
        return image_bgr
    new_h = max(1, round(height * METRICS_WIDTH / width))
    return cv2.resize(image_bgr, (METRICS_WIDTH, new_h), interpolation=cv2.INTER_LINEAR)


def compute_input_metrics(image_bgr: np.ndarray, *, scaled: np.ndarray | None = None) -> InputMetrics:
    """Metrics of a BGR ``uint8`` image of shape ``(H, W, 3)``.

    Args:
        scaled: :func:`scaled_for_metrics` of the image, when the caller has it already.
    """
    height, width = image_bgr.shape[:2]
    small = scaled if scaled is not None else scaled_for_metrics(image_bgr)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    grey_mean, grey_std = cv2.meanStdDev(grey)
    # Smoothed first so sensor noise does not read as detail: blur must lower the score.
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(cv2.GaussianBlur(grey, (5, 5), 1.0), cv2.CV_32F))
    thumb_h = max(1, round(small.shape[0] * COLOUR_WIDTH / small.shape[1]))
    thumb = cv2.resize(small, (COLOUR_WIDTH, thumb_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    b, g, r = thumb[..., 0], thumb[..., 1], thumb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    return InputMetrics(
        width=int(width),
        height=int(height),
        brightness=float(grey_mean[0, 0]),
        contrast=float(grey_std[0, 0]),
        sharpness=float(laplacian_std[0, 0] ** 2),
        colourfulness=colourfulness,
        mean_b=float(b.mean()),
        mean_g=float(g.mean()),
        mean_r=float(r.mean()),
    )
