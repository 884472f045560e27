"""Labels: boxes with classes and a gold verdict, how two labels of one phone agree, and saving them.

Two engineers may label the same phone blind. Their labels agree when the verdicts match and
every box of one matches a box of the other with the same class at IoU >= 0.5; otherwise the page
shows where they differ and one label is adjudicated as the truth. A phone's *truth* is its
adjudicated label, else the labels when they agree (or the only one), else none yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.auth import Action, CurrentUser, require
from core.vocabulary import Verdict

IOU_MATCH = 0.5


class LabelMismatchError(ValueError):
    """A label whose boxes were drawn on another phone than the one it would be saved for."""


@dataclass(frozen=True)
class LabelBox:
    """One labelled defect, in pixels of the stored image; its class by name (a model version's card names the classes)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if not isinstance(self.class_name, str) or not self.class_name.strip():
            raise ValueError(f"a box needs a class name, got {self.class_name!r}")
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise ValueError(f"a box needs x2 > x1 and y2 > y1, got ({self.x1}, {self.y1}, {self.x2}, {self.y2})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelBox:
        return cls(str(data["class_name"]), float(data["x1"]), float(data["y1"]), float(data["x2"]), float(data["y2"]))


def iou(a: LabelBox, b: LabelBox) -> float:
    """Intersection over union of two boxes."""
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class LabelAgreement:
    """How two labels of one phone compare."""

    verdicts_agree: bool
    matched: list[tuple[int, int, float]]  # (box of first, box of second, IoU) with the same class
    only_first: list[int]
    only_second: list[int]
    class_mismatches: list[tuple[int, int, float]]  # overlapping boxes with different classes

    @property
    def agree(self) -> bool:
        return self.verdicts_agree and not self.only_first and not self.only_second and not self.class_mismatches

    def describe(self) -> str:
        if self.agree:
            return "the two labels agree"
        parts = []
        if not self.verdicts_agree:
            parts.append("the verdicts differ")
        if self.class_mismatches:
            parts.append(f"{len(self.class_mismatches)} box(es) with different classes")
        if self.only_first:
            parts.append(f"{len(self.only_first)} box(es) only in the first label")
        if self.only_second:
            parts.append(f"{len(self.only_second)} box(es) only in the second label")
        return "; ".join(parts)


def compare_labels(first: tuple[Verdict, list[LabelBox]], second: tuple[Verdict, list[LabelBox]], threshold: float = IOU_MATCH) -> LabelAgreement:
    """Greedy matching by IoU (best pairs first), as detection metrics do."""
    (verdict_a, boxes_a), (verdict_b, boxes_b) = first, second
    candidates = sorted(((iou(a, b), i, j) for i, a in enumerate(boxes_a) for j, b in enumerate(boxes_b)), reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    matched: list[tuple[int, int, float]] = []
    mismatched: list[tuple[int, int, float]] = []
    for overlap, i, j in candidates:
        if overlap < threshold or i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        (matched if boxes_a[i].class_name == boxes_b[j].class_name else mismatched).append((i, j, overlap))
    return LabelAgreement(
        verdicts_agree=verdict_a == verdict_b,
        matched=matched,
        only_first=[i for i in range(len(boxes_a)) if i not in used_a],
        only_second=[j for j in range(len(boxes_b)) if j not in used_b],
        class_mismatches=mismatched,
    )


def agreement_rows(agreement: LabelAgreement, first: list[LabelBox], second: list[LabelBox]) -> list[dict[str, Any]]:
    """Where two labels' boxes meet and where they part, one row per box pair or lone box (boxes numbered from 1)."""
    rows: list[dict[str, Any]] = []
    for pairs, where in ((agreement.matched, "same box"), (agreement.class_mismatches, "classes differ")):
        for i, j, overlap in pairs:
            rows.append({"first": f"{i + 1} {first[i].class_name}", "second": f"{j + 1} {second[j].class_name}", "iou": round(overlap, 2), "where": where})
    rows += [{"first": f"{i + 1} {first[i].class_name}", "second": None, "iou": None, "where": "only in the first label"} for i in agreement.only_first]
    rows += [{"first": None, "second": f"{j + 1} {second[j].class_name}", "iou": None, "where": "only in the second label"} for j in agreement.only_second]
    return rows


def save_label(
    database: Any,
    user: CurrentUser,
    *,
    inspection_id: int,
    verdict: Verdict,
    boxes: list[LabelBox],
    reason: str | None = None,
    seconds_taken: float | None = None,
    drawn_on: int | None = None,
    classes: list[str] | None = None,
) -> int:
    """Save ``user``'s label of a phone (replacing their earlier one); returns the label id.

    Args:
        drawn_on: The phone the boxes were drawn on, as the editor reports it. A page always passes
            it: a label is saved only for the phone the engineer saw.
        classes: The classes the line's model versions know (:func:`db.registry.line_classes`); a box
            of another class is refused.

    Raises:
        LabelMismatchError: ``drawn_on`` is another phone than ``inspection_id``; nothing is saved.
    """
    require(user, Action.LABEL_PHONE)
    if drawn_on is not None and drawn_on != inspection_id:
        raise LabelMismatchError(f"the boxes were drawn on phone {drawn_on}, not on phone {inspection_id}: nothing saved. Open the phone again and redraw.")
    if classes is not None:
        unknown = sorted({b.class_name for b in boxes} - set(classes))
        if unknown:
            raise ValueError(f"unknown defect class {', '.join(unknown)}; this line's classes: {', '.join(classes)}")
    if verdict is Verdict.PASS and boxes:
        raise ValueError("a phone with defect boxes cannot pass: delete the boxes or reject it")
    if verdict is Verdict.REJECT and not boxes:
        raise ValueError("a rejected phone needs at least one box showing the defect")
    from db.labels import upsert_label

    with database.write() as session:
        return upsert_label(
            session=session, inspection_id=inspection_id, labeller=user.name, verdict=verdict, boxes=boxes, reason=reason, seconds_taken=seconds_taken
        )


def adjudicate(database: Any, user: CurrentUser, *, label_id: int, note: str | None = None) -> None:
    """Mark one of a phone's labels as its truth (where two engineers disagreed)."""
    require(user, Action.LABEL_PHONE)
    from db.labels import mark_adjudicated

    with database.write() as session:
        mark_adjudicated(session=session, label_id=label_id, actor=user.name, note=note)
