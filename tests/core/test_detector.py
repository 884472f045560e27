"""The detector adapter with the real shipped model: finds scratches, refuses tampered weights and bad images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.camera import Conditions, render_phone
from core.detector.adapter import Detector
from core.detector.card import ModelIntegrityError, ModelNotFoundError
from core.evaluation import match_predictions
from core.imaging import EmptyImageError, ImageTooLargeError, InvalidImageError, UndecodableImageError, UnsupportedImageError
from core.vocabulary import DefectClass

SCRATCHED = Conditions(defect_rate=1.0, defect_kinds={DefectClass.SCRATCH: 1.0})
CLEAN = Conditions(defect_rate=0.0)
HELD_OUT_SEEDS = range(900_001, 900_021)  # never used by the training recipe


def test_the_shipped_card_names_the_version_and_vouches_for_both_weights(detector, shipped_model_dir):
    card = json.loads((shipped_model_dir / "card.json").read_text())
    assert card["version"] == detector.version == shipped_model_dir.name
    assert set(card["weights"]) == {"model.pt", "model.onnx"}
    assert card["pretrained"] is False and card["architecture"].endswith(".yaml")
    assert detector.info.backend == "onnx"


def test_finds_the_scratches_on_held_out_phones(detector):
    """At least 18 of 20 scratched phones rejected (the shipped model's phone recall is about 0.99),
    every reject coming from a box on a scratch, not from somewhere else on the phone."""
    caught = []
    for seed in HELD_OUT_SEEDS:
        phone = render_phone(seed, SCRATCHED)
        detections = detector.detect(phone.image)
        if not detector.verdict_is_reject(detections):
            continue
        truth = np.array([d.box for d in phone.defects], np.float32)
        hits = match_predictions(detections.above(detector.info.decision_threshold), truth, np.zeros(len(truth), np.int64))
        assert hits.any(), f"phone {seed} was rejected for a box that is not on its scratch"
        caught.append(seed)
    assert len(caught) >= 18, f"caught only {len(caught)} of 20 scratched phones"


def test_passes_clean_held_out_phones(detector):
    rejected = [seed for seed in HELD_OUT_SEEDS if detector.verdict_is_reject(detector.detect(render_phone(seed, CLEAN).image))]
    assert len(rejected) <= 1, f"rejected clean phones {rejected}"


def test_detections_are_typed_and_in_image_pixels(detector):
    image = render_phone(900_001, SCRATCHED).image
    d = detector.detect(image)
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape[1] == 4
    assert (d.xyxy[:, 0] >= 0).all() and (d.xyxy[:, 2] <= image.shape[1]).all()
    assert d.model_version == detector.version and d.latency_ms > 0 and d.image_size == (480, 360)
    assert set(d.to_records()[0]) == {"x1", "y1", "x2", "y2", "confidence", "class_id", "class_name"}


def test_ultralytics_and_onnx_paths_agree(shipped_model_dir, detector):
    reference = Detector(shipped_model_dir, backend="ultralytics")
    for seed in list(HELD_OUT_SEEDS)[:4]:
        image = render_phone(seed, SCRATCHED).image
        a, b = reference.detect(image), detector.detect(image)
        assert reference.verdict_is_reject(a) == detector.verdict_is_reject(b)
        assert abs(a.max_confidence - b.max_confidence) < 0.05


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),  # one pixel
        np.zeros((2000, 3000), np.uint8),  # large grayscale
        np.full((100, 900, 4), 200, np.uint8),  # very wide BGRA
        (np.random.default_rng(0).integers(0, 65535, (240, 320, 3))).astype(np.uint16),  # 16-bit
    ],
)
def test_any_decodable_image_is_accepted(detector, image):
    detections = detector.detect(image)
    assert detections.image_size == (image.shape[1], image.shape[0])


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b"", EmptyImageError),
        (b"GIF89a... not really", UndecodableImageError),
        (np.zeros((0, 0, 3), np.uint8), EmptyImageError),
        (np.zeros((8, 8, 7), np.uint8), UnsupportedImageError),
        (np.zeros((10_001, 10_001), np.uint8), ImageTooLargeError),
    ],
)
def test_bad_images_raise_named_errors_not_crashes(detector, bad, error):
    with pytest.raises(error):
        detector.detect(bad)
    assert issubclass(error, InvalidImageError)


@pytest.fixture
def model_copy(shipped_model_dir, tmp_path):
    copy = tmp_path / shipped_model_dir.name
    shutil.copytree(shipped_model_dir, copy)
    return copy


@pytest.mark.parametrize("backend", ["onnx", "ultralytics"])
def test_tampered_weights_are_refused(model_copy, backend):
    weights = model_copy / ("model.onnx" if backend == "onnx" else "model.pt")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="refusing"):
        Detector(model_copy, backend=backend)


def test_weights_the_card_does_not_vouch_for_are_refused(model_copy):
    card = json.loads((model_copy / "card.json").read_text())
    del card["weights"]["model.pt"]
    (model_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match="does not vouch"):
        Detector(model_copy, backend="ultralytics")


def test_registry_hash_is_checked_too(model_copy):
    with pytest.raises(ModelIntegrityError, match="registry"):
        Detector(model_copy, expected_sha256="0" * 64)


@pytest.mark.parametrize(("remove", "message"), [("card.json", "no model card"), ("model.onnx", "missing")])
def test_missing_parts_are_named(model_copy, remove, message):
    (model_copy / remove).unlink()
    with pytest.raises(ModelNotFoundError, match=message):
        Detector(model_copy, backend="onnx")


def test_missing_folder_and_unreadable_card(model_copy, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Detector(tmp_path / "nowhere")
    (model_copy / "card.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="unreadable"):
        Detector(model_copy)


@pytest.mark.parametrize("version", ["scratch-v2", "scratch-v2-int8"])
def test_the_head_softmax_rewrite_gives_the_exported_graphs_outputs_bit_for_bit(shipped_model_dir, version):
    """The graph run at load time moves the DFL softmax to the last axis (faster in onnxruntime);
    on the shipped FP32 and INT8 models the outputs equal the file's own graph exactly."""
    import onnx
    import onnxruntime as ort

    from core.detector.onnx_backend import letterbox, prepare_graph, with_feature_output

    exported = (shipped_model_dir.parent / version / "model.onnx").read_bytes()
    graph, gives_features = prepare_graph(exported)
    assert gives_features
    softmaxes = [node for node in onnx.load_from_string(graph).graph.node if node.op_type == "Softmax"]
    assert [node.name for node in softmaxes] == ["/shadowline/dfl/Softmax"]
    rewritten = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(with_feature_output(exported), providers=["CPUExecutionProvider"])
    name = original.get_inputs()[0].name
    for seed in (900_001, 900_002, 900_003):
        blob = letterbox(render_phone(seed, SCRATCHED).image, (256, 320))[0]
        for mine, theirs in zip(rewritten.run(None, {name: blob}), original.run(None, {name: blob}), strict=True):
            assert np.array_equal(mine, theirs)


def test_a_graph_without_the_dfl_pattern_is_left_as_it_is():
    import onnx
    from onnx import TensorProto, helper

    from core.detector.onnx_backend import prepare_graph

    node = helper.make_node("Softmax", ["x"], ["y"], axis=1, name="/model.22/dfl/Softmax")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 4, 5])],
    )
    model = helper.make_model(graph)
    prepared, gives_features = prepare_graph(model.SerializeToString())
    assert not gives_features
    assert [n.op_type for n in onnx.load_from_string(prepared).graph.node] == ["Softmax"]


@pytest.mark.parametrize("size", [(360, 480), (1080, 1920), (960, 1280)])
def test_the_metrics_resize_is_reused_by_the_detector_with_the_same_result(detector, size):
    """The worker resizes each image once for its input metrics; the detector takes that copy
    instead of resizing again, and finds exactly what it finds on its own."""
    import cv2

    from core.detector.onnx_backend import letterbox
    from core.image_metrics import compute_input_metrics, scaled_for_metrics

    image = cv2.resize(render_phone(900_004, SCRATCHED).image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    scaled = scaled_for_metrics(image)
    assert scaled.shape[1] == 320
    assert compute_input_metrics(image, scaled=scaled) == compute_input_metrics(image)
    assert np.array_equal(letterbox(image, (256, 320), resized=scaled)[0], letterbox(image, (256, 320))[0])
    mine, theirs = detector.detect(image, resized=scaled), detector.detect(image)
    assert len(theirs.xyxy) > 0
    assert np.array_equal(mine.xyxy, theirs.xyxy) and np.array_equal(mine.confidence, theirs.confidence)
    assert np.array_equal(mine.features, theirs.features)


def test_a_resize_of_another_size_is_not_taken_for_the_letterbox():
    """A portrait image is letterboxed to 256 high, not 320 wide: the metrics' copy does not fit and is ignored."""
    from core.detector.onnx_backend import letterbox
    from core.image_metrics import scaled_for_metrics

    portrait = np.ascontiguousarray(render_phone(900_005, SCRATCHED).image.transpose(1, 0, 2))
    scaled = scaled_for_metrics(portrait)
    assert scaled.shape[:2] != (256, 192)
    assert np.array_equal(letterbox(portrait, (256, 320), resized=scaled)[0], letterbox(portrait, (256, 320))[0])
    wrong = np.zeros((240, 320, 3), np.uint8)  # the size a landscape image would get, but another picture
    assert np.array_equal(letterbox(portrait, (256, 320), resized=wrong)[0], letterbox(portrait, (256, 320))[0])


def test_an_inference_that_starts_while_another_runs_takes_one_thread_and_finds_the_same(shipped_model_dir):
    """The service's detector (``narrow_when_busy``): a lone phone gets every thread; one that starts while
    another is in flight runs on the one-thread session of the same graph, with the same boxes."""
    import threading

    detector = Detector(shipped_model_dir, threads=2, spin=False, narrow_when_busy=True)
    predictor = detector._predictor
    phones = [render_phone(seed, SCRATCHED).image for seed in HELD_OUT_SEEDS[:6]]
    alone = [detector.detect(phone) for phone in phones]
    assert predictor.narrow_runs == 0  # one at a time: always the wide session
    with predictor._running_lock:
        predictor._running += 1  # another inference is in flight
    try:
        beside = [detector.detect(phone) for phone in phones]
    finally:
        with predictor._running_lock:
            predictor._running -= 1
    assert predictor.narrow_runs == len(phones)
    assert any(len(found.xyxy) for found in alone), "no scratch on six phones: the comparison would be empty"
    for a, b in zip(alone, beside, strict=True):
        assert np.array_equal(a.class_id, b.class_id)
        assert np.allclose(a.xyxy, b.xyxy, atol=0.5) and np.allclose(a.confidence, b.confidence, atol=1e-3)
    # Real threads: every inference is counted out again, so a lone phone afterwards is wide.
    threads = [threading.Thread(target=lambda: [detector.detect(p) for p in phones]) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert predictor._running == 0
    before = predictor.narrow_runs
    detector.detect(phones[0])
    assert predictor.narrow_runs == before


def test_the_workers_detector_keeps_its_threads_when_busy(shipped_model_dir):
    """Without ``narrow_when_busy`` (the worker: one thread per phone already) there is one session only."""
    detector = Detector(shipped_model_dir, threads=1)
    assert detector._predictor._narrow is None
    with detector._predictor._running_lock:
        detector._predictor._running += 1
    detector.detect(render_phone(HELD_OUT_SEEDS[0], SCRATCHED).image)
    assert detector._predictor.narrow_runs == 0
