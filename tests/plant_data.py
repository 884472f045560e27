"""A plant's own material, made in the test: photographs with cracks and stains, YOLO and COCO data sets, a tiny best.pt.

Nothing here is the shipped generator: other classes (``crack``, ``stain``), other sizes and formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

PLANT_CLASSES = ("crack", "stain")
#: Camera frames a plant may have: (width, height, grey).
CAMERA_FRAMES = ((1280, 1024, True), (2448, 2048, False), (640, 480, False), (1000, 800, True), (1280, 720, False))


def plant_photo(
    seed: int, width: int = 160, height: int = 120, *, grey: bool = False, defects: bool = True
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One photograph (BGR, or single-channel when ``grey``) and its boxes ``(class_index, x1, y1, x2, y2)`` in pixels."""
    rng = np.random.default_rng(seed)
    base = rng.integers(70, 110)
    image = np.full((height, width, 3), (base, base + 10, base + 20), np.uint8)
    image = np.clip(image.astype(np.int16) + rng.normal(0, 4, (height, width, 1)).astype(np.int16), 0, 255).astype(np.uint8)
    boxes: list[tuple[int, float, float, float, float]] = []
    if defects:
        u = width / 160
        x, y = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.35) * height
        cv2.rectangle(image, (int(x), int(y)), (int(x + 40 * u), int(y + 8 * u)), (245, 245, 245), -1)
        boxes.append((0, float(int(x)), float(int(y)), float(int(x + 40 * u)), float(int(y + 8 * u))))
        if rng.random() < 0.7:
            cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.6, 0.8) * height, 12 * u
            cv2.circle(image, (int(cx), int(cy)), int(r), (30, 50, 170), -1)
            boxes.append((1, float(int(cx - r)), float(int(cy - r)), float(int(cx + r)), float(int(cy + r))))
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image, boxes


def write_yolo_dataset(root: Path, *, train: int = 24, val: int = 10, seed: int = 0, size: tuple[int, int] = (160, 120), suffix: str = ".jpg") -> Path:
    """A YOLO data set (as Label Studio or Roboflow export it); returns its data.yaml."""
    for split, count, offset in (("train", train, 0), ("val", val, 10_000)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, boxes = plant_photo(seed + offset + index, *size, defects=index % 4 != 3)
            cv2.imwrite(str(root / "images" / split / f"{split}-{index:03d}{suffix}"), image)
            height, width = image.shape[:2]
            lines = [
                f"{c} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}" for c, x1, y1, x2, y2 in boxes
            ]
            (root / "labels" / split / f"{split}-{index:03d}.txt").write_text("\n".join(lines))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(PLANT_CLASSES))
    )
    return data_yaml


def write_coco_dataset(root: Path, *, count: int = 30, seed: int = 500, frames: tuple[tuple[int, int, bool], ...] = ((200, 160, False),)) -> Path:
    """A COCO detection JSON with its images (as CVAT exports it: ``annotations.json`` beside ``images/``); returns the JSON."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    # Categories numbered from 1 in another order than the YOLO set: names, not ids, must carry the meaning.
    categories = [{"id": 1, "name": "stain", "supercategory": "defect"}, {"id": 2, "name": "crack", "supercategory": "defect"}]
    category_of = {0: 2, 1: 1}
    for index in range(count):
        width, height, grey = frames[index % len(frames)]
        image, boxes = plant_photo(seed + index, width, height, grey=grey, defects=index % 4 != 3)
        name = f"photo-{index:03d}.png"
        cv2.imwrite(str(root / "images" / name), image)
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
        for c, x1, y1, x2, y2 in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_of[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def train_tiny_plant_model(workdir: Path) -> Path:
    """Train a tiny Ultralytics detector (1 epoch, 64 px) on a generated YOLO set; returns its best.pt."""
    from core.detector import ultralytics_backend

    data_yaml = write_yolo_dataset(workdir / "lab-data", train=8, val=4, seed=9000)
    return ultralytics_backend.train(data_yaml, workdir / "runs", epochs=1, imgsz=64, batch=4, augment={"mosaic": 0.0})
