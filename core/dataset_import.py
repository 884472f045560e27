"""Import a plant's labelled images (YOLO or COCO detection) as a versioned data set.

``shadowline dataset import PATH --name N`` reads a YOLO data set (``data.yaml`` with ``train``
and ``val``, labels beside the images as Ultralytics expects them) or a COCO detection JSON with its
images (one file, or a folder with ``train/`` and ``valid/``/``val/`` folders each holding one, as
Roboflow exports them). Every image and box is checked first: a missing image, an empty or
undecodable image file, a box outside its image, a class id the data set does not name. Each
problem is reported with its file; with any problem nothing is stored (``skip_bad`` stores the good
images and lists the rest in the manifest).

The stored set has the layout of ``shadowline dataset export`` (``images/{train,val}``,
``labels/{train,val}`` in YOLO text, ``data.yaml``, ``manifest.json`` with the sha256 of every
file and of the whole set), so ``train --dataset``, ``evaluate --dataset`` and ``reference compute
--dataset`` read both alike. Images are copied byte for byte, in their own size and format; boxes
stay in each image's own coordinates (normalised in the YOLO text).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.dataset import MANIFEST, DatasetError, split_of
from core.detector.card import sha256_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: A box may stick out of its image by this many pixels (labelling tools round) before it is an error.
EDGE_TOLERANCE_PX = 1.0
SPLITS = ("train", "val")


@dataclass
class ImportedImage:
    """One image to store: its source file, split, size and boxes ``(class_index, x1, y1, x2, y2)`` in pixels."""

    source: Path
    split: str
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    width: int = 0
    height: int = 0


@dataclass
class DatasetCheck:
    """What was read, and every problem found (one line each, naming the file)."""

    format: str
    classes: list[str]
    images: list[ImportedImage]
    problems: list[str]


def _image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image file, decoding it (which also checks it)."""
    from core.imaging import read_image

    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])


def _check_images(images: list[ImportedImage], classes: list[str], problems: list[str]) -> None:
    """Sizes of the images; boxes inside them, of known classes."""
    from core.imaging import InvalidImageError

    for item in images:
        if not item.source.is_file():
            problems.append(f"{item.source}: missing image")
            continue
        if item.source.stat().st_size == 0:
            problems.append(f"{item.source}: empty file (0 bytes)")
            continue
        try:
            width, height = _image_size(item.source)
        except InvalidImageError as error:
            problems.append(f"{item.source}: not a readable image ({str(error).split(': ', 1)[-1]})")
            continue
        if item.width and item.height and (item.width, item.height) != (width, height):
            problems.append(f"{item.source}: the annotations say {item.width}x{item.height} px, the image is {width}x{height}")
        item.width, item.height = width, height
        for class_index, x1, y1, x2, y2 in item.boxes:
            if not 0 <= class_index < len(classes):
                problems.append(f"{item.source}: unknown class id {class_index} (the data set names {len(classes)}: {', '.join(classes)})")
            tol = EDGE_TOLERANCE_PX
            if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
                problems.append(f"{item.source}: box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) lies outside the {width}x{height} image")
            elif x2 <= x1 or y2 <= y1:
                problems.append(f"{item.source}: box ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) has no area")


# -- YOLO ---------------------------------------------------------------------------------------


def _yolo_names(raw: Any, data_yaml: Path) -> list[str]:
    if isinstance(raw, list):
        return [str(n) for n in raw]
    if isinstance(raw, dict):
        ids = sorted(int(k) for k in raw)
        if ids != list(range(len(ids))):
            raise DatasetError(f"{data_yaml}: class ids {ids} are not 0..{len(ids) - 1}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in ids]
    raise DatasetError(f"{data_yaml}: no class names (`names:` as a list or a mapping)")


def _yolo_split_images(root: Path, entry: Any, data_yaml: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for value in entries:
        where = Path(str(value))
        where = where if where.is_absolute() else root / where
        if where.is_dir():
            found = sorted(p for p in where.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            images += found
            # A label file whose image is gone: the image is missing (listed under its would-be name).
            labels = _yolo_label_path(where / "x.jpg").parent
            stems = {_yolo_label_path(p) for p in found}
            if labels.is_dir() and labels != where:
                images += [where / label.relative_to(labels).with_suffix("") for label in sorted(labels.rglob("*.txt")) if label not in stems]
        elif where.is_file() and where.suffix == ".txt":  # a list of image paths, one a line
            for line in where.read_text().splitlines():
                if line.strip():
                    path = Path(line.strip())
                    images.append(path if path.is_absolute() else root / path)
        else:
            raise DatasetError(f"{data_yaml}: {value} is neither a folder of images nor a list of them ({where} does not exist)")
    return images


def _yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_yolo(path: Path) -> DatasetCheck:
    """A YOLO data set from its ``data.yaml`` (or the folder holding it)."""
    import yaml

    data_yaml = path if path.is_file() else path / "data.yaml"
    if not data_yaml.is_file():
        raise DatasetError(f"{path}: no data.yaml")
    try:
        config = yaml.safe_load(data_yaml.read_text()) or {}
    except yaml.YAMLError as error:
        raise DatasetError(f"{data_yaml}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise DatasetError(f"{data_yaml}: expected a mapping with train, val and names")
    classes = _yolo_names(config.get("names"), data_yaml)
    # `path:` may be relative to the YAML, absolute, or an absolute path from the lab's machine (then the YAML's folder).
    base = Path(str(config["path"])) if config.get("path") else None
    if base is None:
        root = data_yaml.parent
    elif not base.is_absolute():
        root = data_yaml.parent / base
    else:
        root = base if base.is_dir() else data_yaml.parent
    problems: list[str] = []
    images: list[ImportedImage] = []
    for split, key in (("train", "train"), ("val", "val")):
        if key not in config:
            raise DatasetError(f"{data_yaml}: no `{key}:` entry (a YOLO data set needs train and val)")
        for image_path in _yolo_split_images(root, config[key], data_yaml):
            item = ImportedImage(image_path, split)
            images.append(item)
            label = _yolo_label_path(image_path)
            if not label.is_file():
                continue  # no label file: an image with no defect
            rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
            if not image_path.is_file() or image_path.stat().st_size == 0:
                continue
            try:
                width, height = _image_size(image_path)
            except ValueError:
                continue  # reported by the image check
            for number, row in enumerate(rows, start=1):
                if len(row) != 5:
                    problems.append(f"{label}: line {number} has {len(row)} values, a box needs 5 (class cx cy w h)")
                    continue
                try:
                    class_index = int(row[0])
                    cx, cy, w, h = (float(v) for v in row[1:])
                except ValueError:
                    problems.append(f"{label}: line {number} is not numbers: {' '.join(row)}")
                    continue
                item.boxes.append((class_index, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    _check_images(images, classes, problems)
    return DatasetCheck("yolo", classes, images, problems)


# -- COCO ---------------------------------------------------------------------------------------


def _read_coco_file(json_path: Path, split: str | None, val_share: float, problems: list[str], classes: list[str]) -> list[ImportedImage]:
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{json_path}: not a readable COCO JSON ({error})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data or "categories" not in data:
        raise DatasetError(f"{json_path}: a COCO detection file needs images, annotations and categories")
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    # Roboflow adds a super-category holding every class; it never has boxes of its own.
    used = {int(a["category_id"]) for a in data["annotations"]}
    for _, name in sorted(categories.items()):
        if name not in classes and (any(cid in used for cid, n in categories.items() if n == name) or not used):
            classes.append(name)
    folder = json_path.parent / "images" if (json_path.parent / "images").is_dir() else json_path.parent
    by_id: dict[int, ImportedImage] = {}
    for entry in data["images"]:
        source = folder / str(entry["file_name"])
        if not source.exists() and (json_path.parent / str(entry["file_name"])).exists():
            source = json_path.parent / str(entry["file_name"])
        item_split = split or split_of(Path(str(entry["file_name"])).stem, val_share)
        by_id[int(entry["id"])] = ImportedImage(source, item_split, width=int(entry.get("width") or 0), height=int(entry.get("height") or 0))
    for annotation in data["annotations"]:
        item = by_id.get(int(annotation["image_id"]))
        if item is None:
            problems.append(f"{json_path}: annotation {annotation.get('id')} refers to image id {annotation['image_id']}, which the file does not list")
            continue
        category = int(annotation["category_id"])
        category_name = categories.get(category)
        if category_name is None or category_name not in classes:
            problems.append(f"{item.source}: unknown class id {category} (category not in {json_path.name})")
            continue
        class_index = classes.index(category_name)
        x, y, w, h = (float(v) for v in annotation["bbox"])
        item.boxes.append((class_index, x, y, x + w, y + h))
    return list(by_id.values())


def read_coco(path: Path, *, val_share: float = 0.2) -> DatasetCheck:
    """A COCO detection data set: one JSON file, or a folder with ``train/`` and ``valid/`` (or ``val/``) each holding one."""
    problems: list[str] = []
    classes: list[str] = []
    images: list[ImportedImage] = []
    if path.is_file():
        images = _read_coco_file(path, None, val_share, problems, classes)
    else:
        for split, folders in (("train", ("train",)), ("val", ("valid", "val", "validation"))):
            folder = next((path / f for f in folders if (path / f).is_dir()), None)
            jsons = sorted(folder.glob("*.json")) if folder else []
            if len(jsons) != 1:
                raise DatasetError(f"{path}: expected one COCO JSON in {'/'.join(folders)}/, found {len(jsons)}")
            images += _read_coco_file(jsons[0], split, val_share, problems, classes)
    _check_images(images, classes, problems)
    return DatasetCheck("coco", classes, images, problems)


def read_any(path: Path, *, val_share: float = 0.2) -> DatasetCheck:
    """YOLO when ``path`` is or holds a ``data.yaml``; COCO for a ``.json`` or a folder of split folders holding one each."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.name.endswith((".yaml", ".yml")) or (path.is_dir() and (path / "data.yaml").is_file()):
        return read_yolo(path)
    if path.suffix == ".json" or path.is_dir():
        return read_coco(path, val_share=val_share)
    raise DatasetError(f"{path}: expected a YOLO data set (data.yaml) or a COCO detection JSON")


# -- storing ------------------------------------------------------------------------------------


def import_dataset(
    source: Path, name: str, datasets_dir: Path, *, val_share: float = 0.2, skip_bad: bool = False, progress: Callable[[str], None] = print
) -> Path:
    """Check and store a plant's data set as ``datasets_dir/<name>/``; returns its folder.

    Raises:
        DatasetError: The format is not recognised, the name is taken, or (without ``skip_bad``) any
            image or box has a problem; the message lists every problem with its file.
    """
    from core.training import yolo_label_lines

    if not name or "/" in name or name.startswith("."):
        raise DatasetError(f"invalid data set name {name!r}")
    root = Path(datasets_dir) / name
    if root.exists():
        raise DatasetError(f"data set {name!r} already exists at {root}: choose another name (data sets are versions)")
    check = read_any(Path(source), val_share=val_share)
    if not check.classes:
        raise DatasetError(f"{source}: the data set names no classes")
    bad_files = {p.split(": ", 1)[0] for p in check.problems}
    if check.problems and not skip_bad:
        shown = "\n  ".join(check.problems[:50])
        more = f"\n  ... and {len(check.problems) - 50} more" if len(check.problems) > 50 else ""
        raise DatasetError(f"{len(check.problems)} problem(s) in {source}; nothing imported (--skip-bad imports the rest):\n  {shown}{more}")
    kept = [item for item in check.images if str(item.source) not in bad_files]
    if not kept:
        raise DatasetError(f"{source}: no usable images")
    staging = Path(datasets_dir) / f".{name}.importing"
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    used: set[str] = set()
    entries = []
    try:
        for split in SPLITS:
            (staging / "images" / split).mkdir(parents=True)
            (staging / "labels" / split).mkdir(parents=True)
        for item in kept:
            stem = item.source.stem
            while f"{item.split}/{stem}" in used:
                stem = f"{stem}-{len(used)}"
            used.add(f"{item.split}/{stem}")
            target = staging / "images" / item.split / f"{stem}{item.source.suffix.lower()}"
            shutil.copyfile(item.source, target)
            boxes = [(c, (max(0.0, x1), max(0.0, y1), min(float(item.width), x2), min(float(item.height), y2))) for c, x1, y1, x2, y2 in item.boxes]
            (staging / "labels" / item.split / f"{stem}.txt").write_text("\n".join(yolo_label_lines(boxes, item.width, item.height)))
            entries.append(
                {
                    "file": str(target.relative_to(staging)),
                    "source": str(item.source),
                    "split": item.split,
                    "size": [item.width, item.height],
                    "boxes": len(boxes),
                }
            )
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(check.classes))
        (staging / "data.yaml").write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
        files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file() and p.name != MANIFEST}
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        boxes_per_class = Counter(check.classes[c] for item in kept for c, *_ in item.boxes)
        counts = {
            "train": sum(1 for i in kept if i.split == "train"),
            "val": sum(1 for i in kept if i.split == "val"),
            "labelled_train": 0,
            "labelled_val": 0,
            "generated_train": 0,
            "generated_val": 0,
            "boxes": {c: boxes_per_class.get(c, 0) for c in check.classes},
            "images_with_boxes": sum(1 for i in kept if i.boxes),
        }
        manifest = {
            "name": name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "imported": {"format": check.format, "source": str(Path(source).resolve()), "val_share": val_share if check.format == "coco" else None},
            "classes": check.classes,
            "recipe": {"name": name, "generated": {"train_count": 0, "val_count": 0}},
            "labelled": [],
            "images": entries,
            "skipped": sorted(check.problems),
            "counts": counts,
            "files": files,
            "sha256": digest,
            "data_yaml": "data.yaml",
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        staging.replace(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(describe(manifest))
    return root


def describe(manifest: dict[str, Any]) -> str:
    """What a stored data set holds, for people: images per split, boxes per class."""
    counts = manifest["counts"]
    boxes = ", ".join(f"{c} {n}" for c, n in counts.get("boxes", {}).items()) or "none"
    skipped = f"; {len(manifest['skipped'])} problem(s) skipped" if manifest.get("skipped") else ""
    return (
        f"data set {manifest['name']}: {counts['train'] + counts['val']} images ({counts['train']} train, {counts['val']} val), "
        f"{counts.get('images_with_boxes', 0)} with boxes; boxes per class: {boxes}{skipped}; sha256 {manifest['sha256'][:12]}"
    )


def dataset_classes(root: Path) -> list[str]:
    """The class names of a stored data set, in its label files' id order (imported or exported)."""
    import yaml

    manifest_path = Path(root) / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("classes"):
            return [str(c) for c in manifest["classes"]]
    config = yaml.safe_load((Path(root) / "data.yaml").read_text()) or {}
    return _yolo_names(config.get("names"), Path(root) / "data.yaml")
