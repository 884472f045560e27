"""A real (tiny) training run: data set from the generator, YAML architecture, offline, card with hashes."""

from __future__ import annotations

import json
import socket

import pytest

from core import training
from core.detector.adapter import Detector
from core.detector.card import sha256_file


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_dataset_builder_writes_yolo_format(tmp_path):
    recipe = training.DataRecipe(train_count=6, val_count=3, defect_rate=1.0)
    data_yaml = training.build_generated_dataset(tmp_path / "ds", recipe, progress=lambda _: None)
    assert "names:" in data_yaml.read_text() and "scratch" in data_yaml.read_text()
    labels = sorted((tmp_path / "ds" / "labels" / "train").glob("*.txt"))
    assert len(labels) == 6 and len(list((tmp_path / "ds" / "images" / "val").glob("*.jpg"))) == 3
    for label in labels:
        for line in label.read_text().splitlines():
            cls, *xywh = line.split()
            assert int(cls) in (0, 1, 2) and all(0 <= float(v) <= 1 for v in xywh)


def test_tiny_training_run_produces_a_loadable_vouched_model_version(tmp_path, no_network):
    recipe = training.DataRecipe(train_count=16, val_count=4, defect_rate=0.8)
    data_yaml = training.build_generated_dataset(tmp_path / "ds", recipe, progress=lambda _: None)
    epochs_seen = []
    folder = training.train_model_version(
        training.TrainConfig(version="tiny", epochs=1, imgsz=160, batch=8),
        tmp_path / "models",
        data_yaml,
        data_description={"source": "generated"},
        workdir=tmp_path / "runs",
        progress=lambda _: None,
        on_epoch=epochs_seen.append,
    )
    card = json.loads((folder / "card.json").read_text())
    assert card["version"] == "tiny" and card["pretrained"] is False and card["epochs"] == 1
    for name in ("model.pt", "model.onnx"):
        assert card["weights"][name]["sha256"] == sha256_file(folder / name)
    assert {"ultralytics", "torch", "onnxruntime"} <= set(card["libraries"])
    assert [e.epoch for e in epochs_seen] == [1] and "box_loss" in epochs_seen[0].losses
    detector = Detector(folder)
    assert detector.detect(tmp_path.joinpath("ds/images/val").glob("*.jpg").__next__()).image_size == (480, 360)
    with pytest.raises(FileExistsError):
        training.train_model_version(
            training.TrainConfig(version="tiny", epochs=1), tmp_path / "models", data_yaml, data_description={}, workdir=tmp_path / "r2"
        )


def test_fine_tuning_starts_from_the_parent_weights_and_records_its_lineage(tmp_path, shipped_model_dir):
    recipe = training.DataRecipe(train_count=16, val_count=4, defect_rate=0.8, train_seed=3000, val_seed=3001)
    data_yaml = training.build_generated_dataset(tmp_path / "ds", recipe, progress=lambda _: None)
    losses = {}
    for name, parent in (("scratch", None), ("tuned", shipped_model_dir)):
        seen = []
        folder = training.train_model_version(
            training.TrainConfig(version=name, epochs=1, imgsz=320, batch=8),
            tmp_path / "models",
            data_yaml,
            data_description={"source": "generated"},
            workdir=tmp_path / f"runs-{name}",
            progress=lambda _: None,
            on_epoch=seen.append,
            init_from=parent,
        )
        losses[name] = seen[0].losses["cls_loss"]
    # A trained detector already knows scratches: its first epoch's class loss is far below a random one's.
    assert losses["tuned"] < losses["scratch"] / 3, losses
    card = json.loads((folder / "card.json").read_text())
    assert card["init_from"]["version"] == shipped_model_dir.name
