"""Real camera drops: files are stored before they are queued; bad files fail clearly and go to a person."""

from __future__ import annotations

import errno
import json
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from core.camera import render_phone
from core.ingest import IngestRefused, StorageError, ingest_file, watch_folder
from core.worker import Worker
from db.heartbeats import watcher_states
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


# --- hardened intake: links, size limit, full or read-only data folder (issue 12) ---------------


def _line_1(database):
    with database.read() as session:
        return get_line(session=session, name="line-1")


def _stored_files(settings) -> list[str]:
    """Every file under the data folder's images (temporary ones too)."""
    root = settings.data_dir / "images"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _inspection_count(database) -> int:
    with database.read() as session:
        return len(session.scalars(select(Inspection)).all())


def test_ingest_cli_refuses_links_one_by_one_and_goes_on_with_the_others(database, settings, tmp_path):
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    drop = tmp_path / "drop"
    _camera_drop(drop)
    (drop / "passwd.jpg").symlink_to(secret)  # a link to a file outside the folder
    (drop / "linked-folder").symlink_to(secret.parent, target_is_directory=True)  # a link to a folder
    (drop / "sub").mkdir()
    (drop / "sub" / "etc.png").symlink_to("/etc/passwd")

    result = subprocess.run(cli("ingest", str(drop), "--line", "line-1"), env=cli_env(settings), capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, "a refused file makes the command fail, after the others were queued"
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") and "symbolic link" in e for e in errors), errors
    assert "ingested 5 files" in result.stdout and "3 refused" in result.stdout
    assert _inspection_count(database) == 5
    stored = b"".join(p.read_bytes() for p in (settings.data_dir / "images").rglob("*") if p.is_file())
    assert b"root:x:0:0" not in stored, "the link's target was copied"


def test_a_link_named_on_the_command_line_is_refused_too(database, settings, tmp_path):
    link = tmp_path / "phone.jpg"
    link.symlink_to("/etc/passwd")
    result = subprocess.run(cli("ingest", str(link)), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {link}: refused: a symbolic link") and len(result.stderr.strip().splitlines()) == 1
    assert _inspection_count(database) == 0 and _stored_files(settings) == []


def test_a_file_reached_through_a_linked_folder_is_outside_the_folder_given(database, settings, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "via").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    line = _line_1(database)
    with pytest.raises(IngestRefused, match="outside the folder given"):
        ingest_file(database, settings, line_id=line.id, line_name=line.name, path=tmp_path / "drop" / "via" / "a.jpg", root=tmp_path / "drop")
    assert _inspection_count(database) == 0


@pytest.mark.parametrize(
    ("size", "taken"),
    [
        (1024, True),  # exactly at the limit: taken
        (1025, False),  # one byte over: refused before anything is stored
        (5 * 1024 * 1024, False),  # far over (a camera dumping a video): refused from its size alone
    ],
)
def test_the_size_limit_is_checked_before_copying(database, settings, tmp_path, size, taken):
    limited = replace(settings, max_image_mb=1 / 1024)  # 1024 bytes
    path = tmp_path / "phone.jpg"
    path.write_bytes(b"\0" * size)
    line = _line_1(database)
    if taken:
        result = ingest_file(database, limited, line_id=line.id, line_name=line.name, path=path)
        assert result.problem and (limited.data_dir / result.stored_path).stat().st_size == size
        return
    with pytest.raises(IngestRefused, match=r"over the 1024 bytes limit \(SHADOWLINE_MAX_IMAGE_MB\)"):
        ingest_file(database, limited, line_id=line.id, line_name=line.name, path=path)
    assert _inspection_count(database) == 0 and _stored_files(limited) == []


def test_at_most_the_limit_and_one_byte_are_read(tmp_path, monkeypatch):
    from core import ingest

    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\0" * 10)
    reads = []
    real_fdopen = ingest.os.fdopen

    def spying_fdopen(fd, mode):
        handle = real_fdopen(fd, mode)
        real_read = handle.read

        def read(n=-1):
            reads.append(n)
            return real_read(n)

        handle.read = read
        return handle

    monkeypatch.setattr(ingest.os, "fdopen", spying_fdopen)
    assert ingest.read_source(path, root=tmp_path, limit=100) == b"\0" * 10
    assert reads == [101]


def test_the_size_limit_setting_is_read_from_the_environment(database, settings, tmp_path):
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "big.jpg").write_bytes(b"\0" * 3 * 1024 * 1024)
    env = {**cli_env(settings), "SHADOWLINE_MAX_IMAGE_MB": "2"}
    result = subprocess.run(cli("ingest", str(tmp_path / "drop")), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "3.0 MiB is over the 2.0 MiB limit" in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_is_one_line_per_file_and_leaves_no_temporary_file(database, settings, tmp_path, monkeypatch):
    from core import ingest

    real_write = Path.write_bytes

    def write_half_then_fill_the_disk(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    line = _line_1(database)
    path = tmp_path / "a.jpg"
    path.write_bytes(cv2.imencode(".jpg", render_phone(1).image)[1].tobytes())
    monkeypatch.setattr(Path, "write_bytes", write_half_then_fill_the_disk)
    with pytest.raises(ingest.StorageError, match="no space left on device") as caught:
        ingest_file(database, settings, line_id=line.id, line_name=line.name, path=path)
    assert len(str(caught.value).splitlines()) == 1
    assert _stored_files(settings) == [], "half a copy was left behind"
    assert _inspection_count(database) == 0


def _mount(args: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot mount here: {error}")
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (skipped where mounting is not permitted)."""
    target = tmp_path / "tiny"
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs"], target)
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, timeout=20)


@pytest.fixture
def read_only_disk(tmp_path):
    """A real read-only tmpfs (root ignores file permissions, not a read-only mount)."""
    target = tmp_path / "ro"
    _mount(["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"], target)
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, timeout=20)


def test_a_really_full_disk_refuses_the_file_and_leaves_nothing(database, settings, tmp_path, tiny_disk):
    on_tiny = replace(settings, data_dir=tiny_disk)  # images on the 1 MiB disk, the database elsewhere
    line = _line_1(database)
    path = tmp_path / "big.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 2 * 1024 * 1024, dtype=np.uint8).tobytes())
    with pytest.raises(StorageError, match="no space left on device"):
        ingest_file(database, on_tiny, line_id=line.id, line_name=line.name, path=path)
    assert _stored_files(on_tiny) == []
    small = tmp_path / "small.jpg"
    small.write_bytes(cv2.imencode(".jpg", render_phone(1).image)[1].tobytes())
    assert ingest_file(database, on_tiny, line_id=line.id, line_name=line.name, path=small).inspection_id


def test_a_read_only_data_folder_is_one_line_per_file_from_the_cli(database, settings, tmp_path, read_only_disk):
    drop = tmp_path / "drop"
    drop.mkdir()
    for n in range(3):
        (drop / f"p{n}.jpg").write_bytes(cv2.imencode(".jpg", render_phone(n).image)[1].tobytes())
    env = {**cli_env(settings), "SHADOWLINE_DATA_DIR": str(read_only_disk), "SHADOWLINE_DATABASE_URL": settings.database_url}
    result = subprocess.run(cli("ingest", str(drop)), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") and "read-only file system" in line for line in lines), lines
    assert _inspection_count(database) == 0


def test_watch_keeps_watching_through_a_full_disk_and_says_so_in_its_heartbeat(database, settings, tmp_path, monkeypatch):
    from core import ingest

    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(cv2.imencode(".jpg", render_phone(1).image)[1].tobytes())
    real_store = ingest.store_image_bytes
    failures = {"left": 3}

    def full_three_times(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise StorageError("cannot store the image in /data: no space left on device")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(ingest, "store_image_bytes", full_three_times)
    problems, states, seen = [], [], []

    def on_problem(text):
        problems.append(text)
        with database.read() as session:
            states.extend((w.state, w.detail) for w in watcher_states(session=session))

    line = _line_1(database)
    count = watch_folder(
        database,
        settings,
        line_id=line.id,
        line_name=line.name,
        folder=folder,
        on_ingest=seen.append,
        on_problem=on_problem,
        poll_seconds=0.02,
        settle_seconds=0.0,
        first_backoff_seconds=0.05,
        max_backoff_seconds=0.15,
        should_stop=lambda: bool(seen),
        max_seconds=20,
    )
    assert count == 1 and [r.source.name for r in seen] == ["a.jpg"]
    assert [p.rsplit("again in ", 1)[1] for p in problems] == ["0.05 s", "0.1 s", "0.15 s"], "1 s doubling to 60 s, scaled down"
    assert all(state == "backing_off" and "no space left on device" in detail for state, detail in states) and len(states) == 3
    assert (folder / "ingested").iterdir() and not (folder / "a.jpg").exists()
    with database.read() as session:
        assert [w.state for w in watcher_states(session=session, include_stopped=True)] == ["stopped"]
    assert _stored_files(settings) and not [n for n in _stored_files(settings) if n.endswith(".tmp")]


def test_watch_refuses_links_and_large_files_once_and_moves_them_aside(database, settings, tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "passwd.jpg").symlink_to("/etc/passwd")
    (folder / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    (folder / "big.jpg").write_bytes(b"\0" * 2048)
    (folder / "ok.jpg").write_bytes(cv2.imencode(".jpg", render_phone(1).image)[1].tobytes()[:1000])
    refusals, seen = [], []
    line = _line_1(database)
    watch_folder(
        database,
        replace(settings, max_image_mb=1 / 1024),
        line_id=line.id,
        line_name=line.name,
        folder=folder,
        on_ingest=seen.append,
        on_refused=refusals.append,
        poll_seconds=0.05,
        settle_seconds=0.1,
        max_seconds=1.5,
    )
    assert sorted(r.path.name for r in refusals) == ["big.jpg", "folder-link", "passwd.jpg"], "each refused once, by name"
    assert sorted(p.name for p in (folder / "refused").iterdir()) == ["big.jpg", "folder-link", "passwd.jpg"]
    assert (folder / "refused" / "passwd.jpg").is_symlink(), "the link itself was moved, not its target"
    assert [r.source.name for r in seen] == ["ok.jpg"]


def test_status_shows_a_watcher_backing_off_and_never_counts_it_as_a_worker(database, settings):
    from db import heartbeats

    with database.write() as session:
        heartbeats.beat(
            session=session,
            worker_id="watch:line-1:host-1",
            processed=4,
            state="backing_off",
            model_status="/camera: cannot store the image in /data: no space left on device; trying again in 8 s",
        )
    result = subprocess.run(cli("status"), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "worker NOT RUNNING" in result.stdout
    assert "  phones: 0 queued, 0 processing, 0 done, 0 failed · verdicts: " in result.stdout, "counts in words, not Python dictionaries"
    assert "watcher for line-1: BACKING OFF" in result.stdout and "no space left on device" in result.stdout
    data = subprocess.run(cli("status", "--json"), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    watchers = json.loads(data.stdout)["watchers"]
    assert [(w["line"], w["state"], w["ingested"], w["alive"]) for w in watchers] == [("line-1", "backing_off", 4, True)]
    assert json.loads(data.stdout)["lines"][0]["worker_alive"] is False
