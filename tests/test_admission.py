"""The admission check end to end: the real shipped model, the real worker, real SQLite.

Frames that are not phones, a lens cap and a frozen camera must never be decided by the model,
at any level where it may decide; each reaches a person with the reason. Normal phones still are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from core.admission import load_admitter_from
from core.camera import get_scenario, render_run_phone
from core.ingest import store_image_bytes
from core.line_simulator import queue_simulated_phone
from core.vocabulary import AutomationLevel
from core.worker import Worker
from db import drift as drift_db
from db.lines import get_line, set_level
from db.models import DriftCheck, FinalDecision, Inspection, ReviewTask, Routing
from db.pipeline import queue_inspection
from tests.conftest import cli, cli_env

MODEL_LEVELS = [AutomationLevel.PARTIAL, AutomationLevel.CANARY, AutomationLevel.FULL]


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def _not_phones() -> dict[str, np.ndarray]:
    """Frames a camera station may send that are not a phone the model can judge."""
    rng = np.random.default_rng(12)
    phone = render_run_phone(get_scenario("normal"), 4040, 1).image
    grass = np.zeros((360, 480, 3), np.uint8)
    grass[..., 1] = rng.integers(60, 200, (360, 480))  # green blades
    grass[..., 2] = rng.integers(20, 90, (360, 480))
    grass = cv2.GaussianBlur(grass, (3, 3), 0)
    wall = np.full((360, 480, 3), (60, 80, 150), np.uint8)  # brick red, mortar lines
    for y in range(0, 360, 30):
        cv2.line(wall, (0, y), (479, y), (190, 190, 190), 3)
        for x in range(0 if (y // 30) % 2 else 30, 480, 60):
            cv2.line(wall, (x, y), (x, y + 30), (190, 190, 190), 3)
    wall = np.clip(wall + rng.normal(0, 12, wall.shape), 0, 255).astype(np.uint8)
    frames = {
        "black": np.zeros((360, 480, 3), np.uint8),
        "white": np.full((360, 480, 3), 255, np.uint8),
        "noise": rng.integers(0, 256, (360, 480, 3), dtype=np.uint8),
        "tiny": np.full((1, 1, 3), 128, np.uint8),
        "thin": np.full((1, 5000, 3), 100, np.uint8),
        "grey": np.full((360, 480, 3), 120, np.uint8),
        "grey phone": cv2.cvtColor(cv2.cvtColor(phone, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
        "phone in extreme dim light": (phone * 0.06).astype(np.uint8),
        "grass": grass,
        "brick wall": wall,
    }
    try:  # real photographs, where Ultralytics' sample images are installed
        import ultralytics

        for path in sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg")):
            frames[f"photo {path.name}"] = cv2.resize(cv2.imread(str(path)), (480, 360))
    except ImportError:
        pass
    return frames


def _line(database):
    with database.read() as session:
        return get_line(session=session, name="line-1")


def _set_level(database, level: AutomationLevel) -> None:
    with database.write() as session:
        set_level(session=session, line_id=get_line(session=session, name="line-1").id, level=level, actor="test")


@pytest.mark.parametrize("level", MODEL_LEVELS)
def test_frames_that_are_not_phones_are_never_decided_by_the_model(database, settings, level):
    _set_level(database, level)
    line = _line(database)
    frames = _not_phones()
    ids = {}
    for name, frame in frames.items():
        relative, digest = store_image_bytes(settings, line.name, _png(frame), ".png")
        with database.write() as session:
            ids[queue_inspection(session=session, line_id=line.id, serial=f"X-{name}", image_path=relative, image_sha256=digest, source="test")] = name
    Worker(database, settings, batch_size=4).run(until_empty=True)
    with database.read() as session:
        decided = session.scalars(select(FinalDecision.inspection_id).where(FinalDecision.decided_by == "model")).all()
        routings = {r.inspection_id: r for r in session.scalars(select(Routing))}
        tasks = set(session.scalars(select(ReviewTask.inspection_id)))
    assert [ids[i] for i in decided] == [], "the model decided frames that are not phones"
    for inspection_id, name in ids.items():
        routing = routings[inspection_id]
        assert routing.decider == "human" and inspection_id in tasks, name
        if routing.rule == "image_failed":
            continue
        assert routing.admitted is False and routing.admission_reason, name
        if routing.level != "shadow":
            assert routing.rule == "not_admitted", (name, routing.rule)
            assert routing.admission_reason in routing.reason  # what the person and the Live line see
        # else: the run of refusals already stepped the line down to shadow, where people judge every phone


def test_normal_phones_are_admitted_and_decided_at_full_automation(database, settings):
    _set_level(database, AutomationLevel.FULL)
    line = _line(database)
    for index in range(40):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), seed=515, index=index)
    Worker(database, settings, batch_size=8).run(until_empty=True)
    with database.read() as session:
        admitted = session.scalar(select(func.count()).select_from(Routing).where(Routing.admitted.is_(True)))
        by_model = session.scalar(select(func.count()).select_from(FinalDecision).where(FinalDecision.decided_by == "model"))
        novelty = session.scalars(select(Routing.novelty)).all()
    assert admitted >= 37 and by_model == admitted  # ~1 % of normal phones may go to a person
    assert all(n is not None and 0 <= n <= 1 for n in novelty)


@pytest.mark.parametrize("fault", ["lens-cap", "frozen-frame"])
def test_a_camera_fault_at_full_automation_passes_no_phone_and_steps_the_line_down_at_once(database, settings, fault):
    _set_level(database, AutomationLevel.FULL)
    line = _line(database)
    scenario = replace(get_scenario(fault), onset=12)
    worker = Worker(database, settings, batch_size=2)
    for index in range(40):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=scenario, seed=77, index=index)
        if index % 2 == 1:  # the line keeps moving: two phones at a time
            worker.run(until_empty=True)
    with database.read() as session:
        rows = session.execute(
            select(Inspection.serial, FinalDecision.decided_by, Routing.admitted, Routing.level)
            .join(Routing, Routing.inspection_id == Inspection.id)
            .outerjoin(FinalDecision, FinalDecision.inspection_id == Inspection.id)
        ).all()
        alarms = drift_db.current_alarms(session=session, line_id=line.id)
        level = get_line(session=session, name="line-1").level
    after = [r for r in rows if int(r[0].rsplit("-", 1)[-1]) >= 12]
    assert [r for r in after if r[1] == "model"] == [], "the model decided phones it could not see"
    assert all(r[2] is False for r in after)
    assert level is AutomationLevel.SHADOW
    alarm = next(a for a in alarms if a.metric == "inadmissible_rate")
    assert alarm.severity == "severe" and "in a row" in alarm.reason
    at_full_after_onset = [r for r in after if r[3] == "full"]
    assert len(at_full_after_onset) <= settings.admission_run_alarm + 1  # stepped down within a batch of the run


def test_the_admission_check_is_part_of_the_version_and_refused_when_changed(shipped_model_dir, tmp_path):
    import shutil

    from core.admission import ADMISSION_FILE, AdmissionError

    admitter = load_admitter_from(shipped_model_dir)
    assert admitter.feature_size == 256 and admitter.target_rate == 0.01
    assert 0.005 <= float(np.mean(admitter.calibration > admitter.threshold)) <= 0.011
    copy = tmp_path / "copy"
    shutil.copytree(shipped_model_dir, copy, ignore=shutil.ignore_patterns("*.pt", "reference-samples"))
    data = bytearray((copy / ADMISSION_FILE).read_bytes())
    data[-10] ^= 0xFF
    (copy / ADMISSION_FILE).write_bytes(bytes(data))
    with pytest.raises(AdmissionError, match="refusing a changed admission check"):
        load_admitter_from(copy)
    assert load_admitter_from(shipped_model_dir, target_rate=0.05).threshold < admitter.threshold


def test_the_novelty_score_is_the_mean_distance_to_the_nearest_reference_images(shipped_model_dir):
    """The score's matrix-vector shortcut gives the plain Euclidean k-nearest-neighbour mean."""
    from core.admission import ADMISSION_METRICS, NEIGHBOURS

    admitter = load_admitter_from(shipped_model_dir)
    rng = np.random.default_rng(5)
    centre_metrics = {name: float((lo + hi) / 2) for name, (lo, hi) in zip(ADMISSION_METRICS, admitter.ranges, strict=True)}
    for spread in (0.0, 0.1, 1.0, 10.0):
        features = np.abs(admitter.centre[: admitter.feature_size] + spread * rng.standard_normal(admitter.feature_size))
        direct = np.sort(np.linalg.norm(admitter.points - admitter._vector(features, centre_metrics), axis=1))[:NEIGHBOURS].mean()
        assert admitter.score(features, centre_metrics) == pytest.approx(direct, rel=1e-9, abs=1e-9)


def test_a_version_without_an_admission_check_runs_but_decides_nothing_alone(database, settings, shipped_model_dir, tmp_path):
    import shutil

    from core.admission import forget_admitter
    from db.registry import register_model_version

    folder = tmp_path / "models" / "no-check"
    shutil.copytree(shipped_model_dir, folder, ignore=shutil.ignore_patterns("*.pt", "reference-samples"))
    forget_admitter(folder)
    from core.detector.card import read_card, write_card

    write_card(folder, {**read_card(folder), "version": "no-check"})
    with database.write() as session:
        model_id = register_model_version(session=session, model_dir=folder, actor="test").id
        from db.lines import set_active_model

        set_active_model(session=session, line_id=get_line(session=session, name="line-1").id, model_id=model_id, actor="test")
    _set_level(database, AutomationLevel.FULL)
    line = _line(database)
    for index in range(4):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), seed=5, index=index)
    Worker(database, settings, batch_size=4).run(until_empty=True)
    with database.read() as session:
        routings = session.scalars(select(Routing)).all()
        decided = session.scalar(select(func.count()).select_from(FinalDecision))
    assert decided == 0 and {r.admission_check for r in routings} == {"missing"}
    assert all("no admission check" in r.reason for r in routings)


def test_drift_checks_still_run_while_workers_are_killed_every_few_dozen_phones(database, settings):
    """The count since the last check lives in the database: restarts do not reset it."""
    line = _line(database)
    with database.write() as session:
        config = drift_db.get_config(session=session, line_id=line.id)
        drift_db.save_config(session=session, line_id=line.id, config=replace(config, check_every=50), actor="test")
    for index in range(260):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), seed=99, index=index)

    def processed() -> int:
        with database.read() as session:
            return int(session.scalar(select(func.count()).select_from(Inspection).where(Inspection.processed_at.is_not(None))) or 0)

    kills = 0
    deadline = time.monotonic() + 400
    env = cli_env(settings)
    while processed() < 260 and time.monotonic() < deadline:
        start = processed()
        worker = subprocess.Popen(cli("worker", "--batch-size", "4", "--lease-seconds", "1"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while processed() < min(start + 35, 260) and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
            kills += 1
    assert processed() == 260, "the workers did not finish the queue in time"
    with database.read() as session:
        checks = session.scalar(select(func.count()).select_from(DriftCheck).where(DriftCheck.line_id == line.id))
    assert kills >= 6
    # A check is due every 50 phones and every worker lived for ~35: an in-memory count would never reach it.
    assert checks >= 2, f"{checks} drift checks over 260 phones and {kills} killed workers"


def test_bench_admission_reports_the_share_sent_to_people_with_its_interval(settings, tmp_path):
    output = tmp_path / "admission.json"
    result = subprocess.run(
        cli("bench", "admission", "--images", "30", "--output", str(output)), env=cli_env(settings), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "sent to people" in result.stdout and "95 % CI" in result.stdout
    import json

    report = json.loads(output.read_text())
    assert report["phones"] == 30 and report["refused"] <= 3 and report["defective_phones"] > 0
    assert report["refused_rate_ci95"][0] <= report["refused_rate"] <= report["refused_rate_ci95"][1]


def test_the_grey_check_allows_two_levels_between_channels_and_no_more():
    """A colour camera's frame is grey when every sampled pixel's channels lie within 2 levels;
    the boundary holds both ways (B-G and G-R), at any frame size and with a single-channel frame."""
    from core.admission import _is_grey

    rng = np.random.default_rng(5)
    base = rng.integers(3, 250, (360, 480, 1), dtype=np.uint8).repeat(3, axis=2)
    assert _is_grey(base) and _is_grey(base[..., :1]) and _is_grey(base[..., 0]) and _is_grey(base[:1, :1])
    for channel, offset, grey in [(0, 2, True), (0, -2, True), (2, 2, True), (0, 3, False), (2, -3, False), (1, 3, False)]:
        frame = base.astype(np.int16)
        frame[::5, ::5, channel] += offset  # on the sampled pixels only: the check reads every 5th row and column here
        assert _is_grey(frame.astype(np.uint8)) is grey, (channel, offset)
    odd = base.copy()
    odd[1::5, 1::5, 0] = 0  # off the samples: not seen
    assert _is_grey(odd)
