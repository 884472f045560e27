"""Real camera drops: files are stored before they are queued; bad files fail clearly and go to a person."""

from __future__ import annotations

import subprocess
import threading

import cv2
import numpy as np
from sqlalchemy import select

from core.camera import render_phone
from core.ingest import ingest_file, watch_folder
from core.worker import Worker
from db.lines import get_line
from db.models import FinalDecision, Inspection, ReviewTask, Routing
from tests.conftest import cli, cli_env


def _camera_drop(folder):
    folder.mkdir(parents=True, exist_ok=True)
    good = cv2.imencode(".jpg", render_phone(5).image)[1].tobytes()
    files = {
        "good.jpg": good,
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 3],
        "notes.txt": b"shift report: all fine\n",
        "huge.png": cv2.imencode(".png", np.zeros((10_001, 10_001), np.uint8))[1].tobytes(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_ingest_cli_stores_queues_and_the_worker_fails_bad_files_to_people(database, settings, tmp_path, shipped_model_dir):
    _camera_drop(tmp_path / "drop")
    result = subprocess.run(cli("ingest", str(tmp_path / "drop"), "--line", "line-1"), env=cli_env(settings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ingested 5 files" in result.stdout and "(4 unreadable)" in result.stdout
    for original in (tmp_path / "drop").iterdir():
        original.unlink()  # the camera software may delete its files at once: we hold copies
    Worker(database, settings).run(until_empty=True)
    with database.read() as session:
        rows = {i.serial: i for i in session.scalars(select(Inspection))}
        assert set(rows) == {"good", "empty", "truncated", "notes", "huge"}
        for serial, inspection in rows.items():
            assert (settings.data_dir / inspection.image_path).is_file(), "every file is kept, bad ones too"
            routing = session.get(Routing, inspection.id)
            if serial == "good":
                assert inspection.status == "done" and inspection.error is None
                continue
            assert inspection.status == "failed" and inspection.error
            assert routing.rule == "image_failed" and routing.decider == "human"
            assert session.get(FinalDecision, inspection.id) is None, "a phone nobody judged is never passed"
            assert session.scalar(select(ReviewTask).where(ReviewTask.inspection_id == inspection.id)) is not None
        assert "empty" in rows["empty"].error
        assert "truncated" in rows["truncated"].error
        assert "not an image" in rows["notes"].error
        assert "10001x10001" in rows["huge"].error


def test_ingest_of_a_missing_path_or_unknown_line_is_a_one_line_error(database, settings, tmp_path):
    for args in (("ingest", str(tmp_path / "nope.jpg")), ("ingest", str(tmp_path), "--line", "line-9")):
        result = subprocess.run(cli(*args), env=cli_env(settings), capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_watch_takes_files_once_written_and_moves_them_aside(database, settings, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    seen = []
    thread = threading.Thread(
        target=watch_folder,
        args=(database, settings),
        kwargs={
            "line_id": line.id,
            "line_name": line.name,
            "folder": folder,
            "on_ingest": seen.append,
            "poll_seconds": 0.1,
            "settle_seconds": 0.2,
            "max_seconds": 4,
        },
    )
    thread.start()
    _camera_drop(folder)
    thread.join()
    assert {r.source.name for r in seen} == {"good.jpg", "empty.jpg", "truncated.jpg", "notes.txt", "huge.png"}
    assert sorted(p.name.split("-", 1)[1] for p in (folder / "ingested").iterdir()) == sorted(
        ["good.jpg", "empty.jpg", "truncated.jpg", "notes.txt", "huge.png"]
    )
    assert {r.source.name for r in seen if r.problem} == {"empty.jpg", "truncated.jpg", "notes.txt", "huge.png"}


def test_ingest_copies_are_content_addressed(database, settings, tmp_path):
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    path = tmp_path / "a.jpg"
    path.write_bytes(cv2.imencode(".jpg", render_phone(1).image)[1].tobytes())
    first = ingest_file(database, settings, line_id=line.id, line_name=line.name, path=path)
    second = ingest_file(database, settings, line_id=line.id, line_name=line.name, path=path)
    assert first.stored_path == second.stored_path and first.inspection_id != second.inspection_id
