"""Render what the end-of-line camera sees: one phone on a conveyor belt, with known defects.

Everything is deterministic from a seed: the same ``(seed, conditions)`` gives the same pixels
and the same truth boxes. Images are BGR ``uint8`` arrays of shape ``(H, W, 3)``; boxes are
``xyxy`` in pixels of that image.

Drawing happens in three layers: the belt (background), the phone with its defects drawn in
the phone's own frame, then the camera (pose, lights, colour temperature, blur, noise, glare).
Defects are recorded as point sets so that the pose transform moves their boxes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.vocabulary import DefectClass

IMAGE_WIDTH = 480
IMAGE_HEIGHT = 360

#: Body colours (BGR) the model is trained on.
TRAINED_COLOURS: dict[str, tuple[int, int, int]] = {
    "graphite": (58, 56, 54),
    "silver": (200, 200, 196),
    "midnight-blue": (92, 52, 30),
    "gold": (120, 190, 222),
    "white": (235, 236, 238),
    "forest-green": (70, 100, 52),
}

#: Colours that never appear in training: the ``new-colour`` scenario paints phones with them.
UNSEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "coral": (110, 120, 250),
    "lavender": (225, 170, 190),
}


@dataclass(frozen=True)
class Conditions:
    """Camera and plant conditions for one photograph.

    Attributes:
        brightness: Light level multiplier; 1.0 is the lab lighting.
        colour_temperature: -1 (warm, orange) .. 0 (neutral) .. +1 (cold, blue).
        blur_sigma: Gaussian blur sigma in pixels (focus); 0 is sharp.
        noise_std: Sensor noise standard deviation in grey levels.
        glare: Strength 0..1 of a specular highlight on the phone.
        defect_rate: Probability that a phone carries at least one defect.
        defect_kinds: Relative weights of each defect kind on a defective phone.
        colours: Body colours to choose from.
    """

    brightness: float = 1.0
    colour_temperature: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 3.0
    glare: float = 0.0
    defect_rate: float = 0.3
    defect_kinds: dict[DefectClass, float] = field(default_factory=lambda: {DefectClass.SCRATCH: 0.75, DefectClass.DENT: 0.25})
    colours: tuple[str, ...] = tuple(TRAINED_COLOURS)

    def __post_init__(self) -> None:
        if not 0.0 <= self.defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be in [0, 1], got {self.defect_rate}")
        if self.brightness <= 0:
            raise ValueError(f"brightness must be > 0, got {self.brightness}")
        if self.blur_sigma < 0 or self.noise_std < 0 or not 0 <= self.glare <= 1:
            raise ValueError("blur_sigma and noise_std must be >= 0 and glare in [0, 1]")
        unknown = [c for c in self.colours if c not in TRAINED_COLOURS | UNSEEN_COLOURS]
        if unknown or not self.colours:
            raise ValueError(f"unknown colours {unknown}; choose from {sorted(TRAINED_COLOURS | UNSEEN_COLOURS)}")


@dataclass(frozen=True)
class Defect:
    """One ground-truth defect: its class and its box ``(x1, y1, x2, y2)`` in image pixels."""

    kind: DefectClass
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Phone:
    """One rendered photograph with its truth.

    Attributes:
        image: BGR uint8 array, shape ``(IMAGE_HEIGHT, IMAGE_WIDTH, 3)``.
        defects: Ground-truth defects; empty for a good phone.
        colour: Name of the body colour.
        side: ``"front"`` (screen up) or ``"back"`` (camera bump up).
        seed: The seed that produced this phone.
        conditions: The conditions it was photographed under.
    """

    image: np.ndarray
    defects: tuple[Defect, ...]
    colour: str
    side: str
    seed: int
    conditions: Conditions

    @property
    def is_defective(self) -> bool:
        return bool(self.defects)


def render_phone(seed: int, conditions: Conditions | None = None) -> Phone:
    """Render one phone photograph.

    Args:
        seed: Fixes everything random about this phone (model, pose, defects, noise).
        conditions: Camera and plant conditions; lab conditions when omitted.

    Returns:
        The photograph and its ground truth.
    """
    conditions = conditions or Conditions()
    rng = np.random.default_rng(seed)
    height, width = IMAGE_HEIGHT, IMAGE_WIDTH

    background = _draw_belt(rng, width, height)
    colour_name = str(rng.choice(list(conditions.colours)))
    body = np.array(TRAINED_COLOURS.get(colour_name) or UNSEEN_COLOURS[colour_name], dtype=np.float32)
    body = np.clip(body + rng.normal(0, 6, 3), 0, 255)

    # Phone lies landscape on the belt; its size varies between models.
    phone_w = int(rng.uniform(0.50, 0.62) * width)
    phone_h = int(phone_w * rng.uniform(0.44, 0.52))
    cx = width / 2 + rng.uniform(-0.06, 0.06) * width
    cy = height / 2 + rng.uniform(-0.06, 0.06) * height
    x1, y1 = int(cx - phone_w / 2), int(cy - phone_h / 2)
    x2, y2 = x1 + phone_w, y1 + phone_h
    radius = int(phone_h * rng.uniform(0.12, 0.2))
    side = "front" if rng.random() < 0.5 else "back"

    layer: np.ndarray = np.zeros((height, width, 3), np.float32)
    mask: np.ndarray = np.zeros((height, width), np.float32)
    _rounded_rect(mask, (x1, y1, x2, y2), radius, 1.0)
    _rounded_rect(layer, (x1, y1, x2, y2), radius, tuple(float(v) for v in body))
    # A slightly darker rim gives the phone an edge the eye (and the model) can find.
    rim = np.zeros_like(mask)
    _rounded_rect(rim, (x1 + 3, y1 + 3, x2 - 3, y2 - 3), max(radius - 3, 1), 1.0)
    layer[(mask > 0) & (rim == 0)] *= 0.75

    if side == "front":
        bezel = max(4, int(phone_h * 0.06))
        screen = (x1 + bezel, y1 + bezel, x2 - bezel, y2 - bezel)
        shade = float(rng.uniform(12, 30))
        _rounded_rect(layer, screen, max(radius - bezel, 2), (shade + 4, shade + 2, shade))
        cv2.circle(layer, (x1 + bezel + 10, int(cy)), 3, (5, 5, 5), -1, cv2.LINE_AA)
        surface = screen
    else:
        bump = int(phone_h * rng.uniform(0.34, 0.42))
        bx, by = x1 + int(phone_h * 0.08), y1 + int(phone_h * 0.08)
        _rounded_rect(layer, (bx, by, bx + bump, by + bump), bump // 5, tuple(float(v) for v in body * 0.8))
        for lx, ly in ((0.3, 0.3), (0.7, 0.3), (0.3, 0.7)):
            centre = (bx + int(bump * lx), by + int(bump * ly))
            cv2.circle(layer, centre, bump // 6, (20, 20, 20), -1, cv2.LINE_AA)
            cv2.circle(layer, centre, bump // 10, (60, 45, 40), -1, cv2.LINE_AA)
        surface = (bx + bump + 6, y1 + 8, x2 - 10, y2 - 8)

    defects: list[tuple[DefectClass, np.ndarray]] = []
    if rng.random() < conditions.defect_rate:
        kinds = list(conditions.defect_kinds)
        weights = np.array([conditions.defect_kinds[k] for k in kinds], dtype=float)
        for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
            kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
            points = _DEFECT_PAINTERS[kind](layer, mask, rng, surface, (x1, y1, x2, y2), body)
            defects.append((kind, points))

    # Pose jitter: a small rotation about the phone's centre.
    angle = float(rng.uniform(-5, 5))
    affine = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    layer = cv2.warpAffine(layer, affine, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, affine, (width, height), flags=cv2.INTER_LINEAR)[..., None]
    shadow = cv2.GaussianBlur(np.roll(mask[..., 0], (6, 6), axis=(0, 1)), (0, 0), 5)[..., None] * 0.35
    image = background * (1 - shadow) * (1 - mask) + layer * mask

    boxes = tuple(Defect(kind, _transformed_box(points, affine, width, height)) for kind, points in defects)
    image = _apply_camera(image, rng, conditions, (cx, cy))
    return Phone(image, boxes, colour_name, side, seed, conditions)


def _draw_belt(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A grey rubber conveyor belt with rollers' seams and texture."""
    base = rng.uniform(95, 120)
    belt = np.full((height, width, 3), base, np.float32)
    belt += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    offset = int(rng.integers(0, 60))
    for x in range(offset, width, 60):
        belt[:, x : x + 2] -= 18
    belt[: int(height * 0.06)] = base * 0.55
    belt[-int(height * 0.06) :] = base * 0.55
    return belt


def _rounded_rect(img: np.ndarray, box: tuple[int, int, int, int], radius: int, value: float | tuple[float, ...]) -> None:
    x1, y1, x2, y2 = box
    radius = max(1, min(radius, (x2 - x1) // 2, (y2 - y1) // 2))
    cv2.rectangle(img, (x1 + radius, y1), (x2 - radius, y2), value, -1)
    cv2.rectangle(img, (x1, y1 + radius), (x2, y2 - radius), value, -1)
    for corner in ((x1 + radius, y1 + radius), (x2 - radius, y1 + radius), (x1 + radius, y2 - radius), (x2 - radius, y2 - radius)):
        cv2.circle(img, corner, radius, value, -1, cv2.LINE_AA)


def _stroke_tone(rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    """A scratch is lighter than a dark surface and darker than a light one, by a varied contrast."""
    contrast = rng.uniform(55, 120)
    return np.clip(local + (contrast if local.mean() < 128 else -contrast), 0, 255)


def _paint_scratch(layer, mask, rng, surface, phone, body) -> np.ndarray:  # noqa: ANN001 - painter table
    sx1, sy1, sx2, sy2 = surface
    length = rng.uniform(28, 0.55 * (sx2 - sx1))
    start = np.array([rng.uniform(sx1 + 4, sx2 - 4), rng.uniform(sy1 + 4, sy2 - 4)])
    heading = rng.uniform(0, np.pi)
    curve = rng.uniform(-0.9, 0.9) if rng.random() < 0.5 else 0.0
    steps = 24
    t = np.linspace(0, 1, steps)
    angles = heading + curve * t
    deltas = np.stack([np.cos(angles), np.sin(angles)], axis=1) * (length / steps)
    points = start + np.cumsum(deltas, axis=0)
    points[:, 0] = np.clip(points[:, 0], sx1 + 2, sx2 - 2)
    points[:, 1] = np.clip(points[:, 1], sy1 + 2, sy2 - 2)
    cx, cy = points.mean(axis=0).astype(int)
    tone = _stroke_tone(rng, layer[cy, cx])
    thickness = int(rng.choice([2, 2, 3]))
    cv2.polylines(layer, [points.astype(np.int32).reshape(-1, 1, 2)], False, tuple(float(v) for v in tone), thickness, cv2.LINE_AA)
    return np.vstack([points - thickness / 2 - 1, points + thickness / 2 + 1])


def _paint_dent(layer, mask, rng, surface, phone, body) -> np.ndarray:  # noqa: ANN001 - painter table
    sx1, sy1, sx2, sy2 = surface
    rx, ry = rng.uniform(8, 18), rng.uniform(6, 14)
    centre = np.array([rng.uniform(sx1 + rx + 2, sx2 - rx - 2), rng.uniform(sy1 + ry + 2, sy2 - ry - 2)])
    h, w = layer.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx - centre[0]) / rx) ** 2 + ((yy - centre[1]) / ry) ** 2
    # A dent catches light on one side and is in shadow on the other.
    shading = np.exp(-d * 1.5) * np.sign(xx - centre[0] + 0.5 * (yy - centre[1]))
    strength = rng.uniform(50, 85)
    layer += (shading * strength)[..., None]
    ring = np.abs(np.sqrt(d) - 1.0) < 0.12
    layer[ring] *= 0.7
    np.clip(layer, 0, 255, out=layer)
    half = np.array([rx + 2, ry + 2])
    return np.array([centre - half, centre + half])


def _paint_chip(layer, mask, rng, surface, phone, body) -> np.ndarray:  # noqa: ANN001 - painter table
    """A chip bitten out of the phone's edge: never in training (the ``new-defect`` scenario)."""
    x1, y1, x2, y2 = phone
    size = rng.uniform(10, 18)
    edge = int(rng.integers(0, 2))
    x = rng.uniform(x1 + 0.25 * (x2 - x1), x2 - 0.25 * (x2 - x1))
    y = y1 if edge == 0 else y2
    n = 9
    # Angles that point into the phone: downwards from the top edge, upwards from the bottom.
    angles = np.linspace(0, np.pi, n) if edge == 0 else np.linspace(np.pi, 2 * np.pi, n)
    radii = size * rng.uniform(0.6, 1.0, n)
    points = np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], axis=1)
    polygon = points.astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [polygon], 0.0)
    # The broken material shows a bright raw edge around the bite.
    cv2.polylines(layer, [polygon], False, (235, 235, 235), 2, cv2.LINE_AA)
    cv2.polylines(mask, [polygon], False, 1.0, 2, cv2.LINE_AA)
    return np.vstack([points - 2, points + 2])


_DEFECT_PAINTERS = {DefectClass.SCRATCH: _paint_scratch, DefectClass.DENT: _paint_dent, DefectClass.CHIP: _paint_chip}


def _transformed_box(points: np.ndarray, affine: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    moved = np.hstack([points, np.ones((len(points), 1))]) @ affine.T
    x1, y1 = np.clip(moved.min(axis=0), 0, [width - 1, height - 1])
    x2, y2 = np.clip(moved.max(axis=0), 0, [width - 1, height - 1])
    return (round(float(x1), 1), round(float(y1), 1), round(float(x2), 1), round(float(y2), 1))


def _apply_camera(image: np.ndarray, rng: np.random.Generator, c: Conditions, centre: tuple[float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    if c.glare > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        gx, gy = centre[0] + rng.uniform(-60, 60), centre[1] + rng.uniform(-40, 40)
        spot = np.exp(-(((xx - gx) / 70) ** 2 + ((yy - gy) / 30) ** 2))
        image = image + (c.glare * 160 * spot)[..., None]
    # Colour temperature: warm light boosts red and cuts blue, cold light the reverse (BGR order).
    t = c.colour_temperature
    image = image * np.array([1 + 0.18 * t, 1.0, 1 - 0.18 * t], np.float32) * c.brightness
    if c.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), c.blur_sigma)
    if c.noise_std > 0:
        image = image + rng.normal(0, c.noise_std, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)
