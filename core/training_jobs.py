"""Training in the background: a job row, its own process, progress per epoch, cancel.

Training never runs inside the Streamlit script: :func:`start_job` records the job and starts
``shadowline job run ID`` as a separate process (its output in ``DATA_DIR/jobs/ID.log``). That
process trains on the exported data set (:func:`core.training.train_from_dataset`), writes the
epoch, losses and metrics into the job after every epoch, stops at the next epoch when someone
cancels, and at the end registers the new version and makes it the line's candidate, in shadow
beside the active model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.auth import Action, CurrentUser, require
from core.settings import PROJECT_ROOT, Settings
from db import audit, locks
from db.engine import Database
from db.models import TrainingJob, utcnow


class JobCancelledError(RuntimeError):
    """Raised inside training when the job was cancelled."""


@dataclass(frozen=True)
class JobView:
    id: int
    version: str
    dataset: str
    epochs: int
    candidate_for: str | None
    requested_by: str
    status: str
    progress: dict[str, Any]
    message: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime

    @property
    def fraction(self) -> float:
        return min(1.0, float(self.progress.get("epoch", 0)) / max(1, self.epochs))


def _view(row: TrainingJob) -> JobView:
    return JobView(
        row.id,
        row.version,
        row.dataset,
        row.epochs,
        row.candidate_for,
        row.requested_by,
        row.status,
        row.progress or {},
        row.message,
        row.cancel_requested,
        row.created_at,
        row.updated_at,
    )


def _alive(pid: int | None) -> bool:
    """Whether the job's process still runs (a dead child of this process is reaped, not mistaken for alive)."""
    if pid is None:
        return False
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    except ChildProcessError:
        pass  # started by another process (the app or the CLI): ask the system
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_jobs(database: Database) -> list[int]:
    """Mark running jobs whose process is gone (killed, machine restarted) as failed, saying so."""
    with database.write() as session:
        # A queued job has a pid once its process was started; one without a pid is still being started.
        dead = [
            row
            for row in session.query(TrainingJob).filter(TrainingJob.status.in_(("queued", "running")))
            if (row.status == "running" or row.pid is not None) and not _alive(row.pid)
        ]
        for row in dead:
            epoch = (row.progress or {}).get("epoch", 0)
            row.status, row.message, row.updated_at = "failed", f"the training process (pid {row.pid}) died after epoch {epoch}; start the job again", utcnow()
        return [row.id for row in dead]


def list_jobs(database: Database, limit: int = 20) -> list[JobView]:
    reap_dead_jobs(database)
    with database.read() as session:
        return [_view(r) for r in session.query(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit)]


def get_job(database: Database, job_id: int) -> JobView:
    with database.read() as session:
        row = session.get(TrainingJob, job_id)
        if row is None:
            raise ValueError(f"no training job {job_id}")
        return _view(row)


def start_job(
    database: Database,
    settings: Settings,
    user: CurrentUser,
    *,
    dataset: Path,
    version: str,
    epochs: int,
    init_from: Path | None,
    candidate_for: str | None,
    eval_count: int = 200,
) -> int:
    """Record a training job and start its process; returns the job id."""
    require(user, Action.SWITCH_MODEL)
    from core.dataset import read_manifest
    from core.extras import training_available, training_hint

    if not training_available():  # an edge install: refuse now, not in a process that dies at once
        raise ValueError(training_hint("Training"))

    read_manifest(dataset)  # refuse a missing or changed data set now, not minutes later
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    if (settings.models_dir / version).exists():
        raise ValueError(f"model version {version!r} already exists: choose another name")
    reap_dead_jobs(database)
    job_id = reserve_slot(database, settings, user, version=version, dataset=dataset, epochs=epochs, init_from=init_from, candidate_for=candidate_for)
    try:
        process = _spawn(settings, job_id, eval_count)
    except OSError as error:  # the slot is freed: a job that never started must not hold it
        _update(database, job_id, status="failed", message=f"the training process could not start: {error}")
        raise ValueError(f"the training process could not start: {error}") from error
    with database.write() as session:
        job = session.get(TrainingJob, job_id)
        assert job is not None
        job.pid = process.pid
    return job_id


def _spawn(settings: Settings, job_id: int, eval_count: int) -> subprocess.Popen[bytes]:
    """The job's own process (``shadowline job run``), its output in ``DATA_DIR/jobs/ID.log``."""
    logs = settings.data_dir / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{job_id}.log").open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "core.cli", "job", "run", str(job_id), "--eval-count", str(eval_count)],
            cwd=PROJECT_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the page's script run
            env=os.environ
            | {
                "SHADOWLINE_DATA_DIR": str(settings.data_dir),
                "SHADOWLINE_DATABASE_URL": settings.database_url,
                "SHADOWLINE_MODELS_DIR": str(settings.models_dir),
            },
        )


def reserve_slot(
    database: Database,
    settings: Settings,
    user: CurrentUser,
    *,
    version: str,
    dataset: Path,
    epochs: int,
    init_from: Path | None,
    candidate_for: str | None,
) -> int:
    """Record a queued job if a training slot is free (at most ``settings.max_training_jobs`` at once); returns its id.

    Raises:
        ValueError: Every slot is taken; the message names the jobs that hold them.
    """
    with database.write() as session:
        # Count, then insert: no row to lock, so a named lock makes the count and the insert one step
        # across processes (two jobs started at once cannot both take the last slot).
        locks.advisory_xact_lock(session=session, name=locks.TRAINING_SLOTS)
        busy = session.query(TrainingJob).filter(TrainingJob.status.in_(("queued", "running"))).order_by(TrainingJob.id).all()
        if len(busy) >= settings.max_training_jobs:
            names = ", ".join(f"#{job.id} {job.version} (started by {job.requested_by})" for job in busy)
            raise ValueError(
                f"{len(busy)} training job(s) already running, the most this machine runs at once ({settings.max_training_jobs}): {names}. "
                "Wait for it to finish or cancel it."
            )
        row = TrainingJob(
            version=version,
            dataset=str(dataset),
            init_from=str(init_from) if init_from else None,
            epochs=epochs,
            candidate_for=candidate_for,
            requested_by=user.name,
        )
        session.add(row)
        session.flush()
        job_id = row.id
        audit.record(
            session=session,
            actor=user.name,
            action="training.start",
            entity="training_job",
            entity_id=job_id,
            after={"version": version, "dataset": str(dataset), "epochs": epochs},
        )
    return job_id


def cancel_job(database: Database, user: CurrentUser, job_id: int) -> None:
    """Ask a job to stop after its current epoch."""
    require(user, Action.SWITCH_MODEL)
    with database.write() as session:
        row = session.get(TrainingJob, job_id)
        if row is None:
            raise ValueError(f"no training job {job_id}")
        if row.status not in ("queued", "running"):
            raise ValueError(f"job {job_id} is already {row.status}")
        row.cancel_requested = True
        audit.record(session=session, actor=user.name, action="training.cancel", entity="training_job", entity_id=job_id)


def _update(database: Database, job_id: int, **changes: Any) -> bool:
    """Write changes to the job; returns whether a cancel was requested."""
    with database.write() as session:
        row = session.get(TrainingJob, job_id)
        assert row is not None
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        return bool(row.cancel_requested)


def run_job(database: Database, settings: Settings, job_id: int, *, eval_count: int = 200) -> JobView:
    """Run a recorded job in this process (what ``shadowline job run ID`` does)."""
    from core import deployment
    from core.training import TrainConfig, train_from_dataset
    from core.vocabulary import Role
    from db.registry import register_model_version

    job = get_job(database, job_id)
    if job.status != "queued":
        raise ValueError(f"job {job_id} is {job.status}, not queued")
    if _update(database, job_id, status="running", pid=os.getpid(), progress={"epoch": 0, "epochs": job.epochs, "stage": "training"}):
        _update(database, job_id, status="cancelled", message="cancelled before it started")
        return get_job(database, job_id)

    history: list[dict[str, float]] = []

    def on_epoch(epoch: Any) -> None:
        history.append({"epoch": epoch.epoch, **epoch.losses, **{k: v for k, v in epoch.metrics.items() if not k.startswith("fitness")}})
        progress = {"epoch": epoch.epoch, "epochs": epoch.epochs, "losses": epoch.losses, "metrics": epoch.metrics, "stage": "training", "history": history}
        if _update(database, job_id, progress=progress):
            raise JobCancelledError(f"cancelled after epoch {epoch.epoch}")

    with database.read() as session:
        init_from = session.get(TrainingJob, job_id).init_from  # type: ignore[union-attr]
    try:
        folder = train_from_dataset(
            Path(job.dataset),
            TrainConfig(version=job.version, epochs=job.epochs),
            settings.models_dir,
            cache_dir=settings.cache_dir,
            init_from=Path(init_from) if init_from else None,
            eval_count=eval_count,
            progress=lambda text: print(text, flush=True),
            on_epoch=on_epoch,
        )
    except JobCancelledError as cancelled:
        _update(database, job_id, status="cancelled", message=str(cancelled))
        return get_job(database, job_id)
    except Exception as error:  # the job reports any failure; the app keeps running
        _update(database, job_id, status="failed", message=f"{type(error).__name__}: {error}")
        raise
    _update(database, job_id, progress={"epoch": job.epochs, "epochs": job.epochs, "stage": "registering", "history": history})
    with database.write() as session:
        registered = register_model_version(session=session, model_dir=folder, actor=job.requested_by, models_dir=settings.models_dir)
    message = f"model {registered.version} trained and registered"
    if job.candidate_for:
        # The requester's permission was checked when the job started.
        message = deployment.set_candidate(database, CurrentUser(job.requested_by, Role.ENGINEER), line_name=job.candidate_for, version=registered.version)
    _update(database, job_id, status="done", message=message)
    return get_job(database, job_id)
