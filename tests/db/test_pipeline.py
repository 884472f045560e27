"""The queue: atomic claims, leases that expire, results written only by the lease holder."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.routing import PhoneFacts, PolicySettings, route
from core.vocabulary import AutomationLevel, Verdict
from db.lines import get_line
from db.models import FinalDecision, Inspection, ReviewTask, utcnow
from db.pipeline import LeaseLostError, claim_batch, queue_inspection, record_result
from db.reviews import TaskNotHeldError, claim_next_task, record_human_decision

pytestmark = pytest.mark.both_backends


def _queue(database, n: int) -> int:
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        for i in range(n):
            queue_inspection(session=session, line_id=line.id, serial=f"S{i}", image_path=f"images/x{i}.jpg", image_sha256=None, source="ingest")
    return line.id


def _record(session, inspection_id: int, line_id: int, worker: str, level, decision) -> None:
    """Record a routed phone with no metrics or predictions (what these tests care about is the routing)."""
    record_result(
        session=session,
        inspection_id=inspection_id,
        line_id=line_id,
        worker_id=worker,
        level=level,
        routing=decision,
        metrics=None,
        predictions=[],
        routed_model_id=None,
    )


def _claim(database, worker: str, limit: int, lease: float = 30.0, now=None):
    with database.write() as session:
        return claim_batch(session=session, worker_id=worker, limit=limit, lease_seconds=lease, now=now)


def test_two_workers_never_claim_the_same_phone(database):
    _queue(database, 60)
    claimed: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    def grab(name: str) -> None:
        while batch := _claim(database, name, 3):
            claimed[name].extend(c.id for c in batch)

    threads = [threading.Thread(target=grab, args=(name,)) for name in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == 60 and len(set(every)) == 60


def test_an_expired_lease_is_reclaimed_and_the_old_holder_cannot_write(database):
    line_id = _queue(database, 1)
    first = _claim(database, "dead-worker", 1, lease=5)[0]
    assert _claim(database, "other", 1) == [], "a live lease is respected"
    later = utcnow() + timedelta(seconds=6)
    second = _claim(database, "other", 1, now=later)[0]
    assert second.id == first.id and second.attempts == 2
    decision = route(AutomationLevel.SHADOW, PhoneFacts("S0", max_confidence=0.9, admitted=True), PolicySettings())
    with pytest.raises(LeaseLostError), database.write() as session:
        _record(session, first.id, line_id, "dead-worker", AutomationLevel.SHADOW, decision)
    with database.write() as session:
        _record(session, first.id, line_id, "other", AutomationLevel.SHADOW, decision)
    with database.read() as session:
        assert session.get(Inspection, first.id).status == "done"
        assert session.scalar(select(func.count()).select_from(ReviewTask)) == 1


def test_a_phone_gets_one_final_decision_at_most(database):
    line_id = _queue(database, 1)
    item = _claim(database, "w", 1)[0]
    decision = route(AutomationLevel.FULL, PhoneFacts("S0", max_confidence=0.9, admitted=True), PolicySettings())
    with database.write() as session:
        _record(session, item.id, line_id, "w", AutomationLevel.FULL, decision)
    with pytest.raises(IntegrityError), database.write() as session:
        session.add(FinalDecision(inspection_id=item.id, line_id=line_id, verdict="pass", decided_by="human", level="full", rule="x"))


def test_review_tasks_go_to_one_reviewer_and_become_the_final_decision(database):
    line_id = _queue(database, 2)
    decision = route(AutomationLevel.ASSIST, PhoneFacts("S", max_confidence=0.5, admitted=True), PolicySettings())
    for item in _claim(database, "w", 2):
        with database.write() as session:
            _record(session, item.id, line_id, "w", AutomationLevel.ASSIST, decision)
    with database.write() as session:
        ana = claim_next_task(session=session, reviewer="ana")
    with database.write() as session:
        bob = claim_next_task(session=session, reviewer="bob")
    assert ana.inspection_id != bob.inspection_id and ana.show_model_boxes
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="cy") is None
    with pytest.raises(TaskNotHeldError), database.write() as session:
        record_human_decision(session=session, task_id=ana.task_id, reviewer="bob", verdict=Verdict.PASS)
    with database.write() as session:
        record_human_decision(session=session, task_id=ana.task_id, reviewer="ana", verdict=Verdict.REJECT, seconds_taken=3.2)
    with pytest.raises(TaskNotHeldError), database.write() as session:
        record_human_decision(session=session, task_id=ana.task_id, reviewer="ana", verdict=Verdict.PASS)
    with database.read() as session:
        final = session.get(FinalDecision, ana.inspection_id)
        assert (final.verdict, final.decided_by, final.level) == ("reject", "human", "assist")


def test_a_persons_decision_is_in_the_audit_log(database):
    line_id = _queue(database, 1)
    decision = route(AutomationLevel.SHADOW, PhoneFacts("S", max_confidence=0.5, admitted=True), PolicySettings())
    item = _claim(database, "w", 1)[0]
    with database.write() as session:
        _record(session, item.id, line_id, "w", AutomationLevel.SHADOW, decision)
    with database.write() as session:
        task = claim_next_task(session=session, reviewer="ana")
        record_human_decision(session=session, task_id=task.task_id, reviewer="ana", verdict=Verdict.PASS)
    with database.read() as session:
        from db.models import AuditEntry

        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "phone.decide"))
        assert (entry.actor, entry.entity_id, entry.after["verdict"]) == ("ana", str(item.id), "pass")
