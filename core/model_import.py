"""Import a plant's own detector: an Ultralytics ``best.pt`` or an ONNX exported from one.

The model tells us what it is: its task, class names and training size come from the ``.pt``
itself (or from the metadata Ultralytics writes into an ONNX export), never from the command line.
A ``.pt`` is exported to ONNX here with a fixed input whose shape follows the line camera's aspect
(:func:`onnx_input_for`). The version folder gets ``model.onnx`` (and ``model.pt``), and a card
like a trained version's: classes, input size, the source file with its sha256, library versions,
who imported it and when. Anything that is not a YOLO detector is refused with a
:class:`ModelImportError` whose message names the problem, and no folder is left behind.

The drift reference, the admission check and the decision threshold of an imported version come
later, from the plant's own images (``shadowline evaluate --record`` / ``reference compute
--dataset``): until then the version may run in shadow but decides no phone on its own.
"""

from __future__ import annotations

import ast
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.detector.card import WEIGHTS_ONNX, WEIGHTS_PT, ModelError, sha256_file, write_card

#: Aspect (width / height) of the camera assumed when none is given: the shipped line's 4:3 frames.
DEFAULT_CAMERA_ASPECT = 4 / 3
#: Tasks Ultralytics knows besides detection, as people call them.
_OTHER_TASKS = {"segment": "a segmentation model", "classify": "a classification model", "pose": "a pose model", "obb": "an oriented-box model"}


class ModelImportError(ModelError):
    """A file that cannot become a model version; nothing was written or registered."""


@dataclass(frozen=True)
class ModelFacts:
    """What an imported file says about itself.

    Attributes:
        kind: ``pt`` or ``onnx``.
        class_names: ``{id: name}`` in class-id order.
        imgsz: Training size (the longer side), pixels.
        stride: Largest stride of the detection head.
        onnx_input: Fixed input ``(height, width)`` of an ONNX file (None for a ``.pt``: chosen at export).
        architecture: The model YAML, when known.
        exported_with: Ultralytics version that wrote an ONNX, when recorded.
    """

    kind: str
    class_names: dict[int, str]
    imgsz: int
    stride: int
    onnx_input: tuple[int, int] | None
    architecture: str | None
    exported_with: str | None = None


def onnx_input_for(imgsz: int, stride: int, camera_aspect: float) -> tuple[int, int]:
    """The ``(height, width)`` ONNX input for a camera of aspect ``width / height``.

    The longer side is the training size; the shorter one the camera's aspect of it, rounded up to
    the head's stride (a 4:3 camera and a 320 model: 256x320, the shipped model's input).
    """
    if camera_aspect <= 0:
        raise ValueError(f"camera aspect must be > 0, got {camera_aspect}")
    stride = max(1, stride)
    side = int(math.ceil(imgsz / stride) * stride)
    if camera_aspect >= 1:
        return int(math.ceil(side / camera_aspect / stride) * stride), side
    return side, int(math.ceil(side * camera_aspect / stride) * stride)


def _metadata_dict(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, dict):
        return None
    return {int(k): str(v) for k, v in value.items()}


def inspect_onnx(path: Path, class_names: list[str] | None = None) -> ModelFacts:
    """Read an ONNX file and check that its outputs are a YOLO detection head.

    A YOLO detection export has one input ``(1, 3, H, W)`` of fixed size and a first output of shape
    ``(1, 4 + classes, anchors)``: boxes ``cx, cy, w, h`` and one score per class, before NMS.

    Args:
        class_names: Names to use when the file carries none (an ONNX not written by Ultralytics).
    """
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError, OSError, ...: all mean "not an ONNX model"
        raise ModelImportError(f"{path.name}: not an ONNX model ({type(error).__name__})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    task = meta.get("task", "detect")
    if task in _OTHER_TASKS:
        raise ModelImportError(f"{path.name} is {_OTHER_TASKS[task]}, not a detection model: Shadowline needs a YOLO detector (boxes and classes)")
    graph = model.graph
    initialisers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ModelImportError(f"{path.name} has {len(inputs)} inputs; a YOLO detector has one image input")
    in_dims = inputs[0].type.tensor_type.shape.dim
    if len(in_dims) != 4 or any(not d.HasField("dim_value") for d in in_dims[2:]):
        raise ModelImportError(f"{path.name}: the image input is not of fixed size (1, 3, H, W): export it again with dynamic=False")
    height, width = int(in_dims[2].dim_value), int(in_dims[3].dim_value)
    if in_dims[1].HasField("dim_value") and in_dims[1].dim_value != 3:
        raise ModelImportError(f"{path.name}: the input has {in_dims[1].dim_value} channels; a YOLO detector takes 3 (RGB)")
    names = _metadata_dict(meta.get("names"))
    if names is None and class_names:
        names = dict(enumerate(class_names))
    if not graph.output:
        raise ModelImportError(f"{path.name} has no outputs")
    out_dims = graph.output[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in out_dims]
    if len(shape) != 3 or shape[1] is None or shape[2] is None or shape[1] < 5 or shape[2] <= shape[1]:
        hint = " (NMS inside the graph? export with nms=False)" if len(shape) == 3 and shape[2] in (6, 7) else ""
        raise ModelImportError(f"{path.name}: its output has shape {tuple(shape)}, not a YOLO detection head (1, 4 + classes, anchors){hint}")
    if len(graph.output) > 1:
        raise ModelImportError(f"{path.name}: {len(graph.output)} outputs (masks or keypoints?), a YOLO detection head has one")
    classes = int(shape[1]) - 4
    if names is None:
        raise ModelImportError(f"{path.name} does not say its class names ({classes} classes): give them with --classes a,b,...")
    if len(names) != classes:
        raise ModelImportError(f"{path.name}: its head scores {classes} classes but it names {len(names)} ({', '.join(names.values())})")
    stride = int(meta.get("stride", 32)) if str(meta.get("stride", "32")).isdigit() else 32
    return ModelFacts(
        kind="onnx",
        class_names=names,
        imgsz=max(height, width),
        stride=stride,
        onnx_input=(height, width),
        architecture=None,
        exported_with=meta.get("version"),
    )


def inspect_pt(path: Path) -> ModelFacts:
    """Read an Ultralytics ``.pt`` (a pickle: import only files your own lab made)."""
    from core.detector import ultralytics_backend

    try:
        facts = ultralytics_backend.inspect_checkpoint(path)
    except ValueError as error:
        raise ModelImportError(f"{path.name}: {error}") from None
    except ImportError:  # a runtime installed without the training libraries
        raise ModelImportError(f"{path.name}: reading a .pt needs Ultralytics and torch, not installed here; import its ONNX export instead") from None
    if facts.task in _OTHER_TASKS:
        raise ModelImportError(f"{path.name} is {_OTHER_TASKS[facts.task]}, not a detection model: Shadowline needs a YOLO detector (boxes and classes)")
    if facts.task != "detect" or facts.model_class != "DetectionModel":
        raise ModelImportError(f"{path.name} is a {facts.model_class} ({facts.task}), not a YOLO detection model")
    return ModelFacts(kind="pt", class_names=facts.class_names, imgsz=facts.imgsz, stride=facts.stride, onnx_input=None, architecture=facts.architecture)


def _check_names(names: dict[int, str]) -> None:
    if sorted(names) != list(range(len(names))):
        raise ModelImportError(f"class ids {sorted(names)} are not 0..{len(names) - 1}")
    values = list(names.values())
    if len(set(values)) != len(values) or any(not v.strip() for v in values):
        raise ModelImportError(f"class names must be distinct and not empty, got {values}")


def _library_versions(kind: str) -> dict[str, str]:
    if kind == "pt":
        from core.detector import ultralytics_backend

        return ultralytics_backend.library_versions()
    import cv2
    import numpy as np
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def import_model(
    source: Path,
    version: str,
    models_dir: Path,
    *,
    actor: str,
    camera_aspect: float | None = None,
    class_names: list[str] | None = None,
    progress: Any = print,
) -> Path:
    """Check ``source``, export it when it is a ``.pt``, and write ``models_dir/<version>/``.

    Args:
        source: An Ultralytics detection ``.pt`` or an ONNX exported from one.
        version: Name of the new version (its folder).
        actor: Who imports it (recorded in the card).
        camera_aspect: Width / height of the line's camera frames (default 4:3) for the ONNX input shape.
        class_names: Class names for an ONNX that carries none.

    Returns:
        The new version folder (not yet registered: the caller registers it).

    Raises:
        ModelImportError: The file is not a YOLO detector, or the version exists; nothing written.
    """
    source = Path(source)
    if not version or "/" in version or version.startswith(".") or version != version.strip():
        raise ModelImportError(f"invalid version name {version!r}")
    target = Path(models_dir) / version
    if target.exists():
        raise ModelImportError(f"model version {version!r} already exists at {target}: choose another --version")
    if not source.is_file():
        raise ModelImportError(f"{source}: no such file")
    if source.stat().st_size == 0:
        raise ModelImportError(f"{source.name}: the file is empty (0 bytes)")
    suffix = source.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise ModelImportError(f"{source.name}: expected an Ultralytics .pt or an .onnx exported from one")
    facts = inspect_pt(source) if suffix == ".pt" else inspect_onnx(source, class_names)
    _check_names(facts.class_names)
    aspect = camera_aspect or DEFAULT_CAMERA_ASPECT
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".import-{version}-", dir=models_dir) as tmp:
        staging = Path(tmp) / version
        staging.mkdir()
        if facts.kind == "pt":
            shutil.copyfile(source, staging / WEIGHTS_PT)
            onnx_input = onnx_input_for(facts.imgsz, facts.stride, aspect)
            from core.training import export_onnx_into

            progress(f"exporting {source.name} to ONNX with input {onnx_input[1]}x{onnx_input[0]} (camera aspect {aspect:.2f})")
            try:
                export_onnx_into(staging, onnx_input)
            except Exception as error:  # an export failure leaves nothing behind
                raise ModelImportError(f"{source.name}: the ONNX export failed ({type(error).__name__}: {str(error)[:160]})") from None
            inspect_onnx(staging / WEIGHTS_ONNX, list(facts.class_names.values()))  # the export is a detection head too
        else:
            shutil.copyfile(source, staging / WEIGHTS_ONNX)
            assert facts.onnx_input is not None
            onnx_input = facts.onnx_input
        _check_loads(staging / WEIGHTS_ONNX)
        weights = {
            name: {"sha256": sha256_file(staging / name), "bytes": (staging / name).stat().st_size}
            for name in (WEIGHTS_PT, WEIGHTS_ONNX)
            if (staging / name).is_file()
        }
        now = datetime.now(UTC).isoformat(timespec="seconds")
        card: dict[str, Any] = {
            "version": version,
            "task": "detect",
            "classes": {str(k): v for k, v in sorted(facts.class_names.items())},
            "architecture": facts.architecture,
            "init_from": None,
            "imgsz": facts.imgsz,
            "onnx_input": list(onnx_input),
            "source": {
                "file": source.name,
                "path": str(source.resolve()),
                "sha256": sha256_file(source),
                "bytes": source.stat().st_size,
                "kind": facts.kind,
                "exported_with": facts.exported_with,
            },
            "data": {"source": "imported"},
            "imported_by": actor,
            "imported_at": now,
            "created_at": now,
            "weights": weights,
            "libraries": _library_versions(facts.kind),
            "evaluation": {},
        }
        write_card(staging, card)
        shutil.move(str(staging), target)
    progress(f"model {version}: {len(facts.class_names)} classes ({', '.join(facts.class_names.values())}), input {onnx_input[1]}x{onnx_input[0]}: {target}")
    return target


def _check_loads(weights: Path) -> None:
    """onnxruntime must load the file and answer one blank image with the expected head."""
    import numpy as np

    from core.detector.onnx_backend import OnnxPredictor

    try:
        predictor = OnnxPredictor(weights)
        predictor.predict(np.full((predictor.input_size[0], predictor.input_size[1], 3), 114, np.uint8), 0.5, 0.5)
    except Exception as error:  # a graph onnx can read but onnxruntime cannot run
        raise ModelImportError(f"{weights.name}: onnxruntime cannot run it ({type(error).__name__}: {str(error)[:160]})") from None
