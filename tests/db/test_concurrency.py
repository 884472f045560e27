"""Read-decide-write units with many at once: each holds on PostgreSQL (READ COMMITTED) as under SQLite's single writer.

Threads start together behind a barrier, each with its own connections, as separate processes would.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from core.auth import CurrentUser
from core.drift.monitor import DriftMonitor
from core.ladder import actions
from core.ladder.gates import LADDER
from core.vocabulary import AutomationLevel, Role, Verdict
from db import audit
from db import drift as drift_db
from db.lines import get_line, update_settings
from db.reviews import claim_next_task, record_human_decision
from tests.db.test_reviews import _routed
from tests.drift_data import add_phones

pytestmark = pytest.mark.both_backends

THREADS = 8


def together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``n`` threads that start at once; returns each result or the exception it raised."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return work(i)
        except Exception as error:
            return error

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_many_reviewers_never_get_the_same_phone(database) -> None:
    _routed(database, 60)

    def reviewer(i: int) -> list[int]:
        # A reviewer claims a phone, judges it, claims the next (a claim they still hold is theirs
        # again on the next call: that is a reload, see test_reviews).
        held = []
        while True:
            with database.write() as session:
                item = claim_next_task(session=session, reviewer=f"r{i}")
            if item is None:
                return held
            held.append(item.task_id)
            with database.write() as session:
                record_human_decision(session=session, task_id=item.task_id, reviewer=f"r{i}", verdict=Verdict.PASS)

    results = together(THREADS, reviewer)
    assert not [r for r in results if isinstance(r, Exception)], results
    claims = Counter(task for held in results for task in held)
    assert len(claims) == 60 and set(claims.values()) == {1}, {t: n for t, n in claims.items() if n > 1}


def test_overlapping_drift_checks_raise_an_alarm_once_and_step_down_once(database, drift_reference) -> None:
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        update_settings(session=session, line_id=line.id, actor="test", level=AutomationLevel.CANARY.value, canary_share=0.05)
    add_phones(database, drift_reference, 500, seed=4, darken=0.4)
    DriftMonitor(database).check(line.id)  # one drifting check: the next ones raise the alarm

    results = together(THREADS, lambda _i: DriftMonitor(database).check(line.id))
    assert not [r for r in results if isinstance(r, Exception)], results
    with database.read() as session:
        open_alarms = Counter(a.metric for a in drift_db.current_alarms(session=session, line_id=line.id))
        raised, _ = audit.search(session=session, action_prefix="drift.alarm_raised")
        moves = [a for a in audit.search(session=session, action_prefix="line.")[0]["action"] if "level" in a]
    assert open_alarms and set(open_alarms.values()) == {1}, open_alarms
    assert len(raised) == len(open_alarms)
    assert len(moves) == 2  # the test's move to canary, and one step down to shadow


def test_two_managers_approving_one_request_move_the_line_once(database, drift_reference) -> None:
    admin, requester = CurrentUser("root", Role.ADMIN), CurrentUser("erin", Role.ENGINEER)
    actions.set_gates(database, admin, assignments=[f"{r.key}.min_pairs=60" for r in LADDER if r.key != "human_only"], note="test")
    with database.write() as session:
        update_settings(session=session, line_id=get_line(session=session, name="line-1").id, actor="test", level=AutomationLevel.PARTIAL.value)
    add_phones(database, drift_reference, 400, seed=2)
    canary = next(r for r in LADDER if r.key == "canary")
    request_id = actions.move(database, requester, line_name="line-1", to=canary).request_id
    assert request_id is not None

    results = together(THREADS, lambda i: actions.approve(database, CurrentUser(f"mgr{i}", Role.MANAGER), request_id=request_id, note="go"))
    applied = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, actions.LadderError)]
    assert len(applied) == 1 and len(refused) == THREADS - 1, results
    with database.read() as session:
        approvals, _ = audit.search(session=session, action_prefix="request.approved")
        moves = [a for a in audit.search(session=session, action_prefix="line.")[0]["action"] if "level" in a]
    assert len(approvals) == 1
    assert len(moves) == 2  # the test's move to partial and the approved move to canary


def test_wrong_passwords_at_once_are_all_counted(database) -> None:
    from db.models import User
    from db.users import add_user, sign_in

    with database.write() as session:
        add_user(session=session, name="ana", role=Role.SUPERVISOR, password="right-password", actor="test")

    def attempt(_i: int) -> str:
        with database.write() as session:
            return sign_in(session=session, name="ana", password="wrong").message

    results = together(THREADS, attempt)
    counted = [m for m in results if isinstance(m, str) and m.startswith("Wrong")]
    with database.read() as session:
        failures = session.query(User).filter(User.name == "ana").one().failed_logins
    assert counted and failures == len(counted), (failures, results)


def test_admins_demoting_each_other_at_once_leave_an_admin(database) -> None:
    from db.models import User
    from db.users import UserError, add_user, change_user

    with database.write() as session:
        session.query(User).filter(User.role == Role.ADMIN.value).update({User.active: False})  # only the two below are admins
        for name in ("ada", "bob"):
            add_user(session=session, name=name, role=Role.ADMIN, password="admin-password", actor="test")

    def demote(i: int) -> list[str]:
        me, other = ("ada", "bob") if i % 2 else ("bob", "ada")
        with database.write() as session:
            return change_user(session=session, name=other, actor=me, role=Role.MANAGER)

    results = together(THREADS, demote)
    with database.read() as session:
        admins = [u.name for u in session.query(User).filter(User.role == Role.ADMIN.value, User.active.is_(True))]
    assert len(admins) == 1, (admins, results)
    assert all(isinstance(r, list) or (isinstance(r, UserError) and "last active admin" in str(r)) for r in results), results


@pytest.fixture
def green(database, shipped_model_dir, tmp_path) -> str:
    """A second registered version (the shipped folder under another version name)."""
    import json
    import shutil

    from db.registry import register_model_version

    folder = tmp_path / "scratch-v2-green"
    shutil.copytree(shipped_model_dir, folder, ignore=shutil.ignore_patterns("reference-samples", "model.pt"))
    card = json.loads((folder / "card.json").read_text())
    card["version"] = "scratch-v2-green"
    card["weights"].pop("model.pt", None)
    (folder / "card.json").write_text(json.dumps(card))
    with database.write() as session:
        register_model_version(session=session, model_dir=folder, actor="test")
    return "scratch-v2-green"


def _models(database) -> tuple[str | None, str | None, str | None]:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    return line.active_model_version, line.candidate_model_version, line.previous_model_version


def _model_changes(database) -> int:
    """Audit entries that changed the line's active model."""
    with database.read() as session:
        return sum("active_model_id" in action for action in audit.search(session=session, action_prefix="line.", limit=1000)[0]["action"])


def test_engineers_switching_and_rolling_back_at_once_change_the_line_once(database, green) -> None:
    from core.deployment import DeploymentError, rollback, set_candidate, switch

    admins = [CurrentUser(f"eng{i}", Role.ENGINEER) for i in range(THREADS)]  # engineers switch below canary
    set_candidate(database, admins[0], line_name="line-1", version=green)

    # Each asks for the switch they saw on the page (to the candidate): the second must not swap the versions back.
    results = together(THREADS, lambda i: switch(database, admins[i], line_name="line-1", to_version=green))
    assert len([r for r in results if not isinstance(r, Exception) and r.applied]) == 1, results
    assert all(isinstance(r, DeploymentError) for r in results if isinstance(r, Exception)), results
    assert _models(database) == (green, "scratch-v2", "scratch-v2") and _model_changes(database) == 1

    results = together(THREADS, lambda i: rollback(database, admins[i], line_name="line-1", from_version=green))
    assert len([r for r in results if isinstance(r, str)]) == 1 and all(isinstance(r, DeploymentError) for r in results if not isinstance(r, str)), results
    assert _models(database) == ("scratch-v2", green, None) and _model_changes(database) == 2

    # Switches and rollbacks raced, each as its page showed the line (green active): whatever the order,
    # every change applied is audited once and the line stays consistent.
    switch(database, admins[0], line_name="line-1", to_version=green)

    def either(i: int) -> object:
        if i % 2:
            return rollback(database, admins[i], line_name="line-1", from_version=green)
        return switch(database, admins[i], line_name="line-1", to_version="scratch-v2")

    results = together(THREADS, either)
    applied = [r for r in results if not isinstance(r, Exception)]
    assert applied and all(isinstance(r, DeploymentError) for r in results if isinstance(r, Exception)), results
    assert len(applied) == 1, "both ask to leave green: once one has, the other's view is stale and refused"
    assert _model_changes(database) == 4
    active, candidate, previous = _models(database)
    assert active == "scratch-v2" and candidate == green and previous in (None, green)


def test_engineers_labelling_and_adjudicating_one_phone_at_once_leave_one_truth(database, drift_reference) -> None:
    from core.labelling import LabelBox, adjudicate, save_label
    from core.vocabulary import Verdict
    from db.labels import awaiting_adjudication, labels_of, truths
    from db.models import Inspection

    add_phones(database, drift_reference, 2, seed=5)
    with database.read() as session:
        phone = session.query(Inspection.id).order_by(Inspection.id).first()[0]
    engineers = [CurrentUser(f"eng{i}", Role.ENGINEER) for i in range(THREADS // 2)]
    chip = [LabelBox("chip", 10, 10, 40, 30)]

    def label(i: int) -> int:  # each engineer saves twice at once (two tabs), half of them rejecting
        verdict, boxes = (Verdict.REJECT, chip) if (i // 2) % 2 else (Verdict.PASS, [])
        return save_label(database, engineers[i // 2], inspection_id=phone, verdict=verdict, boxes=boxes)

    results = together(THREADS, label)
    assert not [r for r in results if isinstance(r, Exception)], results
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=phone)
        assert phone in awaiting_adjudication(session=session)
    assert sorted(label.labeller for label in labels) == sorted(e.name for e in engineers), "one label per engineer, the second save replacing the first"

    results = together(THREADS, lambda i: adjudicate(database, engineers[i % len(engineers)], label_id=labels[i % len(labels)].id, note="mine"))
    assert not [r for r in results if isinstance(r, Exception)], results
    with database.read() as session:
        after = labels_of(session=session, inspection_id=phone)
        truth = truths(session=session, inspection_ids=[phone])
        adjudications, _ = audit.search(session=session, action_prefix="label.adjudicate")
        assert phone not in awaiting_adjudication(session=session)
    chosen = [label for label in after if label.adjudicated]
    assert len(after) == len(engineers) and len(chosen) == 1, after
    assert truth[phone].id == chosen[0].id
    assert len(adjudications) == THREADS  # every decision is in the log; the last one made is the truth


def test_training_jobs_started_at_once_take_at_most_the_slots_there_are(database, settings) -> None:
    from dataclasses import replace
    from pathlib import Path

    from core.training_jobs import reserve_slot
    from db.models import TrainingJob

    two_slots = replace(settings, max_training_jobs=2)
    engineer = CurrentUser("erin", Role.ENGINEER)
    results = together(
        THREADS,
        lambda i: reserve_slot(database, two_slots, engineer, version=f"v{i}", dataset=Path("ds"), epochs=1, init_from=None, candidate_for=None),
    )
    started = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, ValueError) and "already running" in str(r)]
    assert len(started) == 2 and len(refused) == THREADS - 2, results
    with database.read() as session:
        assert session.query(TrainingJob).count() == 2
