"""The edge install: the runtime never imports torch or Ultralytics, and training says how to add them.

An edge box installs only the runtime (``pip install .``). These tests run the real runtime in a
fresh interpreter: once checking ``sys.modules`` after importing every runtime module and
inspecting a phone, once with torch and Ultralytics made unimportable (as on an edge box) while
the real command line initialises an installation, simulates phones, runs the worker and asks to
train.
"""

from __future__ import annotations

import json
import subprocess
import sys

from core.extras import TRAIN_EXTRA_INSTALL
from tests.conftest import cli_env

TRAIN_ONLY = ("torch", "torchvision", "ultralytics")

# Imports every module of the runtime packages, then inspects one phone as the worker does
# (ONNX detector with its feature output, input metrics, admission check); prints what got loaded.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import core, db, app
skipped = {"app.main"}  # Streamlit's entry point: a script run by `streamlit run`, covered by the AppTests
names = []
for package in (core, db, app):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name not in skipped and ".migrations.versions" not in info.name:
            importlib.import_module(info.name)
            names.append(info.name)
from core.admission import load_admitter
from core.camera import get_scenario, render_run_phone
from core.detector.adapter import Detector
from core.image_metrics import compute_input_metrics
from core.settings import get_settings
detector = Detector(get_settings().shipped_model_dir)
phone = render_run_phone(get_scenario("normal"), 5, 0).image
detections = detector.detect(phone)
answer = load_admitter(detector).check(phone, compute_input_metrics(phone), detections.features)
loaded = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ultralytics")})
print(json.dumps({"modules": names, "loaded": loaded, "admitted": answer.admitted, "features": detector.gives_features}))
"""

# The command line with the train extra's packages unimportable, as on an edge box: a finder
# first on sys.meta_path refuses them (other libraries, SciPy for one, only look into sys.modules).
EDGE_CLI = f"""
import sys
class NoTrainExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TRAIN_ONLY}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, NoTrainExtra())
from core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_no_runtime_module_imports_torch_or_ultralytics_even_when_inspecting(settings) -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], env=cli_env(settings), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the runtime imported {result['loaded']}"
    # The walk really covered the runtime: the worker, the service, the detector, the app's state.
    for name in ("core.worker", "core.server.app", "core.detector.onnx_backend", "core.detector.ultralytics_backend", "core.cli", "db.pipeline", "app.state"):
        assert name in result["modules"]
    assert result["features"] and result["admitted"]


def _edge(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", EDGE_CLI, *args], env=cli_env(settings), capture_output=True, text=True, timeout=300, check=False)


def test_an_edge_install_runs_the_line_and_says_how_to_add_training(settings) -> None:
    assert _edge(settings, "init").returncode == 0
    simulated = _edge(settings, "simulate", "--line", "line-1", "--count", "6", "--rate", "1000", "--inspector", "none")
    assert simulated.returncode == 0, simulated.stderr
    worked = _edge(settings, "worker", "--until-empty")
    assert worked.returncode == 0, worked.stderr
    status = json.loads(_edge(settings, "status", "--json").stdout)
    line = next(line for line in status["lines"] if line["line"] == "line-1")
    assert line["queue_depth"] == 0 and sum(line["counts"].values()) == 6, line

    for args in (("train", "--version", "edge-try", "--epochs", "1"), ("job", "run", "1")):
        refused = _edge(settings, *args)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith("error: ") and TRAIN_EXTRA_INSTALL in refused.stderr, refused.stderr
    assert not (settings.models_dir / "edge-try").exists()
