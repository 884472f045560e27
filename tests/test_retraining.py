"""The retraining loop end to end, kept tiny: new-defect phones through the line, labels from the queue,
a versioned data set, a 1-epoch fine-tune, evaluation on the held-out split, the new version in shadow.
(The full run with before/after numbers is scripts/retrain_demo.py.)"""

from __future__ import annotations

import json

import pytest

from core.dataset import DatasetError, ExportRecipe, export_dataset, read_manifest, split_of
from core.deployment import set_candidate
from core.drift.demo import run_scenario
from core.retraining import SIMULATED_ENGINEER, label_queue_from_truth
from core.training import DataRecipe, TrainConfig, train_from_dataset
from core.vocabulary import AutomationLevel
from db.labels import truths
from db.lines import get_line
from db.models import Prediction
from db.registry import register_model_version

TINY = DataRecipe(train_count=8, val_count=4, train_seed=5000, val_seed=6000, defect_rate=0.6)


def test_labels_become_a_versioned_data_set_and_a_new_version_in_shadow(database, settings, shipped_model_dir, tmp_path) -> None:
    run_scenario(database, settings, line_name="line-1", scenario_name="new-defect", phones=100, level=AutomationLevel.SHADOW, stop_when_stepped_down=False)
    with pytest.raises(DatasetError, match="labelled phones"):
        export_dataset(database, settings, ExportRecipe(name="empty", generated=TINY))
    summary = label_queue_from_truth(database, line_id=None, count=16)
    assert summary.labelled == 16 and summary.defective > 0

    root = export_dataset(database, settings, ExportRecipe(name="chips-1", generated=TINY, val_share=0.25))
    manifest = read_manifest(root)
    assert manifest["counts"]["labelled_train"] + manifest["counts"]["labelled_val"] == 16 and manifest["counts"]["labelled_val"] > 0
    for entry in manifest["labelled"]:
        assert entry["split"] == split_of(entry["serial"], 0.25) and entry["file"].startswith(f"images/{entry['split']}/")
        label_file = root / "labels" / entry["split"] / f"label-{entry['inspection_id']}.txt"
        assert bool(label_file.read_text().strip()) == (entry["verdict"] == "reject")
    again = read_manifest(export_dataset(database, settings, ExportRecipe(name="chips-2", generated=TINY, val_share=0.25)))
    assert {e["serial"]: e["split"] for e in again["labelled"]} == {e["serial"]: e["split"] for e in manifest["labelled"]}, "held out stays held out"
    with pytest.raises(DatasetError, match="already exists"):
        export_dataset(database, settings, ExportRecipe(name="chips-1", generated=TINY))

    folder = train_from_dataset(
        root, TrainConfig(version="chips-tiny", epochs=1, batch=8), tmp_path / "models", cache_dir=settings.cache_dir, init_from=shipped_model_dir, eval_count=0
    )
    card = json.loads((folder / "card.json").read_text())
    assert card["data"]["source"] == "dataset" and card["data"]["sha256"] == manifest["sha256"]
    with database.read() as session:
        label_ids = {label.id for label in truths(session=session).values()}
    assert set(card["data"]["labels"]) == label_ids and card["init_from"]["version"] == "scratch-v2"
    assert card["evaluation"]["held_out"]["dataset"] == "chips-1" and card["evaluation"]["held_out"]["count"] == 4 + manifest["counts"]["labelled_val"]
    assert card["reference"]["phones"] == 12 + 16

    with database.write() as session:
        register_model_version(session=session, model_dir=folder, actor=SIMULATED_ENGINEER.name)
    set_candidate(database, SIMULATED_ENGINEER, line_name="line-1", version="chips-tiny")
    run_scenario(
        database, settings, line_name="line-1", scenario_name="new-defect", phones=10, seed=99, level=AutomationLevel.SHADOW, stop_when_stepped_down=False
    )
    with database.read() as session:
        line = get_line(session=session, name="line-1")
        shadowed = session.query(Prediction).filter(Prediction.model_version_id == line.candidate_model_id, Prediction.is_candidate.is_(True)).count()
    assert line.candidate_model_version == "chips-tiny" and shadowed == 10


def test_a_changed_data_set_is_refused_for_training(database, settings) -> None:
    run_scenario(database, settings, line_name="line-1", scenario_name="new-defect", phones=50, level=AutomationLevel.SHADOW, stop_when_stepped_down=False)
    label_queue_from_truth(database, line_id=None, count=4)
    root = export_dataset(database, settings, ExportRecipe(name="tamper", generated=TINY))
    next((root / "labels" / "train").glob("*.txt")).write_text("0 0.5 0.5 0.9 0.9\n")
    with pytest.raises(DatasetError, match="changed since the export"):
        read_manifest(root)
