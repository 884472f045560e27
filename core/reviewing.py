"""A person judging a phone: permission checked on the server side, then written once.

Pages call these functions; they never write decisions themselves.
"""

from __future__ import annotations

from core.auth import Action, CurrentUser, require
from core.vocabulary import Verdict
from db.engine import Database
from db.reviews import ReviewItem, claim_next_task, record_human_decision, release_task


def next_phone(database: Database, user: CurrentUser, *, line_id: int | None = None) -> ReviewItem | None:
    """Claim the oldest phone waiting for a person, for ``user`` alone; None when none waits."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return claim_next_task(session=session, reviewer=user.name, line_id=line_id)


def decide(database: Database, user: CurrentUser, *, task_id: int, verdict: Verdict, seconds_taken: float | None) -> int:
    """Record ``user``'s verdict on a task they hold; returns the human decision id."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return record_human_decision(session=session, task_id=task_id, reviewer=user.name, verdict=verdict, seconds_taken=seconds_taken)


def skip(database: Database, user: CurrentUser, *, task_id: int) -> None:
    """Give a held phone back to the queue."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        release_task(session=session, task_id=task_id, reviewer=user.name)
