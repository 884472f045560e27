"""Training in the background: a real job process trains on an exported data set, reports each epoch,
registers the new version and puts it in shadow; a cancelled job stops at the next epoch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.auth import CurrentUser, PermissionDeniedError
from core.dataset import ExportRecipe, export_dataset
from core.drift.demo import run_scenario
from core.retraining import label_queue_from_truth
from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION, load_settings
from core.training import DataRecipe
from core.training_jobs import cancel_job, get_job, start_job
from core.vocabulary import AutomationLevel, Role
from db.bootstrap import initialize, open_database
from db.lines import get_line

ERIN = CurrentUser("erin", Role.ENGINEER)
TINY = DataRecipe(train_count=8, val_count=4, train_seed=5000, val_seed=6000, defect_rate=0.6)


@pytest.fixture
def installation(tmp_path: Path):
    """An installation whose models folder is its own (new versions must not land in the repository's models/)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / SHIPPED_MODEL_VERSION).symlink_to(PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION)
    settings = load_settings({"SHADOWLINE_DATA_DIR": str(tmp_path / "data"), "SHADOWLINE_MODELS_DIR": str(models), "SHADOWLINE_ADMIN_PASSWORD": "admin-pass-1"})
    database = open_database(settings)
    initialize(database, settings)
    run_scenario(database, settings, line_name="line-1", scenario_name="new-defect", phones=50, level=AutomationLevel.SHADOW, stop_when_stepped_down=False)
    label_queue_from_truth(database, line_id=None, count=6)
    dataset = export_dataset(database, settings, ExportRecipe(name="chips", generated=TINY), progress=lambda _: None)
    yield database, settings, dataset
    database.dispose()


def _wait(database, job_id: int, statuses: set[str], seconds: float = 900.0):
    # A generous bound: the job trains on two cores that may be shared with other work; this is
    # a hang guard, not a timing.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = get_job(database, job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {get_job(database, job_id).status} after {seconds} s")


def test_a_background_job_trains_registers_and_puts_the_version_in_shadow(installation) -> None:
    database, settings, dataset = installation
    with pytest.raises(PermissionDeniedError):
        start_job(database, settings, CurrentUser("sam", Role.SUPERVISOR), dataset=dataset, version="x", epochs=1, init_from=None, candidate_for=None)
    job_id = start_job(
        database, settings, ERIN, dataset=dataset, version="chips-bg", epochs=1, init_from=settings.shipped_model_dir, candidate_for="line-1", eval_count=5
    )
    job = _wait(database, job_id, {"done", "failed", "cancelled"})
    log = (settings.data_dir / "jobs" / f"{job_id}.log").read_text()
    assert job.status == "done", log[-2000:]
    assert job.progress["epoch"] == 1 and (settings.models_dir / "chips-bg" / "card.json").is_file()
    with database.read() as session:
        assert get_line(session=session, name="line-1").candidate_model_version == "chips-bg"
    with pytest.raises(ValueError, match="already exists"):
        start_job(database, settings, ERIN, dataset=dataset, version="chips-bg", epochs=1, init_from=None, candidate_for=None)


def test_a_cancelled_job_stops_at_the_next_epoch(installation) -> None:
    database, settings, dataset = installation
    job_id = start_job(
        database, settings, ERIN, dataset=dataset, version="chips-long", epochs=200, init_from=settings.shipped_model_dir, candidate_for=None, eval_count=5
    )
    deadline = time.monotonic() + 180
    while get_job(database, job_id).progress.get("epoch", 0) < 1 and time.monotonic() < deadline:
        assert get_job(database, job_id).status in ("queued", "running"), (settings.data_dir / "jobs" / f"{job_id}.log").read_text()[-2000:]
        time.sleep(0.5)
    with pytest.raises(ValueError, match=r"already running.*#\d+ chips-long \(started by erin\)"):
        start_job(database, settings, ERIN, dataset=dataset, version="chips-second", epochs=1, init_from=None, candidate_for=None)
    cancel_job(database, ERIN, job_id)
    job = _wait(database, job_id, {"cancelled", "done", "failed"})
    assert job.status == "cancelled" and job.progress["epoch"] < 200 and "cancelled after epoch" in (job.message or "")
    assert not (settings.models_dir / "chips-long").exists()


def test_a_killed_job_is_reported_as_failed_not_running_forever(installation) -> None:
    import os
    import signal

    from core.training_jobs import list_jobs
    from db.models import TrainingJob

    database, settings, dataset = installation
    job_id = start_job(database, settings, ERIN, dataset=dataset, version="chips-killed", epochs=200, init_from=settings.shipped_model_dir, candidate_for=None)
    deadline = time.monotonic() + 120
    while get_job(database, job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    with database.read() as session:
        pid = session.get(TrainingJob, job_id).pid
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    (job,) = [j for j in list_jobs(database) if j.id == job_id]
    assert job.status == "failed" and "died" in (job.message or "")
    # The dead job does not hold the machine's one training slot.
    again = start_job(
        database, settings, ERIN, dataset=dataset, version="chips-again", epochs=1, init_from=settings.shipped_model_dir, candidate_for=None, eval_count=5
    )
    assert _wait(database, again, {"done", "failed", "cancelled"}).status == "done"


def test_a_job_whose_process_cannot_start_fails_and_frees_its_slot(installation, monkeypatch) -> None:
    import errno

    from core import training_jobs

    database, settings, dataset = installation

    def no_process(*_args, **_kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(training_jobs, "_spawn", no_process)  # the OS refusing a process, not a stand-in for the model or database
    with pytest.raises(ValueError, match=r"could not start: .*Cannot allocate memory"):
        start_job(database, settings, ERIN, dataset=dataset, version="chips-nomem", epochs=1, init_from=None, candidate_for=None)
    [job] = [j for j in training_jobs.list_jobs(database) if j.version == "chips-nomem"]
    assert job.status == "failed" and "could not start" in (job.message or "")
    monkeypatch.undo()
    job_id = training_jobs.reserve_slot(database, settings, ERIN, version="chips-next", dataset=dataset, epochs=1, init_from=None, candidate_for=None)
    assert get_job(database, job_id).status == "queued", "the slot of the job that never started is free"
