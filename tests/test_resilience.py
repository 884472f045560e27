"""A worker rides out a PostgreSQL restart: it retries with back-off, does not exit, and loses no phone."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from core.vocabulary import AutomationLevel
from db.models import FinalDecision, Inspection, Prediction, ReviewTask
from tests.conftest import cli, cli_env
from tests.test_worker_end_to_end import _feed, _set_level


def _done(database) -> int:
    with database.read() as session:
        return int(session.scalar(select(func.count()).select_from(Inspection).where(Inspection.status == "done")) or 0)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_worker_rides_out_a_database_restart(database, settings, postgres_server, shipped_model_dir) -> None:
    _set_level(database, AutomationLevel.PARTIAL)
    _feed(database, settings, 40, seed=21)
    worker = subprocess.Popen(
        cli("worker", "--batch-size", "2", "--lease-seconds", "3", "--threads", "1"),
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_for(lambda: _done(database) >= 4, 120), "the worker never started deciding"
        postgres_server.restart()
        done_after_restart = _done(database)
        assert done_after_restart < 40, "the restart must happen mid-run"
        assert _wait_for(lambda: _done(database) == 40, 180), f"phones left undone after the restart: {40 - _done(database)}"
        assert worker.poll() is None, "the worker exited during the restart"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert "database unavailable" in stderr, stderr[-2000:]
    with database.read() as session:
        per_phone = session.execute(select(Prediction.inspection_id, func.count()).group_by(Prediction.inspection_id)).all()
        finals = session.scalar(select(func.count()).select_from(FinalDecision))
        # A phone of partial automation's random audit sample is decided by the model and audited by a person: not a second decision.
        tasks = session.scalar(select(func.count()).select_from(ReviewTask).where(ReviewTask.kind != "audit"))
    assert len(per_phone) == 40 and all(n == 1 for _, n in per_phone)
    assert finals + tasks == 40, "each phone is decided by the model or waits for one person, never both, never neither"
