"""Two machines of one plant: their own data folders, one shared image store and one database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.settings import PROJECT_ROOT, load_settings
from core.worker import Worker
from db.bootstrap import open_database
from db.models import Inspection
from tests.test_worker_end_to_end import _feed

pytestmark = pytest.mark.both_backends


def _machine(tmp_path, name: str, shared, database_url: str):
    return load_settings(
        {
            "SHADOWLINE_DATA_DIR": str(tmp_path / name),
            "SHADOWLINE_SHARED_DIR": str(shared),
            "SHADOWLINE_DATABASE_URL": database_url,
            "SHADOWLINE_MODELS_DIR": str(PROJECT_ROOT / "models"),
        }
    )


def _statuses(database) -> dict[str, int]:
    with database.read() as session:
        return dict(session.execute(select(Inspection.status, func.count()).group_by(Inspection.status)).all())


def test_a_worker_on_another_machine_reads_the_phones_the_first_one_stored(database, settings, tmp_path, shipped_model_dir) -> None:
    url = settings.database_url  # one database for both machines (the SQLite file stands in for the server)
    camera_box = _machine(tmp_path, "camera-box", tmp_path / "share", url)
    worker_box = _machine(tmp_path, "worker-box", tmp_path / "share", url)
    _feed(database, camera_box, 12, seed=31)
    with database.read() as session:
        stored = set(session.scalars(select(Inspection.image_path)))
    assert all(path.startswith("images/") for path in stored), "stored paths must not name a machine's data folder"
    assert not (tmp_path / "camera-box" / "images").exists() and (tmp_path / "share" / "images").is_dir()

    remote = open_database(worker_box)
    stats = Worker(remote, worker_box, batch_size=4, threads=1).run(until_empty=True)
    remote.dispose()
    assert stats.processed == 12 and stats.failed_images == 0
    assert _statuses(database) == {"done": 12}


def test_a_worker_without_the_share_says_which_store_is_missing_and_fails_no_phone(database, settings, tmp_path, caplog) -> None:
    url = settings.database_url
    camera_box = _machine(tmp_path, "camera-box", tmp_path / "share", url)
    unmounted = tmp_path / "mnt-not-mounted"
    unmounted.mkdir()
    worker_box = _machine(tmp_path, "worker-box", unmounted, url)
    _feed(database, camera_box, 6, seed=32)

    remote = open_database(worker_box)
    stats = Worker(remote, worker_box, batch_size=4, threads=1).run(once=True)
    remote.dispose()
    assert stats.processed == 0 and stats.failed_images == 0 and stats.storage_waits == 1
    assert _statuses(database) == {"queued": 6}, "the phones go back to the queue untouched"
    assert f"the image store is missing: {unmounted / 'images'}" in caplog.text and f"SHADOWLINE_SHARED_DIR={unmounted}" in caplog.text


def _version_folder(source, models_dir, version: str):
    """A copy of the shipped version under ``models_dir`` named ``version`` (weights and card; no .pt, no samples)."""
    import json
    import shutil

    folder = models_dir / version
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("reference-samples", "model.pt"))
    card = json.loads((folder / "card.json").read_text())
    card["version"] = version
    card["weights"].pop("model.pt", None)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_a_model_registered_on_one_machine_is_loaded_by_a_worker_on_another(database, settings, tmp_path, shipped_model_dir) -> None:
    import shutil

    from db.lines import get_line, set_active_model
    from db.models import ModelVersion, Prediction
    from db.registry import register_model_version

    url = settings.database_url
    # Each machine mounts the plant's models at a path of its own (or keeps a copy there).
    lab_models, edge_models = tmp_path / "lab" / "models", tmp_path / "edge" / "mnt" / "shadowline-models"
    lab_models.mkdir(parents=True)
    edge_models.mkdir(parents=True)
    lab = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path / "lab-data"), "SHADOWLINE_DATABASE_URL": url, "SHADOWLINE_MODELS_DIR": str(lab_models)})
    edge = load_settings(
        {
            "SHADOWLINE_DATA_DIR": str(tmp_path / "edge-data"),
            "SHADOWLINE_DATABASE_URL": url,
            "SHADOWLINE_MODELS_DIR": str(edge_models),
            "SHADOWLINE_SHARED_DIR": str(tmp_path / "share"),
        }
    )
    folder = _version_folder(shipped_model_dir, lab_models, "scratch-v2-lab")
    lab_db = open_database(lab)
    with lab_db.write() as session:
        register_model_version(session=session, model_dir=folder, actor="erin", models_dir=lab.models_dir)
        set_active_model(
            session=session,
            line_id=get_line(session=session, name="line-1").id,
            model_id=session.scalar(select(ModelVersion.id).where(ModelVersion.version == "scratch-v2-lab")),
            actor="erin",
        )
    lab_db.dispose()
    with database.read() as session:
        stored = session.scalar(select(ModelVersion.path).where(ModelVersion.version == "scratch-v2-lab"))
    assert stored == "scratch-v2-lab", "a stored model path must not name the registering machine's disk"

    shutil.copytree(folder, edge_models / "scratch-v2-lab")  # the same files, mounted elsewhere on the edge box
    shutil.rmtree(lab_models)  # and the lab's disk is not the edge box's
    _feed(database, edge, 6, seed=33)
    remote = open_database(edge)
    stats = Worker(remote, edge, batch_size=4, threads=1).run(until_empty=True)
    remote.dispose()
    assert stats.processed == 6 and stats.failed_images == 0
    with database.read() as session:
        versions = set(session.scalars(select(ModelVersion.version).join(Prediction, Prediction.model_version_id == ModelVersion.id)))
    assert versions == {"scratch-v2-lab"}
