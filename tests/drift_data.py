"""Test data for drift: inspected phones whose metrics are drawn from the shipped model's reference."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from db.lines import get_line
from db.models import HumanDecision, ImageMetrics, Inspection, Prediction, Routing, utcnow

#: When the next phones written with the default time may start (see add_phones).
_next_at = None


def add_phones(
    database,
    reference,
    n: int,
    *,
    darken: float = 1.0,
    seed: int = 0,
    at=None,
    human_disagrees: float = 0.0,
    status: str = "done",
    line_name: str = "line-1",
    images: list[str] | None = None,
    simulated: bool = False,
) -> None:
    """Write ``n`` inspected phones whose metrics are drawn from the reference (times ``darken`` for brightness).

    Each is judged by a person (``pat``), or by the simulated inspector with ``simulated``.
    """
    rng = np.random.default_rng(seed)
    values = reference.sample.values
    picks = rng.integers(0, values["brightness"].size, n)
    if at is None:
        # Phones of one call are 1 ms apart from now; a call soon after another (a fast machine)
        # must not interleave with it, or a window of "the latest phones" mixes the two batches.
        global _next_at
        at = max(utcnow(), _next_at) if _next_at is not None else utcnow()
        _next_at = at + timedelta(milliseconds=n + 1)
    with database.write() as session:
        line = get_line(session=session, name=line_name)
        for k, i in enumerate(picks):
            image_path = images[k % len(images)] if images else "x.jpg"
            inspection = Inspection(serial=f"T-{seed}-{k}", line_id=line.id, image_path=image_path, source="simulator", status=status)
            inspection.processed_at = at + timedelta(milliseconds=k)
            session.add(inspection)
            session.flush()
            metrics = {name: float(values[name][i]) for name in ("brightness", "contrast", "sharpness", "colourfulness", "mean_b", "mean_g", "mean_r")}
            for name in ("brightness", "mean_b", "mean_g", "mean_r"):
                metrics[name] *= darken
            session.add(ImageMetrics(inspection_id=inspection.id, width=640, height=480, **metrics))
            verdict = str(values["defect_rate"][i])
            boxes = [{}] * int(values["boxes_per_phone"][i].rstrip("+"))
            session.add(
                Prediction(
                    inspection_id=inspection.id,
                    model_version_id=line.active_model_id,
                    boxes=boxes,
                    max_confidence=float(values["max_confidence"][i]),
                    verdict=verdict,
                    latency_ms=15.0,
                )
            )
            # Marked as the random audit sample, so that the phones count as evidence at every rung.
            session.add(Routing(inspection_id=inspection.id, level="shadow", decider="human", rule="shadow", reason="test", audit=True))
            human = ("pass" if verdict == "reject" else "reject") if rng.random() < human_disagrees else verdict
            person = "simulated-inspector" if simulated else "pat"
            session.add(HumanDecision(inspection_id=inspection.id, user_name=person, is_simulated=simulated, verdict=human, saw_model_boxes=False))
