"""Labels: boxes, IoU, and when two engineers' labels agree."""

from __future__ import annotations

import pytest

from core.labelling import LabelBox, agreement_rows, compare_labels, iou
from core.vocabulary import Verdict


def box(name: str, x1: float, y1: float, x2: float, y2: float) -> LabelBox:
    return LabelBox(name, x1, y1, x2, y2)


def test_iou() -> None:
    assert iou(box("scratch", 0, 0, 10, 10), box("scratch", 0, 0, 10, 10)) == 1.0
    assert iou(box("scratch", 0, 0, 10, 10), box("scratch", 5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(box("scratch", 0, 0, 10, 10), box("scratch", 20, 20, 30, 30)) == 0.0


def test_labels_agree_when_verdicts_and_boxes_match() -> None:
    a = (Verdict.REJECT, [box("scratch", 0, 0, 10, 10), box("dent", 50, 50, 60, 60)])
    b = (Verdict.REJECT, [box("dent", 51, 50, 61, 60), box("scratch", 1, 0, 11, 10)])
    result = compare_labels(a, b)
    assert result.agree and len(result.matched) == 2 and result.describe() == "the two labels agree"


def test_where_two_labels_differ_is_named() -> None:
    a = (Verdict.REJECT, [box("scratch", 0, 0, 10, 10), box("chip", 100, 100, 110, 110)])
    b = (Verdict.REJECT, [box("dent", 0, 0, 10, 10)])
    result = compare_labels(a, b)
    assert not result.agree and result.class_mismatches and result.only_first == [1]
    assert "different classes" in result.describe() and "only in the first" in result.describe()
    assert not compare_labels((Verdict.PASS, []), (Verdict.REJECT, [box("chip", 0, 0, 5, 5)])).verdicts_agree


def test_bad_boxes_are_refused() -> None:
    # Class names are data (a version's card names them): any name is a box; a nameless one is not.
    assert box("missing screw", 0, 0, 1, 1).class_name == "missing screw"
    with pytest.raises(ValueError, match="needs a class name"):
        box(" ", 0, 0, 1, 1)
    with pytest.raises(ValueError, match="x2 > x1"):
        box("scratch", 5, 0, 1, 1)


def test_agreement_rows_say_where_two_labels_meet_and_part() -> None:
    first = [LabelBox("scratch", 0, 0, 10, 10), LabelBox("chip", 50, 50, 60, 60), LabelBox("dent", 100, 100, 120, 120)]
    second = [LabelBox("scratch", 1, 0, 10, 10), LabelBox("dent", 50, 50, 60, 61), LabelBox("chip", 200, 200, 210, 210)]
    rows = agreement_rows(compare_labels((Verdict.REJECT, first), (Verdict.REJECT, second)), first, second)
    assert rows == [
        {"first": "1 scratch", "second": "1 scratch", "iou": 0.9, "where": "same box"},
        {"first": "2 chip", "second": "2 dent", "iou": 0.91, "where": "classes differ"},
        {"first": "3 dent", "second": None, "iou": None, "where": "only in the first label"},
        {"first": None, "second": "3 chip", "iou": None, "where": "only in the second label"},
    ]
