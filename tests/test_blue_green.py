"""Blue/green model versions while the real worker runs: switch and rollback take effect on the next
phones, and no phone is ever decided by a version that was not active at that moment."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.auth import CurrentUser, PermissionDeniedError
from core.camera import get_scenario
from core.deployment import DeploymentError, rollback, set_candidate, switch
from core.ladder.actions import approve
from core.line_simulator import queue_simulated_phone
from core.vocabulary import AutomationLevel, Role
from core.worker import Worker
from db.lines import get_line, set_active_model, set_level
from db.models import AuditEntry, FinalDecision, ModelVersion, Prediction
from db.pipeline import queue_depth
from db.registry import register_model_version

ENGINEER = CurrentUser("erin", Role.ENGINEER)
MANAGER = CurrentUser("mo", Role.MANAGER)
SUPERVISOR = CurrentUser("sam", Role.SUPERVISOR)


@pytest.fixture
def green(database, shipped_model_dir: Path, tmp_path: Path) -> str:
    """A second registered version (the shipped weights under another version name: a real, loadable model)."""
    folder = tmp_path / "scratch-v2-green"
    shutil.copytree(shipped_model_dir, folder)
    card = json.loads((folder / "card.json").read_text())
    card["version"] = "scratch-v2-green"
    (folder / "card.json").write_text(json.dumps(card))
    with database.write() as session:
        register_model_version(session=session, model_dir=folder, actor="test")
    return "scratch-v2-green"


def _line(database):
    with database.read() as session:
        return get_line(session=session, name="line-1")


def test_switch_needs_a_manager_in_full_automation_and_rollback_is_for_anyone(database, green) -> None:
    with pytest.raises(DeploymentError, match="no candidate"):
        switch(database, ENGINEER, line_name="line-1")
    with pytest.raises(PermissionDeniedError):
        set_candidate(database, SUPERVISOR, line_name="line-1", version=green)
    set_candidate(database, ENGINEER, line_name="line-1", version=green)
    with database.write() as session:
        set_level(session=session, line_id=_line(database).id, level=AutomationLevel.FULL, actor="test")
    outcome = switch(database, ENGINEER, line_name="line-1", note="green looks better")
    assert not outcome.applied and outcome.request_id is not None
    assert _line(database).active_model_version == "scratch-v2"
    approve(database, MANAGER, request_id=outcome.request_id, note="agreed")
    line = _line(database)
    assert (line.active_model_version, line.candidate_model_version, line.previous_model_version) == (green, "scratch-v2", "scratch-v2")
    rollback(database, SUPERVISOR, line_name="line-1", note="overrides went up")
    line = _line(database)
    # Nothing to roll back to now: the version just removed stays loaded as the candidate, for a switch.
    assert (line.active_model_version, line.candidate_model_version, line.previous_model_version) == ("scratch-v2", green, None)


def test_a_switch_request_approved_after_someone_switched_is_obsolete(database, green) -> None:
    from core.ladder.actions import LadderError

    set_candidate(database, ENGINEER, line_name="line-1", version=green)
    with database.write() as session:
        set_level(session=session, line_id=_line(database).id, level=AutomationLevel.FULL, actor="test")
    request_id = switch(database, ENGINEER, line_name="line-1").request_id
    switch(database, MANAGER, line_name="line-1", to_version=green)  # a manager switched meanwhile
    with pytest.raises(LadderError, match="obsolete"):
        approve(database, MANAGER, request_id=request_id)  # approving it would swap the versions back
    assert _line(database).active_model_version == green


def test_switch_and_rollback_while_the_worker_runs(database, settings, green) -> None:
    line = _line(database)
    with database.write() as session:
        set_level(session=session, line_id=line.id, level=AutomationLevel.PARTIAL, actor="test")
    set_candidate(database, ENGINEER, line_name="line-1", version=green)
    worker = Worker(database, settings, worker_id="bluegreen", batch_size=4)
    runner = threading.Thread(target=worker.run, kwargs={"poll_seconds": 0.05, "max_seconds": 120})
    runner.start()
    scenario = get_scenario("normal")
    try:

        def feed(start: int, count: int) -> None:
            for i in range(start, start + count):
                queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=scenario, seed=808, index=i)

        feed(0, 40)
        assert switch(database, ENGINEER, line_name="line-1").applied  # below canary: no approval needed
        feed(40, 40)
        rollback(database, ENGINEER, line_name="line-1")
        feed(80, 40)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with database.read() as session:
                if queue_depth(session=session, line_id=line.id) == 0:
                    break
            time.sleep(0.2)
    finally:
        worker.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    with database.read() as session:
        changes = [
            (entry.at, entry.after["active_model_id"])
            for entry in session.scalars(select(AuditEntry).where(AuditEntry.entity == "line").order_by(AuditEntry.id))
            if entry.after and "active_model_id" in entry.after
        ]
        decisions = session.execute(select(FinalDecision.decided_at, FinalDecision.model_version_id).where(FinalDecision.decided_by == "model")).all()
        candidate_rows = session.scalar(select(Prediction.id).where(Prediction.is_candidate.is_(True)).limit(1))
    assert len(changes) >= 3 and decisions and candidate_rows is not None

    def active_at(moment) -> int:
        return [model for at, model in changes if at <= moment][-1]

    assert all(model == active_at(at) for at, model in decisions), "a phone was decided by a version that was not active"
    assert len({model for _, model in decisions}) == 2, "both versions decided phones: the switch took effect while running"


def test_a_failing_model_drops_a_fully_automated_line_back_to_shadow(database, settings, green) -> None:
    line = _line(database)
    with database.write() as session:
        model = session.scalar(select(ModelVersion).where(ModelVersion.version == green))
        set_active_model(session=session, line_id=line.id, model_id=model.id, actor="test")
        set_level(session=session, line_id=line.id, level=AutomationLevel.FULL, actor="test")
        weights = Path(model.path) / "model.onnx"
    weights.write_bytes(weights.read_bytes()[:-100] + b"x" * 100)  # tampered: the hash no longer matches
    for i in range(3):
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), seed=909, index=i)
    Worker(database, settings, worker_id="fails").run(until_empty=True)
    assert _line(database).level is AutomationLevel.SHADOW
    with database.read() as session:
        decided = session.execute(select(FinalDecision.decided_by)).scalars().all()
        notes = [e.note or "" for e in session.scalars(select(AuditEntry).where(AuditEntry.actor == "system", AuditEntry.action == "line.level"))]
    assert "model" not in decided, "no phone was passed by a model that could not be loaded"
    assert any("Automatic rollback from full automation" in note and "failed" in note for note in notes)
