"""Worker heartbeats: how the app and ``shadowline status`` know whether a worker is alive."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import WorkerHeartbeat, utcnow

#: A worker silent for longer than this is shown as not alive.
ALIVE_SECONDS = 15.0


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
    now = utcnow()
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
    """Every worker that ever beat, most recent first."""
    now = now or utcnow()
    rows = session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.beat_at.desc())).all()
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
