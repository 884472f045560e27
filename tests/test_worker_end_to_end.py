"""The working line end to end with the real shipped model and a real SQLite database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from core.camera import get_scenario
from core.line_simulator import SIMULATED_INSPECTOR, SimulatedInspector, simulate_line
from core.settings import load_settings
from core.vocabulary import AutomationLevel
from core.worker import Worker
from db.bootstrap import initialize, open_database
from db.lines import get_line, set_level, update_settings
from db.models import AuditEntry, FinalDecision, HumanDecision, ImageMetrics, Inspection, Prediction, ReviewTask, Routing
from db.status import line_statuses
from tests.conftest import cli, cli_env


def _feed(database, settings, count: int, scenario: str = "normal", seed: int = 11) -> None:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario(scenario), count=count, rate=1000, seed=seed, inspector=None)


def _counts(database) -> dict[str, int]:
    with database.read() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Inspection, ImageMetrics, Prediction, Routing, FinalDecision, ReviewTask, HumanDecision)
        }


def _set_level(database, level: AutomationLevel) -> None:
    with database.write() as session:
        set_level(session=session, line_id=get_line(session=session, name="line-1").id, level=level, actor="test")


@pytest.mark.both_backends
def test_shadow_mode_every_phone_gets_exactly_one_final_decision(database, settings, shipped_model_dir):
    _feed(database, settings, 20)
    stats = Worker(database, settings, batch_size=4).run(until_empty=True)
    assert stats.processed == 20 and stats.failed_images == 0
    counts = _counts(database)
    assert counts["inspections"] == counts["image_metrics"] == counts["predictions"] == counts["routings"] == 20
    assert counts["final_decisions"] == 0, "in shadow mode the model decides nothing"
    assert counts["review_tasks"] == 20
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    answered = SimulatedInspector().answer_open_tasks(database, line_id=line.id)
    assert answered == 20
    counts = _counts(database)
    assert counts["final_decisions"] == 20 and counts["human_decisions"] == 20
    with database.read() as session:
        decisions = session.scalars(select(HumanDecision)).all()
        assert all(d.is_simulated and d.user_name == SIMULATED_INSPECTOR and not d.saw_model_boxes for d in decisions)
        status = line_statuses(session=session)[0]
    assert status.decided_by == {"model": 0, "human": 20, "pending": 0}
    assert status.verdicts["pass"] + status.verdicts["reject"] == 20


def test_full_automation_the_model_decides_and_an_audit_sample_goes_to_people(database, settings, shipped_model_dir):
    _set_level(database, AutomationLevel.FULL)
    with database.write() as session:
        update_settings(session=session, line_id=get_line(session=session, name="line-1").id, actor="test", audit_share=0.25)
    _feed(database, settings, 24, seed=12)
    Worker(database, settings).run(until_empty=True)
    counts = _counts(database)
    assert counts["final_decisions"] == 24
    assert 1 <= counts["review_tasks"] < 24
    with database.read() as session:
        assert {f.decided_by for f in session.scalars(select(FinalDecision))} == {"model"}
        assert {t.kind for t in session.scalars(select(ReviewTask))} == {"audit"}


def test_human_only_runs_no_model(database, settings):
    _set_level(database, AutomationLevel.HUMAN_ONLY)
    _feed(database, settings, 5, seed=13)
    Worker(database, settings).run(until_empty=True)
    counts = _counts(database)
    assert counts["predictions"] == 0 and counts["image_metrics"] == 5 and counts["review_tasks"] == 5


@pytest.mark.both_backends
def test_a_sigkilled_worker_loses_nothing_and_decides_nothing_twice(database, settings, shipped_model_dir):
    _set_level(database, AutomationLevel.PARTIAL)
    _feed(database, settings, 40, seed=14)
    env = cli_env(settings)
    victim = subprocess.Popen(
        cli("worker", "--batch-size", "2", "--lease-seconds", "2", "--threads", "1"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with database.read() as session:
            done = session.scalar(select(func.count()).select_from(Inspection).where(Inspection.status == "done"))
        if done >= 6:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    with database.read() as session:
        done_at_kill = session.scalar(select(func.count()).select_from(Inspection).where(Inspection.status == "done"))
    assert 6 <= done_at_kill < 40, "the worker must be killed mid-run"

    survivor = subprocess.run(cli("worker", "--until-empty", "--lease-seconds", "2", "--threads", "1"), env=env, capture_output=True, text=True, timeout=300)
    assert survivor.returncode == 0, survivor.stderr
    # Phones the dead worker held come back once their 2 s lease expires.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with database.read() as session:
            left = session.scalar(select(func.count()).select_from(Inspection).where(Inspection.status != "done"))
        if left == 0:
            break
        time.sleep(2.5)
        subprocess.run(cli("worker", "--until-empty", "--threads", "1"), env=env, capture_output=True, timeout=300)
    counts = _counts(database)
    assert counts["inspections"] == 40
    assert counts["routings"] == counts["predictions"] == counts["image_metrics"] == 40, counts
    with database.read() as session:
        per_phone = session.execute(select(Prediction.inspection_id, func.count()).group_by(Prediction.inspection_id)).all()
        assert all(n == 1 for _, n in per_phone)
        model_finals = session.scalar(select(func.count()).select_from(FinalDecision))
        tasks = session.scalar(select(func.count()).select_from(ReviewTask).where(ReviewTask.kind != "audit"))
    # (A phone of the random audit sample is decided by the model and audited by a person: not a second decision.)
    assert model_finals + tasks == 40, "each phone is decided by the model or waits for one person, never both, never neither"


def test_a_model_that_cannot_be_loaded_sends_phones_to_people_and_says_so(tmp_path, shipped_model_dir):
    models = tmp_path / "models"
    shutil.copytree(shipped_model_dir, models / shipped_model_dir.name)
    settings = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path / "data"), "SHADOWLINE_MODELS_DIR": str(models)})
    database = open_database(settings)
    initialize(database, settings)
    _set_level(database, AutomationLevel.FULL)
    onnx = models / shipped_model_dir.name / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-100] + b"\0" * 100)  # tampered after registration
    _feed(database, settings, 4, seed=15)
    worker = Worker(database, settings)
    worker.run(until_empty=True)
    with database.read() as session:
        rules = {r.rule for r in session.scalars(select(Routing))}
        finals = session.scalar(select(func.count()).select_from(FinalDecision))
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "model.unavailable")).all()
    assert rules == {"model_unavailable"} and finals == 0
    assert len(audit) == 1 and "refusing" in audit[0].note
    assert "sha256" in worker.model_status()
    database.dispose()


@pytest.mark.parametrize("level", [AutomationLevel.SHADOW, AutomationLevel.CANARY])
def test_status_json_reports_each_line(database, settings, level, shipped_model_dir):
    _set_level(database, level)
    _feed(database, settings, 3, seed=16)
    Worker(database, settings).run(until_empty=True)
    result = subprocess.run(cli("status", "--json"), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import json

    line = json.loads(result.stdout)["lines"][0]
    for key in ("line", "level", "queue_depth", "counts", "verdicts", "decided_by", "phones_per_min", "worker_heartbeat_age_s", "active_model", "alarms"):
        assert key in line
    assert line["level"] == level.value and line["counts"]["done"] == 3 and line["queue_depth"] == 0
    assert line["active_model"] == shipped_model_dir.name and line["alarms"] == []
    assert set(line["decided_by"]) == {"model", "human", "pending"}


def test_an_unexpected_error_on_one_phone_sends_it_to_a_person_and_the_worker_goes_on(database, settings, monkeypatch, shipped_model_dir):
    _feed(database, settings, 4, seed=17)
    import core.inspection as worker_module

    real = worker_module.compute_input_metrics
    calls = {"n": 0}

    def flaky(image, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bug on one phone")
        return real(image, **kwargs)

    monkeypatch.setattr(worker_module, "compute_input_metrics", flaky)
    stats = Worker(database, settings).run(until_empty=True)
    assert stats.processed == 4
    with database.read() as session:
        failed = session.scalars(select(Inspection).where(Inspection.status == "failed")).all()
        assert len(failed) == 1 and "a bug on one phone" in failed[0].error
        assert session.get(Routing, failed[0].id).decider == "human"


def test_a_worker_on_two_cores_inspects_two_phones_at_once_and_decides_as_one_at_a_time(database, settings, tmp_path, monkeypatch):
    """`--threads 2`: two phones in inference at the same moment, each on one detector thread,
    and every phone decided exactly as a one-thread worker decides it (same boxes' top score, same
    verdict, same rule)."""
    import threading

    from core.detector.adapter import Detector

    in_flight, most_at_once, inference_threads = [0], [0], set()
    guard = threading.Lock()
    real_detect = Detector.detect

    def counting_detect(self, image, **kwargs):  # the real model runs; this only counts who runs it when
        with guard:
            in_flight[0] += 1
            most_at_once[0] = max(most_at_once[0], in_flight[0])
            inference_threads.add(threading.get_ident())
        try:
            return real_detect(self, image, **kwargs)
        finally:
            with guard:
                in_flight[0] -= 1

    monkeypatch.setattr(Detector, "detect", counting_detect)

    def decided(db, threads: int) -> dict[str, tuple[str, str, float]]:
        _set_level(db, AutomationLevel.FULL)
        _feed(db, settings if db is database else other_settings, 40, seed=21)
        worker = Worker(db, settings if db is database else other_settings, threads=threads)
        stats = worker.run(until_empty=True)
        worker.close()
        assert stats.processed == 40 and stats.failed_images == 0
        with db.read() as session:
            rows = session.execute(
                select(Inspection.serial, FinalDecision.verdict, FinalDecision.rule, Prediction.max_confidence)
                .join(FinalDecision, FinalDecision.inspection_id == Inspection.id)
                .join(Prediction, Prediction.inspection_id == Inspection.id)
                .order_by(FinalDecision.decided_at, Inspection.id)
            ).all()
        return {serial: (verdict, rule, confidence) for serial, verdict, rule, confidence in rows}

    other_settings = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path / "one-thread"), "SHADOWLINE_MODELS_DIR": str(settings.models_dir)})
    other = open_database(other_settings)
    initialize(other, other_settings)
    try:
        one_at_a_time = decided(other, threads=1)
        assert most_at_once[0] == 1
        most_at_once[0] = 0
        inference_threads.clear()
        two_at_once = decided(database, threads=2)
    finally:
        other.dispose()
    assert most_at_once[0] == 2 and len(inference_threads) == 2
    assert len(two_at_once) == 40
    assert two_at_once == one_at_a_time
    assert {verdict for verdict, _, _ in two_at_once.values()} == {"pass", "reject"}


class _ClaimSizes(Worker):
    """The worker as it is, noting how many phones each round claimed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def _claim(self):
        claimed = super()._claim()
        if claimed:
            self.sizes.append(len(claimed))
        return claimed


@pytest.mark.parametrize(("seconds", "expected"), [(1000.0, [16, 24]), (1e-6, [16] + [2] * 12)])
def test_a_round_claims_about_a_second_of_work_at_the_workers_own_pace(database, settings, shipped_model_dir, monkeypatch, seconds, expected):
    """The first round claims 16 phones a stream; later ones what the worker inspects in BATCH_SECONDS at
    its recent pace, within 2..64 a stream: an hour's worth is capped, a microsecond's floored."""
    import core.worker

    monkeypatch.setattr(core.worker, "BATCH_SECONDS", seconds)
    _feed(database, settings, 40)
    worker = _ClaimSizes(database, settings, threads=1)
    stats = worker.run(until_empty=True)
    assert stats.processed == 40
    assert worker.sizes == expected
    assert worker.pace is not None and worker.pace > 0


def test_a_batch_size_given_is_kept(database, settings, shipped_model_dir):
    _feed(database, settings, 12)
    worker = _ClaimSizes(database, settings, threads=1, batch_size=5)
    worker.run(until_empty=True)
    assert worker.sizes == [5, 5, 2]


def test_a_long_lived_worker_freezes_what_it_loaded_and_still_inspects(database, settings) -> None:
    """``shadowline worker`` asks for it: once the models are loaded, what is alive is out of the collector's sight."""
    import gc

    gc.unfreeze()
    _feed(database, settings, 6)
    worker = Worker(database, settings, threads=1, freeze_after_load=True)
    try:
        stats = worker.run(until_empty=True)
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # a test's process: its objects go back to the collector
        worker.close()
    assert frozen > 10_000
    assert stats.processed == 6
