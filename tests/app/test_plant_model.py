"""A plant's own model from a USB stick to a candidate in shadow, with its own classes, and its cameras' own images.

The model is a tiny Ultralytics detector of ``crack`` and ``stain`` trained in the session
(``plant_best_pt``); the data sets are made here, in YOLO and in COCO. At every step the class names
must be the plant's: in the card, the registry, the evaluation, the worker's predictions, the
Labelling page's class list, the saved label and the exported data set.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from core import cli
from core import settings as settings_module
from core.admission import load_admitter
from core.auth import CurrentUser
from core.camera import get_scenario, render_run_phone
from core.detector.adapter import Detector
from core.detector.card import read_card, sha256_file
from core.image_metrics import compute_input_metrics
from core.ingest import ingest_file
from core.labelling import LabelBox, save_label
from core.line_simulator import SimulatedInspector, simulate_line
from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION, load_settings
from core.vocabulary import Role, Verdict
from core.worker import Worker
from db.labels import label_queue, labels_of
from db.lines import get_line
from db.models import Inspection, ModelVersion, Prediction
from db.users import add_user
from tests.plant_data import CAMERA_FRAMES, PLANT_CLASSES, plant_photo, write_coco_dataset, write_yolo_dataset

PASSWORD = "plant-engineer-pw"
LABELLING = "../pages/labelling.py"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch):
    """An installation with a models folder of its own (the shipped version linked in): imports land there."""
    models = tmp_path / "models"
    models.mkdir()
    (models / SHIPPED_MODEL_VERSION).symlink_to(PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION)
    env = {"SHADOWLINE_DATA_DIR": str(tmp_path / "data"), "SHADOWLINE_MODELS_DIR": str(models)}
    for key, value in {**env, "SHADOWLINE_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(key, value)
    settings_module.get_settings.cache_clear()
    yield load_settings(env)
    settings_module.get_settings.cache_clear()


def run(capsys, *args: str) -> str:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_plants_model_and_images_go_from_usb_stick_to_shadow_with_their_own_classes(database, settings, app_for, plant_best_pt, tmp_path, capsys):
    with database.write() as session:
        add_user(session=session, name="erin", role=Role.ENGINEER, password=PASSWORD, actor="test")
    stick = tmp_path / "usb"
    write_yolo_dataset(stick / "yolo", train=24, val=8, size=(320, 240))
    coco = write_coco_dataset(stick / "coco", count=12, frames=((320, 240, False),))

    # 1. the model: classes and input size read from the .pt, exported for a 4:3 camera, card and registry
    out = run(capsys, "model", "import", str(plant_best_pt), "--version", "plant-v1", "--camera", "640x480", "--as", "erin")
    assert "2 classes (crack, stain)" in out and "registered plant-v1" in out
    folder = settings.models_dir / "plant-v1"
    card = read_card(folder)
    assert card["classes"] == {"0": "crack", "1": "stain"}
    assert card["source"]["sha256"] == sha256_file(plant_best_pt) and card["imported_by"] == "erin"
    assert card["imgsz"] == 64 and card["onnx_input"] == [64, 64]  # 64 * 3/4 rounds up to the stride
    assert {"ultralytics", "torch", "onnxruntime"} <= set(card["libraries"])
    assert Detector(folder).info.class_names == {0: "crack", 1: "stain"}

    # 2. the labelled images, YOLO and COCO (categories in another order: names carry the meaning)
    out = run(capsys, "dataset", "import", str(stick / "yolo"), "--name", "plant-yolo")
    assert "32 images (24 train, 8 val)" in out and "boxes per class: crack" in out
    out = run(capsys, "dataset", "import", str(coco), "--name", "plant-coco")
    coco_manifest = json.loads((settings.data_dir / "datasets" / "plant-coco" / "manifest.json").read_text())
    assert coco_manifest["classes"] == ["stain", "crack"] and coco_manifest["counts"]["train"] + coco_manifest["counts"]["val"] == 12
    first = next(e for e in coco_manifest["images"] if e["boxes"])
    label_rows = (settings.data_dir / "datasets" / "plant-coco" / first["file"].replace("images/", "labels/")).with_suffix(".txt").read_text().splitlines()
    assert {row.split()[0] for row in label_rows} <= {"0", "1"}

    # 3. evaluation on the plant's images (classes matched by name), recorded with the threshold and reference
    evaluation = json.loads(run(capsys, "evaluate", "--model", "plant-v1", "--dataset", "plant-coco", "--json"))
    assert set(evaluation["per_class"]) <= set(PLANT_CLASSES) and evaluation["classes_model_lacks"] == []
    assert {"map50", "precision", "recall", "phone_recall_ci95", "false_reject_rate_ci95", "escape_rate"} <= set(evaluation)
    run(capsys, "evaluate", "--model", "plant-v1", "--dataset", "plant-yolo", "--record")
    card = read_card(folder)
    assert card["calibration"]["dataset"] == "plant-yolo" and card["evaluation"]["held_out"]["dataset"] == "plant-yolo"
    assert "plant-yolo" in card["reference"]["description"] and card["admission"]["images"] == 32
    run(capsys, "reference", "compute", "--model", "plant-v1", "--dataset", "plant-yolo")
    # Its admission check knows the plant's camera (measured on its images), and no other.
    plant_model = Detector(folder)
    photo, _ = plant_photo(4242, 320, 240)
    answer = load_admitter(plant_model).check(photo, compute_input_metrics(photo), plant_model.detect(photo).features)
    assert answer.check != "camera", answer
    big, _ = plant_photo(4243, 2448, 2048)
    answer = load_admitter(plant_model).check(big, compute_input_metrics(big), plant_model.detect(big).features)
    assert answer.check == "camera" and "2448x2048" in answer.reason, "another camera than the reference's is a person's to judge"
    with database.read() as session:
        registered = session.scalar(select(ModelVersion).where(ModelVersion.version == "plant-v1"))
        assert registered.card["decision_threshold"] == card["decision_threshold"], "the registry's copy of the card is up to date"

    # 4. a candidate in shadow on line-1: the worker runs it beside the shipped model on the plant's photos
    run(capsys, "model", "candidate", "--line", "line-1", "--version", "plant-v1", "--as", "erin")
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    new_defect = get_scenario("new-defect").with_ramp(0, 0)
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=new_defect, count=8, rate=1000, seed=12, inspector=None)
    Worker(database, settings).run(until_empty=True)
    SimulatedInspector(miss_rate=0.0, false_reject_rate=0.2).answer_open_tasks(database, line_id=line.id)
    for index in range(3):  # and the plant's own photographs
        image, _ = plant_photo(700 + index, 320, 240)
        cv2.imwrite(str(tmp_path / f"plant-{index}.png"), image)
        ingest_file(database, settings, line_id=line.id, line_name=line.name, path=tmp_path / f"plant-{index}.png")
    Worker(database, settings).run(until_empty=True)
    with database.read() as session:
        candidate = session.scalars(select(Prediction).where(Prediction.is_candidate.is_(True))).all()
        assert len(candidate) == 11 and {p.model_version.version for p in candidate} == {"plant-v1"}
        assert {b["class_name"] for p in candidate for b in p.boxes} <= set(PLANT_CLASSES)

    # 5. the Labelling page offers the active version's classes and the candidate's, keys 1..5
    with database.read() as session:
        assert label_queue(session=session, labeller="erin", line_id=line.id, limit=1), "phones wait for a label"
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("erin", Role.ENGINEER)
    at.run()
    at.switch_page(LABELLING).run()
    assert not at.exception, at.exception
    assert any(c.value == "Classes (keys): 1 scratch · 2 dent · 3 chip · 4 crack · 5 stain" for c in at.caption), [c.value for c in at.caption]
    held = at.session_state["labelling.current"]
    at.session_state[f"labelling.editor.{held}"] = {
        "drawing": {"revision": str(held), "boxes": [{"class_name": "stain", "x1": 40, "y1": 30, "x2": 90, "y2": 80}]}
    }
    at.run()
    at.button(key="labelling.save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with database.read() as session:
        saved = labels_of(session=session, inspection_id=held)
    assert [b.class_name for b in saved[0].boxes] == ["stain"]
    # a second phone labelled with a class the plant's version lacks
    with database.read() as session:
        other = next(i for i in session.scalars(select(Inspection.id).where(Inspection.line_id == line.id)) if i != held)
    save_label(
        database, CurrentUser("erin", Role.ENGINEER), inspection_id=other, verdict=Verdict.REJECT, boxes=[LabelBox("scratch", 10, 10, 40, 20)], drawn_on=other
    )

    # 6. export for the plant's version: names mapped to its ids; the scratch label reported, not dropped silently
    out = run(capsys, "dataset", "export", "--name", "for-plant-v2", "--for-model", "plant-v1", "--line", "line-1")
    root = settings.data_dir / "datasets" / "for-plant-v2"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["classes"] == ["crack", "stain"] and manifest["classes_target_lacks"] == {"scratch": 1}
    assert "1 phone(s) with scratch" in out
    assert manifest["counts"]["generated_train"] == 0, "the generator's scratch/dent/chip cannot be mixed into a crack/stain set"
    written = next(root.glob(f"labels/*/label-{held}.txt")).read_text().split()
    assert written[0] == "1", "stain is class 1 of plant-v1"
    assert "names:\n  0: crack\n  1: stain" in (root / "data.yaml").read_text()


#: (width, height, grey, format) of the plant's cameras: 5:4 mono, 5:4-ish 5 MP colour, 4:3, 5:4, 16:9; PNG, JPEG, BMP, TIFF.
CAMERAS = [(w, h, grey, fmt) for (w, h, grey), fmt in zip(CAMERA_FRAMES, (".png", ".jpg", ".bmp", ".tif", ".jpg"), strict=True)]


def test_cameras_of_many_sizes_go_through_ingest_worker_and_the_live_line_in_their_own_coordinates(database, settings, app_for, detector, tmp_path):
    """The shipped model on one phone photographed by five cameras: boxes stored and drawn in each image's own pixels."""
    from app.widgets import annotated_image, box_tuples, class_colour

    phone = render_run_phone(get_scenario("normal"), 1001, 3, defect_rate=1.0)
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    expected = {}
    for index, (width, height, grey, fmt) in enumerate(CAMERAS):
        image = cv2.resize(phone.image, (width, height), interpolation=cv2.INTER_AREA)
        if grey:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        path = tmp_path / f"camera-{index}{fmt}"
        assert cv2.imwrite(str(path), image)
        result = ingest_file(database, settings, line_id=line.id, line_name=line.name, path=path)
        assert result.problem is None
        expected[result.inspection_id] = (width, height, detector.detect(path))
    Worker(database, settings).run(until_empty=True)
    with database.read() as session:
        rows = {i.id: i for i in session.scalars(select(Inspection).where(Inspection.id.in_(list(expected))))}
        predictions = {p.inspection_id: p for p in session.scalars(select(Prediction).where(Prediction.inspection_id.in_(list(expected))))}
    found_somewhere = False
    for inspection_id, (width, height, direct) in expected.items():
        assert rows[inspection_id].status == "done"
        boxes = predictions[inspection_id].boxes
        stored = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes], np.float32).reshape(-1, 4)
        assert len(stored) == len(direct) and np.allclose(stored, direct.xyxy, atol=1.0), "the worker's boxes are the detector's, in the image's pixels"
        assert (stored[:, [0, 2]] <= width).all() and (stored[:, [1, 3]] <= height).all()
        drawn = annotated_image(str(settings.data_dir / rows[inspection_id].image_path), box_tuples(boxes))
        assert drawn is not None and drawn.shape == (height, width, 3)
        for box in boxes:
            found_somewhere = True
            b, g, r = class_colour(box["class_name"])
            y = int((box["y1"] + box["y2"]) / 2)
            assert tuple(drawn[y, int(box["x1"])]) == (r, g, b), "the box is drawn where the detector put it"
    assert found_somewhere, "the shipped model finds the phone's defect on at least one camera"

    at = app_for()
    at.session_state["auth.user"] = CurrentUser("sam", Role.SUPERVISOR)
    at.run()
    assert not at.exception, at.exception
    assert sum(f"camera-{i}" in c.value for c in at.caption for i in range(len(CAMERAS))) == len(CAMERAS), "each camera's phone on the Live line"


def test_an_engineer_imports_a_model_on_the_models_page(database, settings, app_for, detector):
    """The page's import: the ONNX the lab exported (here the shipped model's) becomes a registered version; garbage is refused."""
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("erin", Role.ENGINEER)
    at.run()
    at.switch_page("../pages/models.py").run()
    assert not at.exception, at.exception
    submit = next(b for b in at.button if b.label == "Import and register")
    at.file_uploader(key="models.import_file").set_value(("best.pt", b"\x80\x02 not a checkpoint" * 20, "application/octet-stream"))
    at.text_input(key="models.import_version").input("lab-garbage")
    submit.click().run()
    assert any("Refused: best.pt" in e.value for e in at.error), [e.value for e in at.error]
    assert not (settings.models_dir / "lab-garbage").exists()

    onnx_bytes = (PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION / "model.onnx").read_bytes()
    at.file_uploader(key="models.import_file").set_value(("lab-export.onnx", onnx_bytes, "application/octet-stream"))
    at.text_input(key="models.import_version").input("lab-onnx")
    next(b for b in at.button if b.label == "Import and register").click().run()
    assert not at.exception, at.exception
    assert any("lab-onnx imported and registered: scratch, dent, chip" in s.value for s in at.success), [s.value for s in at.success]
    registry = next(d.value for d in at.dataframe if "classes" in d.value.columns)
    assert registry.set_index("version").loc["lab-onnx", "classes"] == "scratch, dent, chip"
