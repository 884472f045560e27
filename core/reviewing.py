"""A person judging a phone: permission checked on the server side, then written once.

Pages call these functions; they never write decisions themselves. A verdict is never edited: a
person takes it back (within :data:`db.corrections.UNDO_SECONDS`) or corrects it later with a
reason, and each is a new record linked to the verdict.
"""

from __future__ import annotations

from core.auth import Action, CurrentUser, require
from core.vocabulary import Verdict
from db.corrections import UNDO_SECONDS, DecisionView, correct_decision, recent_decisions
from db.engine import Database
from db.reviews import QueueSummary, ReviewItem, claim_next_task, queue_summary, record_human_decision, release_task, renew_claim, skip_task

__all__ = ["UNDO_SECONDS", "correct", "decide", "give_back", "my_recent_decisions", "next_phone", "skip", "waiting"]


def next_phone(database: Database, user: CurrentUser, *, line_id: int | None = None) -> ReviewItem | None:
    """Claim the oldest phone waiting for a person, for ``user`` alone (the ones they skipped last); None when none waits."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return claim_next_task(session=session, reviewer=user.name, line_id=line_id)


def keep(database: Database, user: CurrentUser, *, task_id: int) -> bool:
    """Renew ``user``'s claim on the phone their page shows; False when it is no longer theirs (the claim ran out and someone took it)."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return renew_claim(session=session, task_id=task_id, reviewer=user.name)


def decide(database: Database, user: CurrentUser, *, task_id: int, verdict: Verdict, seconds_taken: float | None) -> int:
    """Record ``user``'s verdict on a task they hold; returns the human decision id."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return record_human_decision(session=session, task_id=task_id, reviewer=user.name, verdict=verdict, seconds_taken=seconds_taken)


def skip(database: Database, user: CurrentUser, *, task_id: int) -> bool:
    """Give a held phone back: it goes to the back of ``user``'s queue. False when they no longer held it."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return skip_task(session=session, task_id=task_id, reviewer=user.name)


def give_back(database: Database, user: CurrentUser, *, task_id: int) -> bool:
    """Give a held phone back in its age order, not as a skip (``user`` turned to another line)."""
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return release_task(session=session, task_id=task_id, reviewer=user.name)


def correct(database: Database, user: CurrentUser, *, human_decision_id: int, verdict: Verdict, reason: str | None = None) -> int:
    """``user`` takes back (no reason, within the undo window) or corrects (with a reason) their own verdict.

    Returns the correction id. Raises :class:`db.corrections.CorrectionError` when it cannot be recorded.
    """
    require(user, Action.DECIDE_PHONE)
    with database.write() as session:
        return correct_decision(session=session, human_decision_id=human_decision_id, actor=user.name, verdict=verdict, reason=reason)


def my_recent_decisions(database: Database, user: CurrentUser, *, limit: int = 20) -> list[DecisionView]:
    """``user``'s latest verdicts as they stand now, newest first."""
    require(user, Action.DECIDE_PHONE)
    with database.read() as session:
        return recent_decisions(session=session, reviewer=user.name, limit=limit)


def waiting(database: Database, *, line_id: int | None = None) -> QueueSummary:
    """How many phones wait for a person (on a line, or on all) and since when."""
    with database.read() as session:
        return queue_summary(session=session, line_id=line_id)
