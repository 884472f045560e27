"""The retraining loop end to end, for demonstrations and tests: a simulated engineer labels phones
from the queue (through the same functions the Labelling page calls), the labels are exported as a
data set, a new version is trained on it, evaluated against the active one, and put in shadow.

The simulated engineer knows the generator's truth of simulated phones (``inspections.truth``)
and labels exactly what is there; it never labels a phone that has no simulated truth. Its labels
are stored under :data:`SIMULATED_ENGINEER`, never mixed up with a person's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.auth import CurrentUser
from core.labelling import LabelBox, save_label
from core.vocabulary import Role, Verdict
from db.engine import Database
from db.labels import label_queue
from db.models import Inspection

SIMULATED_ENGINEER = CurrentUser("simulated-engineer", Role.ENGINEER)


@dataclass(frozen=True)
class LabellingSummary:
    labelled: int
    defective: int
    by_reason: dict[str, int]


def label_queue_from_truth(database: Database, *, line_id: int | None, count: int, user: CurrentUser = SIMULATED_ENGINEER) -> LabellingSummary:
    """Label up to ``count`` phones from the top of the label queue with their simulated truth."""
    with database.read() as session:
        queue = label_queue(session=session, labeller=user.name, line_id=line_id, limit=count)
        truths: dict[int, Any] = {i.id: i.truth for i in session.query(Inspection).filter(Inspection.id.in_([q.inspection_id for q in queue])).all()}
    labelled = defective = 0
    by_reason: dict[str, int] = {}
    for item in queue:
        truth = truths.get(item.inspection_id)
        if not truth:
            continue
        boxes = [LabelBox(d["class_name"], *map(float, d["box"])) for d in truth.get("defects", [])]
        verdict = Verdict.REJECT if boxes else Verdict.PASS
        save_label(database, user, inspection_id=item.inspection_id, verdict=verdict, boxes=boxes, reason=item.reason)
        labelled += 1
        defective += bool(boxes)
        by_reason[item.reason] = by_reason.get(item.reason, 0) + 1
    return LabellingSummary(labelled, defective, by_reason)
