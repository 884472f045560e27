"""Importing a plant's own model and data set: what is refused, with one line, registering nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from core import cli
from core import settings as settings_module
from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION, load_settings
from core.vocabulary import Role
from db.bootstrap import initialize, open_database
from db.models import ModelVersion
from db.users import add_user
from tests.plant_data import PLANT_CLASSES, write_coco_dataset, write_yolo_dataset

PASSWORD = "plant-engineer-pw"


@pytest.fixture
def plant(tmp_path, monkeypatch):
    """A fresh installation whose models folder is its own (the shipped version linked in), an engineer, the CLI's environment."""
    models = tmp_path / "models"
    models.mkdir()
    (models / SHIPPED_MODEL_VERSION).symlink_to(PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION)
    env = {"SHADOWLINE_DATA_DIR": str(tmp_path / "data"), "SHADOWLINE_MODELS_DIR": str(models)}
    settings = load_settings(env)
    database = open_database(settings)
    initialize(database, settings)
    with database.write() as session:
        add_user(session=session, name="erin", role=Role.ENGINEER, password=PASSWORD, actor="test")
    for key, value in {**env, "SHADOWLINE_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(key, value)
    settings_module.get_settings.cache_clear()
    yield settings, database
    database.dispose()
    settings_module.get_settings.cache_clear()


def run(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (its own environment, set by ``plant``)."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def registered(database) -> list[str]:
    with database.read() as session:
        return list(session.scalars(select(ModelVersion.version)))


def _classification_pt(path: Path) -> Path:
    from core.detector.ultralytics_backend import configure_offline

    configure_offline()
    from ultralytics import YOLO

    YOLO("yolov8n-cls.yaml").save(str(path))  # built from its YAML: nothing downloaded
    return path


def _classifier_onnx(path: Path) -> Path:
    """An ONNX image classifier: one image in, one score per class out (no boxes)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["scores"], axis=1)],
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_what_is_not_a_detector_is_refused_and_nothing_registered(plant, tmp_path, capsys):
    settings, database = plant
    pytest.importorskip("ultralytics")
    corrupt = tmp_path / "best.pt"
    corrupt.write_bytes(b"\x80\x02not really a checkpoint" * 40)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    cases = [
        (_classification_pt(tmp_path / "cls.pt"), "is a classification model, not a detection model"),
        (corrupt, "not a model file Ultralytics can load"),
        (_classifier_onnx(tmp_path / "classifier.onnx"), "not a YOLO detection head"),
        (empty, "the file is empty"),
        (tmp_path / "weights.h5", "no such file"),
    ]
    before = registered(database)
    for index, (path, message) in enumerate(cases):
        code, _, err = run(capsys, "model", "import", str(path), "--version", f"plant-{index}", "--as", "erin")
        assert code == 1 and err.startswith("error: ") and message in err, (path.name, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (settings.models_dir / f"plant-{index}").exists()
    assert registered(database) == before
    assert [p.name for p in settings.models_dir.iterdir()] == [SHIPPED_MODEL_VERSION], "no staging folder left behind"


def test_a_data_set_with_a_missing_image_and_a_box_outside_is_refused_file_by_file(plant, tmp_path, capsys):
    settings, _ = plant
    yolo = write_yolo_dataset(tmp_path / "yolo", train=4, val=2).parent
    (yolo / "images" / "train" / "train-001.jpg").unlink()  # its label file stays: a missing image
    (yolo / "labels" / "train" / "train-002.txt").write_text("1 0.95 0.5 0.3 0.2\n")  # reaches past the right edge
    (yolo / "labels" / "val" / "val-000.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # class 7 of 2
    (yolo / "images" / "val" / "val-001.jpg").write_bytes(b"")
    code, _, err = run(capsys, "dataset", "import", str(yolo), "--name", "plant-bad")
    assert code == 1 and "nothing imported" in err
    assert "train-001: missing image" in err
    assert "train-002.jpg: box" in err and "outside the 160x120 image" in err
    assert "val-000.jpg: unknown class id 7" in err
    assert "val-001.jpg: empty file" in err
    assert not (settings.data_dir / "datasets" / "plant-bad").exists()

    coco_json = write_coco_dataset(tmp_path / "coco", count=6)
    data = json.loads(coco_json.read_text())
    data["images"][0]["file_name"] = "not-there.png"
    coco_json.write_text(json.dumps(data))
    code, _, err = run(capsys, "dataset", "import", str(coco_json), "--name", "plant-bad-coco")
    assert code == 1 and "not-there.png: missing image" in err

    code, out, _ = run(capsys, "dataset", "import", str(coco_json), "--name", "plant-coco", "--skip-bad")
    assert code == 0 and "5 images" in out and "1 problem(s) skipped" in out
    manifest = json.loads((settings.data_dir / "datasets" / "plant-coco" / "manifest.json").read_text())
    assert set(manifest["classes"]) == set(PLANT_CLASSES) and any("not-there.png" in s for s in manifest["skipped"])


@pytest.mark.parametrize(
    ("imgsz", "aspect", "expected"),
    [
        (320, 4 / 3, (256, 320)),  # the shipped line's 4:3 camera: the shipped model's input
        (640, 2448 / 2048, (544, 640)),  # a 5 MP camera, about 6:5
        (640, 1280 / 1024, (512, 640)),  # 5:4
        (640, 16 / 9, (384, 640)),  # 16:9 (360 rounded up to the stride)
        (640, 3 / 4, (640, 480)),  # a camera mounted upright
        (64, 4 / 3, (64, 64)),  # too small to save anything: 48 rounds up to the stride
    ],
)
def test_the_onnx_input_follows_the_cameras_aspect(imgsz, aspect, expected):
    from core.model_import import onnx_input_for

    assert onnx_input_for(imgsz, 32, aspect) == expected


def test_a_pt_exported_for_a_wide_camera_and_its_onnx_import_keep_the_plants_classes(plant, plant_best_pt, tmp_path, capsys):
    settings, database = plant
    code, _, err = run(capsys, "model", "import", str(plant_best_pt), "--version", "plant-wide", "--camera", "2560x1080", "--as", "erin")
    assert code == 0, err
    card = json.loads((settings.models_dir / "plant-wide" / "card.json").read_text())
    assert card["onnx_input"] == [32, 64] and card["classes"] == {"0": "crack", "1": "stain"}
    from core.detector.adapter import Detector
    from tests.plant_data import plant_photo

    image, _ = plant_photo(3, 2560, 1080)
    detections = Detector(settings.models_dir / "plant-wide").detect(image, min_confidence=0.0)
    assert detections.image_size == (2560, 1080) and (detections.xyxy[:, [0, 2]] <= 2560).all() and (detections.xyxy[:, [1, 3]] <= 1080).all()
    assert set(detections.class_names.values()) == {"crack", "stain"}

    # The ONNX that export wrote carries the names and input size: importing it alone needs nothing else.
    code, _, err = run(capsys, "model", "import", str(settings.models_dir / "plant-wide" / "model.onnx"), "--version", "plant-wide-onnx", "--as", "erin")
    assert code == 0, err
    onnx_card = json.loads((settings.models_dir / "plant-wide-onnx" / "card.json").read_text())
    assert onnx_card["classes"] == card["classes"] and onnx_card["onnx_input"] == [32, 64] and onnx_card["source"]["kind"] == "onnx"
    assert set(onnx_card["weights"]) == {"model.onnx"}
    assert {"plant-wide", "plant-wide-onnx"} <= set(registered(database))
    # and a version name is never taken twice
    code, _, err = run(capsys, "model", "import", str(plant_best_pt), "--version", "plant-wide", "--as", "erin")
    assert code == 1 and "already exists" in err
    # Fine-tuning starts from an imported version as from a shipped one, with the data set's classes.
    write_yolo_dataset(tmp_path / "usb", train=6, val=3, size=(160, 120))
    assert run(capsys, "dataset", "import", str(tmp_path / "usb"), "--name", "plant-set")[0] == 0
    code, _, err = run(
        capsys,
        *("train", "--dataset", str(settings.data_dir / "datasets" / "plant-set"), "--version", "plant-wide-2"),
        *("--init-from", str(settings.models_dir / "plant-wide"), "--epochs", "1", "--imgsz", "64", "--batch", "4", "--skip-evaluation"),
    )
    assert code == 0, err
    tuned = json.loads((settings.models_dir / "plant-wide-2" / "card.json").read_text())
    assert tuned["classes"] == {"0": "crack", "1": "stain"} and tuned["init_from"]["version"] == "plant-wide"
    assert set(tuned["evaluation"]["held_out"]["per_class"]) <= {"crack", "stain"}
