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
from core.vocabulary import AutomationLevel, Role
from db import audit
from db import drift as drift_db
from db.lines import get_line, update_settings
from db.reviews import claim_next_task
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
        held = []
        while True:
            with database.write() as session:
                item = claim_next_task(session=session, reviewer=f"r{i}")
            if item is None:
                return held
            held.append(item.task_id)

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
