"""Versioned YOLO-format data sets: labelled production phones mixed with generated ones by a recipe.

``shadowline dataset export`` writes ``DATA_DIR/datasets/<name>/`` with ``images/{train,val}``,
``labels/{train,val}`` (YOLO text: ``class cx cy w h``, normalised), ``data.yaml`` (what
Ultralytics and other YOLO tools read) and ``manifest.json``: the recipe, every labelled phone
with its inspection, label and labeller, the sha256 of every file and of the whole set.

A labelled phone's split is drawn from its serial, so it lands in the same split in every
export: a phone held out once is never trained on by a later version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.detector.card import class_list, read_card, sha256_file
from core.routing import share_draw
from core.settings import Settings
from core.training import DataRecipe, build_generated_dataset, yolo_label_lines
from core.vocabulary import DefectClass

MANIFEST = "manifest.json"


class DatasetError(ValueError):
    """A data set that cannot be exported as asked."""


@dataclass(frozen=True)
class ExportRecipe:
    """What goes into an exported data set.

    Attributes:
        name: Folder name (a version: exports never overwrite).
        line: Only this line's labelled phones (None: every line).
        val_share: Share of labelled phones held out for validation (drawn from the serial).
        generated: The generated phones mixed in (0 train and val for none).
        min_labelled: Refuse to export fewer labelled phones than this.
        classes: The classes of the version the set is for, in its id order: labels (which keep
            class names) are mapped to them; a phone with a class they lack is left out and reported.
            None: the line's active version's (without a line: the active version all lines share,
            else the shipped one's).
    """

    name: str
    line: str | None = None
    val_share: float = 0.2
    generated: DataRecipe = field(default_factory=lambda: DataRecipe(train_count=200, val_count=40, train_seed=5000, val_seed=6000, defect_rate=0.6))
    min_labelled: int = 1
    classes: tuple[str, ...] | None = None


def split_of(serial: str, val_share: float) -> str:
    """``val`` or ``train``, fixed by the serial for every export."""
    return "val" if share_draw(serial, "dataset-split") < val_share else "train"


def export_dataset(database: Any, settings: Settings, recipe: ExportRecipe, *, progress: Callable[[str], None] = print) -> Path:
    """Write the data set; returns its folder."""
    from core.imaging import InvalidImageError, read_image
    from db.labels import truths
    from db.lines import get_line, list_lines
    from db.models import Inspection

    if not recipe.name or "/" in recipe.name or recipe.name.startswith("."):
        raise DatasetError(f"invalid data set name {recipe.name!r}")
    root = settings.data_dir / "datasets" / recipe.name
    if root.exists():
        raise DatasetError(f"data set {recipe.name!r} already exists at {root}: choose another name (exports are versions)")
    from db.registry import model_classes

    with database.read() as session:
        line = get_line(session=session, name=recipe.line) if recipe.line else None
        line_id = line.id if line else None
        labelled = truths(session=session, line_id=line_id)
        if recipe.classes:
            classes = list(recipe.classes)
        else:  # the line's active version; for every line, their active version when they share one
            active = {line.active_model_id} if line else {other.active_model_id for other in list_lines(session=session)}
            classes = model_classes(session=session, model_id=active.pop()) if len(active) == 1 else []
        inspections = {i.id: (i.serial, i.image_path) for i in session.query(Inspection).filter(Inspection.id.in_(list(labelled))).all()} if labelled else {}
    if len(labelled) < recipe.min_labelled:
        raise DatasetError(f"{len(labelled)} labelled phones with an agreed or adjudicated label; the recipe needs at least {recipe.min_labelled}")
    if not classes:
        classes = class_list(read_card(settings.shipped_model_dir))
    generated = recipe.generated
    lacking = sorted({c.value for c in DefectClass} - set(classes))
    if lacking and generated.train_count + generated.val_count:
        progress(f"no generated phones: the target classes ({', '.join(classes)}) lack the generator's {', '.join(lacking)}")
        generated = replace(generated, train_count=0, val_count=0)
    data_yaml = build_generated_dataset(root, generated, progress=progress, classes=classes)
    entries = []
    skipped = []
    missing_classes: dict[str, int] = {}
    for inspection_id, label in sorted(labelled.items()):
        serial, image_path = inspections[inspection_id]
        try:
            image = read_image(settings.image_file(image_path))
        except InvalidImageError as error:
            skipped.append({"inspection_id": inspection_id, "why": str(error)})
            continue
        unknown = sorted({b.class_name for b in label.boxes} - set(classes))
        if unknown:
            for name in unknown:
                missing_classes[name] = missing_classes.get(name, 0) + 1
            skipped.append({"inspection_id": inspection_id, "why": f"class {', '.join(unknown)} is not one of the target's ({', '.join(classes)})"})
            continue
        split = split_of(serial, recipe.val_share)
        stem = f"label-{inspection_id}"
        target = root / "images" / split / f"{stem}{Path(image_path).suffix or '.jpg'}"
        target.write_bytes((settings.image_file(image_path)).read_bytes())
        height, width = image.shape[:2]
        boxes = [(classes.index(b.class_name), (b.x1, b.y1, b.x2, b.y2)) for b in label.boxes]
        (root / "labels" / split / f"{stem}.txt").write_text("\n".join(yolo_label_lines(boxes, width, height)))
        entries.append(
            {
                "inspection_id": inspection_id,
                "serial": serial,
                "label_id": label.id,
                "labeller": label.labeller,
                "verdict": label.verdict.value,
                "boxes": len(label.boxes),
                "split": split,
                "file": str(target.relative_to(root)),
            }
        )
    files = {str(path.relative_to(root)): sha256_file(path) for path in sorted(root.rglob("*")) if path.is_file() and path.name != MANIFEST}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    counts = {
        "labelled_train": sum(1 for e in entries if e["split"] == "train"),
        "labelled_val": sum(1 for e in entries if e["split"] == "val"),
        "generated_train": generated.train_count,
        "generated_val": generated.val_count,
    }
    manifest = {
        "name": recipe.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": {**asdict(recipe), "generated": asdict(generated)},
        "classes": classes,
        "classes_target_lacks": missing_classes,
        "labelled": entries,
        "skipped": skipped,
        "counts": counts,
        "files": files,
        "sha256": digest,
        "data_yaml": str(data_yaml.relative_to(root)),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if missing_classes:
        progress(
            "left out, their classes are not the target's: "
            + ", ".join(f"{n} phone(s) with {name}" for name, n in sorted(missing_classes.items()))
            + f" (target classes: {', '.join(classes)})"
        )
    progress(f"data set {recipe.name}: {len(entries)} labelled phones ({counts['labelled_val']} held out) + generated; sha256 {digest[:12]}")
    return root


def read_manifest(root: Path) -> dict[str, Any]:
    """A data set's manifest, after checking every file against it."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root} has no {MANIFEST}: export it with `shadowline dataset export`")
    manifest: dict[str, Any] = json.loads(path.read_text())
    for relative, digest in manifest["files"].items():
        file = Path(root) / relative
        if not file.is_file() or sha256_file(file) != digest:
            raise DatasetError(f"{file} is missing or changed since the export: refusing to train on it")
    return manifest
