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
