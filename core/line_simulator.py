"""A simulated line: the synthetic camera feeds phones at a rate, and a simulated inspector
answers the phones routed to people, so shadow comparisons have data when nobody is at the
station.

The simulated inspector's decisions are stored with ``is_simulated=True`` under the name
:data:`SIMULATED_INSPECTOR`, never mixed up with a real person's. It knows the generator's truth
and errs at configurable rates (misses and false rejects), drawn from the serial so a run is
reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2

from core.camera import Scenario, render_run_phone
from core.ingest import store_image_bytes
from core.routing import share_draw
from core.settings import Settings
from core.vocabulary import Verdict
from db.engine import Database
from db.pipeline import queue_depth, queue_inspection
from db.reviews import ReviewItem, claim_next_task, record_human_decision

SIMULATED_INSPECTOR = "simulated-inspector"


@dataclass(frozen=True)
class SimulatedInspector:
    """A stand-in for the person at the station, for simulated phones only.

    Attributes:
        miss_rate: Share of defective phones it passes.
        false_reject_rate: Share of good phones it rejects.
        name: The user name its decisions are stored under.
    """

    miss_rate: float = 0.02
    false_reject_rate: float = 0.01
    name: str = SIMULATED_INSPECTOR

    def __post_init__(self) -> None:
        if not (0 <= self.miss_rate <= 1 and 0 <= self.false_reject_rate <= 1):
            raise ValueError("miss_rate and false_reject_rate must be in [0, 1]")

    def judge(self, item: ReviewItem) -> Verdict:
        """The verdict on a simulated phone, from its truth and this inspector's error rates."""
        if item.truth is None:
            raise ValueError(f"inspection {item.inspection_id} has no simulated truth; only a person can judge it")
        draw = share_draw(item.serial, f"inspector:{item.inspection_id}")
        if item.truth.get("defective"):
            return Verdict.PASS if draw < self.miss_rate else Verdict.REJECT
        return Verdict.REJECT if draw < self.false_reject_rate else Verdict.PASS

    def answer_open_tasks(self, database: Database, *, line_id: int, limit: int = 50, waited_seconds: float = 0.0) -> int:
        """Judge up to ``limit`` open tasks of simulated phones on a line (those that have waited ``waited_seconds`` for a person); returns how many."""
        answered = 0
        while answered < limit:
            with database.write() as session:
                item = claim_next_task(session=session, reviewer=self.name, line_id=line_id, only_simulated=True, waited_seconds=waited_seconds)
                if item is None:
                    break
                record_human_decision(session=session, task_id=item.task_id, reviewer=self.name, verdict=self.judge(item), is_simulated=True)
            answered += 1
        return answered


@dataclass
class SimulationSummary:
    phones: int = 0
    defective: int = 0
    answered: int = 0
    seconds: float = 0.0
    serials: list[str] = field(default_factory=list)


def queue_simulated_phone(
    database: Database, settings: Settings, *, line_id: int, line_name: str, scenario: Scenario, seed: int, index: int
) -> tuple[str, bool]:
    """Photograph phone ``index`` of a simulated run, store the image and queue it; returns its serial and truth."""
    phone = render_run_phone(scenario, seed, index)
    ok, encoded = cv2.imencode(".jpg", phone.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    relative, digest = store_image_bytes(settings, line_name, encoded.tobytes(), ".jpg")
    # The line is in the serial: two lines simulated with the same seed never share a serial.
    serial = f"SN-L{line_id}-{seed}-{index:06d}"
    truth = {
        "defective": phone.is_defective,
        "defects": [{"class_name": d.kind.value, "box": list(d.box)} for d in phone.defects],
        "colour": phone.colour,
        "drift": scenario.drift_at(index),
    }
    with database.write() as session:
        queue_inspection(
            session=session,
            line_id=line_id,
            serial=serial,
            image_path=relative,
            image_sha256=digest,
            source="simulator",
            scenario=scenario.name,
            truth=truth,
        )
    return serial, phone.is_defective


def simulate_line(
    database: Database,
    settings: Settings,
    *,
    line_id: int,
    line_name: str,
    scenario: Scenario,
    count: int | None,
    rate: float,
    seed: int,
    inspector: SimulatedInspector | None,
    drain_seconds: float = 60.0,
    on_phone: Callable[[int, str, bool], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SimulationSummary:
    """Feed ``count`` phones (or until stopped) at ``rate`` phones per second.

    After the last phone, the inspector (if any) keeps answering until the line's queue and its
    open simulated tasks are empty, for at most ``drain_seconds``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 phones/s, got {rate}")
    summary = SimulationSummary()
    started = time.monotonic()
    index = 0
    while (count is None or index < count) and not should_stop():
        due = started + index / rate
        while time.monotonic() < due and not should_stop():
            if inspector:
                summary.answered += inspector.answer_open_tasks(database, line_id=line_id, limit=5)
            time.sleep(min(0.05, max(0.0, due - time.monotonic())))
        serial, defective = queue_simulated_phone(database, settings, line_id=line_id, line_name=line_name, scenario=scenario, seed=seed, index=index)
        summary.phones += 1
        summary.defective += int(defective)
        summary.serials.append(serial)
        if on_phone:
            on_phone(index, serial, defective)
        index += 1
    if inspector:
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and not should_stop():
            # Depth first: tasks of phones the worker finishes after this read are answered next round.
            with database.read() as session:
                waiting = queue_depth(session=session, line_id=line_id)
            answered = inspector.answer_open_tasks(database, line_id=line_id)
            summary.answered += answered
            if waiting == 0 and answered == 0:
                break
            time.sleep(0.2)
    summary.seconds = time.monotonic() - started
    return summary
