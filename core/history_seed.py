"""Seed a database with a long production history, for page-speed benchmarks.

Writes ``count`` inspections spread over ``days`` with their metrics, predictions, routing,
decisions (model and people) and finished review tasks, plus a few phones still waiting for a
person, in bulk inserts. Images are a handful of real generated phones, reused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import cv2
import numpy as np
from sqlalchemy import insert, select

from core.camera import get_scenario, render_run_phone
from core.ingest import store_image_bytes
from core.settings import Settings
from db.engine import Database
from db.lines import list_lines
from db.models import FinalDecision, HumanDecision, ImageMetrics, Inspection, Prediction, ReviewTask, Routing, utcnow

CHUNK = 20_000
OPEN_TASKS = 50


def seed_history(
    database: Database, settings: Settings, *, count: int, days: float = 30.0, seed: int = 0, progress: Callable[[int], None] | None = None
) -> None:
    """Append ``count`` finished inspections to line-1 (needs ``initialize`` first)."""
    rng = np.random.default_rng(seed)
    with database.read() as session:
        line = list_lines(session=session)[0]
        start_id = (session.scalar(select(Inspection.id).order_by(Inspection.id.desc()).limit(1)) or 0) + 1
    model_id = line.active_model_id
    images = []
    for i in range(12):
        phone = render_run_phone(get_scenario("normal"), 99_000 + seed, i, defect_rate=0.5)
        images.append(store_image_bytes(settings, line.name, cv2.imencode(".jpg", phone.image)[1].tobytes(), ".jpg")[0])
    now = utcnow()
    span = timedelta(days=days).total_seconds()
    # Capture times evenly over the span, oldest first.
    offsets_all = np.linspace(span, 0, count)
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        ids = np.arange(start_id + done, start_id + done + n)
        offsets = offsets_all[done : done + n]
        confidence = rng.beta(0.6, 2.5, n)
        defective = rng.random(n) < 0.2
        confidence = np.where(defective, 1 - confidence * 0.5, confidence * 0.5)
        model_reject = confidence >= line.policy.decision_threshold
        by_model = rng.random(n) < 0.5
        human_agrees = rng.random(n) < 0.97
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("inspections", "metrics", "predictions", "routings", "finals", "tasks", "humans")}
        for k in range(n):
            i = int(ids[k])
            at = now - timedelta(seconds=float(offsets[k]))
            rows["inspections"].append(
                {
                    "id": i,
                    "serial": f"H{i:08d}",
                    "line_id": line.id,
                    "captured_at": at,
                    "image_path": images[i % len(images)],
                    "source": "simulator",
                    "status": "done",
                    "attempts": 1,
                    "processed_at": at,
                }
            )
            rows["metrics"].append(
                {
                    "inspection_id": i,
                    "width": 480,
                    "height": 360,
                    "brightness": float(rng.normal(110, 8)),
                    "contrast": float(rng.normal(45, 4)),
                    "sharpness": float(rng.normal(11, 1.5)),
                    "colourfulness": float(rng.normal(20, 5)),
                    "mean_b": 110.0,
                    "mean_g": 110.0,
                    "mean_r": 110.0,
                }
            )
            verdict = "reject" if model_reject[k] else "pass"
            rows["predictions"].append(
                {
                    "inspection_id": i,
                    "model_version_id": model_id,
                    "is_candidate": False,
                    "boxes": [],
                    "max_confidence": float(confidence[k]),
                    "verdict": verdict,
                    "latency_ms": 12.0,
                    "created_at": at,
                }
            )
            decider = "model" if by_model[k] else "human"
            rows["routings"].append(
                {
                    "inspection_id": i,
                    "level": "partial",
                    "decider": decider,
                    "rule": "partial_confident_pass" if decider == "model" else "partial_uncertain",
                    "reason": "seeded history",
                    "show_model_boxes": True,
                    "audit": False,
                    "model_version_id": model_id,
                    "routed_at": at,
                }
            )
            if decider == "model":
                rows["finals"].append(
                    {
                        "inspection_id": i,
                        "line_id": line.id,
                        "verdict": verdict,
                        "decided_by": "model",
                        "level": "partial",
                        "rule": "partial_confident_pass",
                        "model_version_id": model_id,
                        "decided_at": at,
                    }
                )
            else:
                human = verdict if human_agrees[k] else ("pass" if verdict == "reject" else "reject")
                rows["tasks"].append(
                    {
                        "id": i,
                        "inspection_id": i,
                        "line_id": line.id,
                        "kind": "decide",
                        "show_model_boxes": True,
                        "status": "done",
                        "created_at": at,
                        "done_at": at,
                    }
                )
                rows["humans"].append(
                    {
                        "id": i,
                        "inspection_id": i,
                        "task_id": i,
                        "user_name": "simulated-inspector",
                        "is_simulated": True,
                        "verdict": human,
                        "saw_model_boxes": True,
                        "decided_at": at,
                    }
                )
                rows["finals"].append(
                    {
                        "inspection_id": i,
                        "line_id": line.id,
                        "verdict": human,
                        "decided_by": "human",
                        "level": "partial",
                        "rule": "partial_uncertain",
                        "model_version_id": model_id,
                        "human_decision_id": i,
                        "decided_at": at,
                    }
                )
        with database.write() as session:
            for table, key in (
                (Inspection, "inspections"),
                (ImageMetrics, "metrics"),
                (Prediction, "predictions"),
                (Routing, "routings"),
                (ReviewTask, "tasks"),
                (HumanDecision, "humans"),
                (FinalDecision, "finals"),
            ):
                if rows[key]:
                    session.execute(insert(table), rows[key])
        done += n
        if progress:
            progress(done)
    _leave_phones_waiting(database, line.id, start_id + count, images, now)


def _leave_phones_waiting(database: Database, line_id: int, first_id: int, images: list[str], now: Any) -> None:
    with database.write() as session:
        for k in range(OPEN_TASKS):
            i = first_id + k
            session.execute(
                insert(Inspection),
                [
                    {
                        "id": i,
                        "serial": f"W{i:08d}",
                        "line_id": line_id,
                        "captured_at": now,
                        "image_path": images[k % len(images)],
                        "source": "simulator",
                        "status": "done",
                        "attempts": 1,
                        "processed_at": now,
                    }
                ],
            )
            session.execute(
                insert(Routing),
                [
                    {
                        "inspection_id": i,
                        "level": "partial",
                        "decider": "human",
                        "rule": "partial_uncertain",
                        "reason": "seeded",
                        "show_model_boxes": True,
                        "audit": False,
                        "routed_at": now,
                    }
                ],
            )
            session.execute(
                insert(ReviewTask), [{"inspection_id": i, "line_id": line_id, "kind": "decide", "show_model_boxes": True, "status": "open", "created_at": now}]
            )
