"""Optional parts of an installation: the ``train`` extra (Ultralytics and torch).

An edge box beside a line installs only the runtime (``pip install shadowline``): the worker,
the prediction server, the app and the command line run the ONNX export with onnxruntime and
never import torch or Ultralytics. Training, exporting to ONNX and running a ``.pt`` need
``pip install 'shadowline[train]'``; a feature that needs it and finds it missing says so in one
line (:class:`TrainingUnavailableError`) instead of failing with an ImportError.
"""

from __future__ import annotations

import importlib.util

#: The one command that adds what training needs to an edge installation.
TRAIN_EXTRA_INSTALL = "pip install 'shadowline[train]'"
#: Packages only the ``train`` extra brings.
TRAIN_PACKAGES = ("ultralytics", "torch", "torchvision")


class TrainingUnavailableError(RuntimeError):
    """A training feature was used on an installation without the ``train`` extra."""


def training_available() -> bool:
    """Whether Ultralytics and torch are installed (found without importing them)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("ultralytics", "torch"))
    except (ImportError, ValueError):  # a broken or blocked installation of either
        return False


def training_hint(feature: str) -> str:
    """One line saying that ``feature`` needs the train extra, and how to add it."""
    return f"{feature} needs Ultralytics and torch, which this installation leaves out (an edge install): {TRAIN_EXTRA_INSTALL}"


def require_training(feature: str) -> None:
    """Raise :class:`TrainingUnavailableError` naming ``feature`` when the train extra is missing."""
    if not training_available():
        raise TrainingUnavailableError(training_hint(feature))


def is_training_import_error(error: BaseException) -> bool:
    """Whether ``error`` is an import of a package only the ``train`` extra brings."""
    return isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in TRAIN_PACKAGES
