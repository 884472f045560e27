"""INT8 as a model version of its own: ``model quantize`` on the real shipped model.

The parent is a copy of ``scratch-v2`` whose card names a small data recipe (its weights are the
real ones, still vouched for by the card), so that the reference, the admission check and the
evaluation run in test time; the shipped INT8 figures come from the full run (README).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from sqlalchemy import select

from core.admission import load_admitter
from core.auth import CurrentUser
from core.camera import get_scenario, render_run_phone
from core.detector.adapter import Detector
from core.detector.card import ModelIntegrityError, read_card, sha256_file, write_card
from core.evaluation import DEFAULT_EVAL_SEED, STANDARD_SCENARIOS
from core.image_metrics import compute_input_metrics
from core.quantization import QuantizationError, compare_with_parent, quantize_version, record_evaluations
from core.vocabulary import Role
from tests.conftest import SHIPPED_MODEL_DIR, cli, cli_env


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Path, Path]:
    """A small-recipe parent (the real scratch-v2 weights) and its INT8 version, made once."""
    models = tmp_path_factory.mktemp("models")
    parent = models / "scratch-v2"
    parent.mkdir()
    for name in ("model.onnx", "model.pt", "card.json"):
        shutil.copy(SHIPPED_MODEL_DIR / name, parent / name)
    card = read_card(parent)
    card["data"]["recipe"].update(train_count=20, val_count=12)
    write_card(parent, card)
    record_evaluations(parent, count=10, progress=lambda _: None)  # the phones the INT8 version is evaluated on below
    target = quantize_version(parent, "scratch-v2-int8", calibration=8, eval_count=10, progress=lambda _: None)
    return parent, target


def test_the_int8_version_has_its_own_card_with_parent_calibration_and_method(quantized) -> None:
    parent, target = quantized
    card, parent_card = read_card(target), read_card(parent)
    assert card["version"] == "scratch-v2-int8" and card["classes"] == parent_card["classes"]
    assert card["parent"] == {"version": "scratch-v2", "onnx_sha256": parent_card["weights"]["model.onnx"]["sha256"]}
    assert card["weights"] == {"model.onnx": {"sha256": sha256_file(target / "model.onnx"), "bytes": (target / "model.onnx").stat().st_size}}
    quant = card["quantization"]
    images = quant["calibration"]["images"]
    assert len(images) == 8 and images[0]["name"] == "val-2000-00000" and all(len(i["sha256"]) == 64 for i in images)
    assert quant["calibration_method"] == "MinMax" and "QDQ" in quant["method"] and "per channel" in quant["weights"]
    assert "torch" not in card["libraries"] and card["libraries"]["onnxruntime"]
    assert card["decision_threshold"] == parent_card["decision_threshold"]
    # The head's decoding stays FP32; the backbone's convolutions are INT8 (their weights quantised).
    graph = onnx.load(str(target / "model.onnx")).graph
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)
    assert "/model.22/Concat_3" in quant["kept_fp32"]["nodes"] and "/model.22/Sigmoid" in quant["kept_fp32"]["nodes"]
    assert (target / "model.onnx").stat().st_size < (parent / "model.onnx").stat().st_size / 2
    # The stem (first convolution) stays FP32 by default: its weights are not quantised, the next module's are.
    assert quant["kept_fp32"]["stem"] is True and "/model.0/conv/Conv" in quant["kept_fp32"]["nodes"]
    weights_dequantised = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    convolutions = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert not set(convolutions["/model.0/conv/Conv"].input) & weights_dequantised - {convolutions["/model.0/conv/Conv"].input[0]}
    assert set(convolutions["/model.1/conv/Conv"].input[1:2]) <= weights_dequantised


def test_the_stem_is_quantised_when_asked() -> None:
    from core.quantization import nodes_kept_in_fp32

    graph = onnx.load(str(SHIPPED_MODEL_DIR / "model.onnx")).graph
    assert "/model.0/conv/Conv" in nodes_kept_in_fp32(graph)
    assert "/model.0/conv/Conv" not in nodes_kept_in_fp32(graph, fp32_stem=False)
    assert not [name for name in nodes_kept_in_fp32(graph, fp32_stem=False) if name.startswith("/model.0/")]


def test_the_int8_version_keeps_the_feature_output_and_gets_its_own_reference_and_admission_check(quantized) -> None:
    _, target = quantized
    card = read_card(target)
    detector = Detector(target)
    assert detector.gives_features
    admitter = load_admitter(detector)  # fitted on the INT8 model's own features, hash-checked against its card
    assert card["admission"]["images"] == 32 and card["reference"]["phones"] == 32
    assert json.loads((target / "reference.json").read_text())["model_version"] == "scratch-v2-int8"
    phone = render_run_phone(get_scenario("normal"), 31, 1).image
    detections = detector.detect(phone)
    assert detections.features is not None and detections.features.shape == (admitter.feature_size,)
    assert admitter.check(phone, compute_input_metrics(phone), detections.features).admitted
    assert not admitter.check(np.zeros_like(phone), compute_input_metrics(np.zeros_like(phone)), detections.features).admitted


def test_the_int8_version_is_evaluated_on_every_scenario_with_its_parents_seeds(quantized) -> None:
    parent, target = quantized
    evaluation = read_card(target)["evaluation"]
    assert set(evaluation) == set(STANDARD_SCENARIOS)
    assert {(e["seed"], e["count"], e["backend"]) for e in evaluation.values()} == {(DEFAULT_EVAL_SEED, 10, "onnx")}
    rows = compare_with_parent(target, parent)
    assert [r["scenario"] for r in rows] == list(STANDARD_SCENARIOS)
    # The same 10 phones per scenario: on normal ones the two versions find nearly the same boxes.
    normal = rows[0]
    assert normal["phones"] == 10 and abs(normal["map50"] - normal["parent_map50"]) < 0.15, normal


def test_a_line_runs_the_int8_version_as_its_candidate_beside_its_parent(quantized, database, settings) -> None:
    from core import deployment
    from core.line_simulator import simulate_line
    from core.worker import Worker
    from db.lines import get_line
    from db.models import Prediction
    from db.registry import register_model_version

    _, target = quantized
    with database.write() as session:
        register_model_version(session=session, model_dir=target, actor="test")
        line = get_line(session=session, name="line-1")
    deployment.set_candidate(database, CurrentUser("erin", Role.ENGINEER), line_name="line-1", version="scratch-v2-int8")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=4, rate=1000, seed=9, inspector=None)
    Worker(database, settings, monitor_drift=False).run(until_empty=True)
    with database.read() as session:
        rows = session.scalars(select(Prediction)).all()
    assert sorted(r.is_candidate for r in rows) == [False] * 4 + [True] * 4


def test_quantize_refuses_an_existing_version_and_tampered_weights(quantized, tmp_path) -> None:
    parent, _ = quantized
    with pytest.raises(QuantizationError, match="already exists"):
        quantize_version(parent, "scratch-v2-int8", eval_count=0, progress=lambda _: None)
    tampered = tmp_path / "scratch-v2"
    shutil.copytree(parent, tampered, ignore=shutil.ignore_patterns("*.json.tmp"))
    with (tampered / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelIntegrityError):
        quantize_version(tampered, "x-int8", eval_count=0, progress=lambda _: None)
    assert not (tmp_path / "x-int8").exists()


def test_model_quantize_of_an_unknown_version_is_one_line(settings) -> None:
    command = cli("model", "quantize", "--version", "nope", "--to", "nope-int8")
    done = subprocess.run(command, env=cli_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: no model version 'nope'") and done.stderr.count("\n") == 1, done.stderr


def test_bench_detector_json_is_one_object_with_each_path_and_its_ratio_to_ultralytics(quantized, settings) -> None:
    parent, target = quantized
    command = cli("bench", "detector", "--model", str(parent), "--int8", str(target), "--images", "3", "--rounds", "1", "--threads", "1", "--json")
    done = subprocess.run(command, env=cli_env(settings), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # the whole output is one JSON object
    assert set(result["paths"]) == {"ultralytics_pt_predict", "onnx_fp32", "onnx_int8"}
    for name, entry in result["paths"].items():
        assert entry["images_per_s"] > 0 and entry["p99_ms"] > 0
        if name != "ultralytics_pt_predict":
            ratio = entry["images_per_s"] / result["paths"]["ultralytics_pt_predict"]["images_per_s"]
            assert entry["ratio_vs_ultralytics"] == result["ratio_vs_ultralytics"][name] == round(ratio, 2)
    assert "scratch-v2-int8" in result["paths"]["onnx_int8"]["backend"]
