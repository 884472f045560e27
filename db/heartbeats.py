"""Heartbeats: how the app and ``shadowline status`` know whether a worker (or a folder watcher) is alive.

Workers, ``shadowline watch`` processes and prediction servers (``shadowline serve``) share one
table. A watcher's id starts with :data:`WATCHER_PREFIX`, and its ``model_status`` column holds
what it watches and its problem, if any (a watcher runs no model). Its state is ``running``,
``backing_off`` (the data folder or database cannot take files; it retries) or ``stopped``. A
prediction server's id starts with :data:`SERVER_PREFIX`; its ``model_status`` is its readiness
in words. Neither counts as a worker.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.engine import database_now
from db.models import WorkerHeartbeat

#: A worker silent for longer than this is shown as not alive.
ALIVE_SECONDS = 15.0
#: Heartbeat ids of folder watchers start with this; they never count as workers.
WATCHER_PREFIX = "watch:"
#: Heartbeat ids of prediction servers start with this; they never count as workers.
SERVER_PREFIX = "serve:"


@dataclass(frozen=True)
class WorkerState:
    worker_id: str
    beat_at: datetime
    age_s: float
    alive: bool
    state: str
    processed: int
    model_status: str


def beat(*, session: Session, worker_id: str, processed: int, state: str, model_status: str) -> None:
    """Insert or refresh this worker's heartbeat."""
    row = session.get(WorkerHeartbeat, worker_id)
    now = database_now(session)  # one clock for every machine's heartbeat
    if row is None:
        session.add(
            WorkerHeartbeat(
                worker_id=worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
                beat_at=now,
                processed=processed,
                state=state,
                model_status=model_status,
            )
        )
        return
    row.beat_at = now
    row.processed = processed
    row.state = state
    row.model_status = model_status


def worker_states(*, session: Session, now: datetime | None = None) -> list[WorkerState]:
    """Every worker that ever beat, most recent first (folder watchers and prediction servers are not workers)."""
    return _states(session=session, now=now, workers=True)


def server_states(*, session: Session, now: datetime | None = None) -> list[WorkerState]:
    """Every prediction server that ever beat, most recent first (``processed``: phones answered)."""
    return _states(session=session, now=now, workers=False)


def _states(*, session: Session, now: datetime | None, workers: bool) -> list[WorkerState]:
    now = now or database_now(session)
    query = select(WorkerHeartbeat)
    if workers:
        query = query.where(WorkerHeartbeat.worker_id.not_like(f"{WATCHER_PREFIX}%"), WorkerHeartbeat.worker_id.not_like(f"{SERVER_PREFIX}%"))
    else:
        query = query.where(WorkerHeartbeat.worker_id.like(f"{SERVER_PREFIX}%"))
    rows = session.scalars(query.order_by(WorkerHeartbeat.beat_at.desc())).all()
    return [
        WorkerState(
            worker_id=r.worker_id,
            beat_at=r.beat_at,
            age_s=(now - r.beat_at).total_seconds(),
            alive=r.state == "running" and (now - r.beat_at).total_seconds() <= ALIVE_SECONDS,
            state=r.state,
            processed=r.processed,
            model_status=r.model_status,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class WatcherState:
    """A ``shadowline watch`` process as its heartbeat tells it."""

    watcher_id: str
    line: str
    beat_at: datetime
    age_s: float
    alive: bool
    state: str
    ingested: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "beat_at": self.beat_at.isoformat()}


def watcher_states(*, session: Session, now: datetime | None = None, include_stopped: bool = False) -> list[WatcherState]:
    """Folder watchers that are running or backing off (``include_stopped``: every one that ever beat), most recent first."""
    now = now or database_now(session)
    query = select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id.like(f"{WATCHER_PREFIX}%"))
    if not include_stopped:  # a watcher killed without a word shows as not running for a day
        query = query.where(WorkerHeartbeat.state != "stopped", WorkerHeartbeat.beat_at >= now - timedelta(days=1))
    states = []
    for r in session.scalars(query.order_by(WorkerHeartbeat.beat_at.desc())):
        age = (now - r.beat_at).total_seconds()
        states.append(
            WatcherState(
                watcher_id=r.worker_id,
                line=r.worker_id[len(WATCHER_PREFIX) :].split(":", 1)[0],
                beat_at=r.beat_at,
                age_s=round(age, 1),
                alive=r.state != "stopped" and age <= ALIVE_SECONDS,
                state=r.state,
                ingested=r.processed,
                detail=r.model_status,
            )
        )
    return states
