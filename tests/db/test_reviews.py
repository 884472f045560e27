"""Review tasks: a skip moves on, and a verdict is corrected by a new linked record that every reader uses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from core.camera import get_scenario
from core.line_simulator import simulate_line
from core.routing import PhoneFacts, PolicySettings, route
from core.vocabulary import AutomationLevel, Verdict
from core.worker import Worker
from db.comparison import paired_decisions
from db.corrections import UNDO_SECONDS, CorrectionError, correct_decision, recent_decisions
from db.labels import label_queue
from db.lines import get_line
from db.live import latest_phones
from db.models import AuditEntry, DecisionCorrection, FinalDecision, HumanDecision, Prediction, utcnow
from db.pipeline import claim_batch, queue_inspection, record_result
from db.reviews import claim_next_task, queue_summary, record_human_decision, release_task, skip_task
from db.status import line_statuses

pytestmark = pytest.mark.both_backends


def _routed(database, n: int, level: AutomationLevel = AutomationLevel.SHADOW) -> int:
    """``n`` phones routed to a person (no predictions: the queue is what matters), oldest first."""
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        for i in range(n):
            queue_inspection(session=session, line_id=line.id, serial=f"S{i}", image_path=f"images/x{i}.jpg", image_sha256=None, source="ingest")
    with database.write() as session:
        items = claim_batch(session=session, worker_id="w", limit=n, lease_seconds=30)
    decision = route(level, PhoneFacts("S", max_confidence=0.5), PolicySettings())
    for item in items:
        with database.write() as session:
            record_result(
                session=session,
                inspection_id=item.id,
                line_id=line.id,
                worker_id="w",
                level=level,
                routing=decision,
                metrics=None,
                predictions=[],
                routed_model_id=None,
            )
    return line.id


def _claim(database, reviewer: str):
    with database.write() as session:
        return claim_next_task(session=session, reviewer=reviewer)


def _skip(database, item, reviewer: str, now=None) -> bool:
    with database.write() as session:
        return skip_task(session=session, task_id=item.task_id, reviewer=reviewer, now=now)


def _decide(database, reviewer: str, verdict: Verdict) -> tuple[int, int]:
    item = _claim(database, reviewer)
    with database.write() as session:
        return item.inspection_id, record_human_decision(session=session, task_id=item.task_id, reviewer=reviewer, verdict=verdict)


def _correct(database, decision_id: int, actor: str, verdict: Verdict, reason: str | None = None, now=None) -> int:
    with database.write() as session:
        return correct_decision(session=session, human_decision_id=decision_id, actor=actor, verdict=verdict, reason=reason, now=now)


# --- skip ---------------------------------------------------------------------------------------


def test_a_skip_moves_on_and_the_skipped_phone_comes_back_last(database):
    _routed(database, 3)
    first = _claim(database, "ana")
    assert first.serial == "S0" and first.skipped_at is None
    assert _skip(database, first, "ana")
    second = _claim(database, "ana")
    assert second.serial == "S1", "a skip hands over another phone, not the same one"
    assert _skip(database, second, "ana")
    third = _claim(database, "ana")
    assert third.serial == "S2"
    assert _skip(database, third, "ana")
    # Only skipped phones are left: the one skipped longest ago comes back first, and says so.
    again = _claim(database, "ana")
    assert again.serial == "S0" and again.skipped_at is not None


def test_a_phone_skipped_by_one_supervisor_keeps_its_place_for_another(database):
    _routed(database, 2)
    first = _claim(database, "ana")
    _skip(database, first, "ana")
    assert _claim(database, "bob").serial == "S0", "bob did not skip it: the oldest phone is still first for him"
    assert _claim(database, "ana").serial == "S1"


def test_a_skip_of_a_phone_not_held_changes_nothing(database):
    _routed(database, 1)
    item = _claim(database, "ana")
    assert not _skip(database, item, "bob")
    assert _claim(database, "bob") is None, "ana still holds it"


def test_giving_back_for_another_line_is_not_a_skip(database):
    _routed(database, 2)
    item = _claim(database, "ana")
    with database.write() as session:
        assert release_task(session=session, task_id=item.task_id, reviewer="ana")
    assert _claim(database, "ana").serial == "S0"


def test_queue_summary_counts_waiting_and_held_phones_and_the_oldest(database):
    line_id = _routed(database, 3)
    _claim(database, "ana")
    _decide(database, "bob", Verdict.PASS)
    with database.read() as session:
        summary = queue_summary(session=session, line_id=line_id)
        other_line = queue_summary(session=session, line_id=line_id + 99)
    assert summary.waiting == 2  # one held by ana, one open; bob's is done
    assert summary.oldest_at is not None and summary.oldest_at <= utcnow()
    assert (other_line.waiting, other_line.oldest_at) == (0, None)


# --- corrections --------------------------------------------------------------------------------


def test_an_undo_inside_the_window_is_a_new_linked_row_and_the_final_decision_is_untouched(database):
    _routed(database, 1)
    inspection_id, decision_id = _decide(database, "ana", Verdict.REJECT)
    correction_id = _correct(database, decision_id, "ana", Verdict.PASS)
    with database.read() as session:
        correction = session.get(DecisionCorrection, correction_id)
        final = session.get(FinalDecision, inspection_id)
        decision = session.get(HumanDecision, decision_id)
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "phone.undo"))
    assert (correction.verdict, correction.previous_verdict, correction.is_undo, correction.supersedes_id) == ("pass", "reject", True, None)
    assert correction.human_decision_id == decision_id and correction.inspection_id == inspection_id
    assert (final.verdict, decision.verdict) == ("reject", "reject"), "the first verdict stays on record"
    assert entry.before == {"verdict": "reject"} and entry.after["verdict"] == "pass" and entry.after["final_decision_follows"]


def test_after_the_window_a_correction_needs_a_reason_and_chains_to_the_last_one(database):
    _routed(database, 1)
    _, decision_id = _decide(database, "ana", Verdict.REJECT)
    first = _correct(database, decision_id, "ana", Verdict.PASS)
    later = utcnow() + timedelta(seconds=UNDO_SECONDS + 30)
    with pytest.raises(CorrectionError, match="needs a reason"):
        _correct(database, decision_id, "ana", Verdict.REJECT, now=later)
    second = _correct(database, decision_id, "ana", Verdict.REJECT, reason="looked again under the lamp: a scratch", now=later)
    with database.read() as session:
        row = session.get(DecisionCorrection, second)
        mine = recent_decisions(session=session, reviewer="ana")
    assert (row.supersedes_id, row.is_undo, row.previous_verdict, row.verdict) == (first, False, "pass", "reject")
    assert [(d.verdict, d.given, d.corrections) for d in mine] == [(Verdict.REJECT, Verdict.REJECT, 2)]


@pytest.mark.parametrize(
    ("actor", "verdict", "match"),
    [
        ("bob", Verdict.PASS, "only ana may correct"),  # someone else's verdict
        ("ana", Verdict.REJECT, "already"),  # nothing to change
    ],
)
def test_corrections_that_are_refused(database, actor, verdict, match):
    _routed(database, 1)
    _, decision_id = _decide(database, "ana", Verdict.REJECT)
    with pytest.raises(CorrectionError, match=match):
        _correct(database, decision_id, actor, verdict)
    with pytest.raises(CorrectionError, match="no decision"):
        _correct(database, decision_id + 100, "ana", Verdict.PASS)


@pytest.mark.parametrize("table", ["final_decisions", "human_decisions", "decision_corrections"])
def test_decisions_and_corrections_are_insert_only(database, table):
    _routed(database, 1)
    _, decision_id = _decide(database, "ana", Verdict.REJECT)
    _correct(database, decision_id, "ana", Verdict.PASS)
    for statement in (f"UPDATE {table} SET verdict = 'reject'", f"DELETE FROM {table}"):
        with pytest.raises(IntegrityError, match="insert-only"), database.write() as session:
            session.execute(text(statement))


def test_every_reader_of_a_verdict_uses_the_latest_correction(database, settings, shipped_model_dir):
    with database.write() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=1, rate=1000, seed=31, inspector=None)
    Worker(database, settings).run(until_empty=True)
    with database.read() as session:
        model_verdict = Verdict(session.scalar(select(Prediction.verdict)))
    other = Verdict.PASS if model_verdict is Verdict.REJECT else Verdict.REJECT
    inspection_id, decision_id = _decide(database, "ana", model_verdict)  # agrees with the model...
    _correct(database, decision_id, "ana", other)  # ...until corrected
    with database.read() as session:
        pairs = paired_decisions(session=session, use_labels=False)
        status = next(s for s in line_statuses(session=session) if s.line == "line-1")
        live = next(p for p in latest_phones(session=session, line_id=line.id) if p.inspection_id == inspection_id)
        queue = label_queue(session=session, labeller="erin", reasons=("disagreement",))
    assert pairs.iloc[0]["human_verdict"] == other.value, "comparison and the gates read the corrected verdict"
    assert status.verdicts[other.value] == 1 and status.verdicts[model_verdict.value] == 0, "status counts the corrected final verdict"
    assert live.verdict == other.value, "the live line shows the corrected verdict"
    assert [(q.inspection_id, q.human_verdict) for q in queue] == [(inspection_id, other.value)], "the person now disagrees with the model"


def test_a_claim_can_leave_the_newest_phones_to_people(database):
    """The demo's simulated inspector judges only phones that waited `waited_seconds` for a person."""
    _routed(database, 2)
    now = utcnow()
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="simulated", waited_seconds=30, now=now) is None, "nothing has waited 30 s yet"
    with database.write() as session:
        item = claim_next_task(session=session, reviewer="simulated", waited_seconds=30, now=now + timedelta(seconds=31))
    assert item is not None and item.serial == "S0"
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="sam", now=now).serial == "S1", "a person takes any waiting phone"


def test_a_reviewer_who_reloads_gets_the_phone_they_hold_with_its_claim_renewed(database):
    from db.reviews import renew_claim

    _routed(database, 2)
    now = utcnow()
    with database.write() as session:
        first = claim_next_task(session=session, reviewer="sue", now=now)
    with database.write() as session:
        again = claim_next_task(session=session, reviewer="sue", now=now + timedelta(seconds=100))
        assert again.task_id == first.task_id, "the phone sue holds, not the next one"
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="ann", now=now + timedelta(seconds=150)).serial == "S1", "renewed: not anyone else's yet"
    with database.write() as session:
        assert renew_claim(session=session, task_id=first.task_id, reviewer="sue", now=now + timedelta(seconds=200))
        assert not renew_claim(session=session, task_id=first.task_id, reviewer="ann", now=now + timedelta(seconds=200)), "only the holder renews"
    with database.write() as session:
        assert not renew_claim(session=session, task_id=first.task_id, reviewer="sue", now=now + timedelta(seconds=1000)), "an expired claim is not renewed"
        assert claim_next_task(session=session, reviewer="bob", now=now + timedelta(seconds=1000)).task_id == first.task_id


def test_a_disabled_supervisors_phone_goes_back_to_the_queue_at_once(database):
    from core.vocabulary import Role
    from db.users import add_user, change_user

    _routed(database, 2)
    with database.write() as session:
        add_user(session=session, name="sue", role=Role.SUPERVISOR, password="sue-password", actor="test")
        add_user(session=session, name="boss", role=Role.ADMIN, password="boss-password", actor="test")
    with database.write() as session:
        held = claim_next_task(session=session, reviewer="sue")
    with database.write() as session:
        change_user(session=session, name="sue", actor="boss", active=False)
    with database.write() as session:
        assert claim_next_task(session=session, reviewer="ann").task_id == held.task_id, "not stranded until sue's claim runs out"
