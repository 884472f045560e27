"""Pure maths: NMS, IoU, average precision, Wilson intervals, input metrics."""

from __future__ import annotations

import numpy as np
import pytest

from core.camera import Conditions, render_phone
from core.detector.detections import Detections
from core.detector.onnx_backend import box_iou, letterbox, non_max_suppression
from core.evaluation import average_precision, match_predictions, wilson_interval
from core.image_metrics import compute_input_metrics


def test_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert box_iou(boxes[0], boxes) == pytest.approx([1.0, 1 / 3, 0.0])


def test_nms_is_class_aware_and_keeps_the_best():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.3], np.float32)
    classes = np.array([0, 0, 1, 0])
    kept = non_max_suppression(boxes, scores, classes, iou_threshold=0.5)
    assert kept.tolist() == [1, 2, 3]  # box 0 overlaps the better box 1 of its class; box 2 is another class


def test_letterbox_keeps_aspect_and_pads():
    blob, scale, (left, top) = letterbox(np.zeros((360, 480, 3), np.uint8), (320, 320))
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    assert scale == pytest.approx(320 / 480) and left == 0 and top == 40
    blob, scale, (left, top) = letterbox(np.zeros((360, 480, 3), np.uint8), (256, 320))
    assert blob.shape == (1, 3, 256, 320) and (left, top) == (0, 8)
    blob, scale, (left, top) = letterbox(np.zeros((900, 100, 3), np.uint8), (256, 320))  # a tall image still fits
    assert scale == pytest.approx(256 / 900) and top == 0 and left > 100


def test_average_precision_perfect_and_half():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert average_precision(np.array([0.9]), np.array([True]), 2) == pytest.approx(51 / 101, abs=1e-6)
    assert average_precision(np.array([]), np.array([], bool), 3) == 0.0


def test_matching_needs_the_right_class_and_overlap():
    truth = np.array([[10, 10, 50, 20]], np.float32)
    pred = Detections(np.array([[11, 10, 50, 21], [10, 10, 50, 20]], np.float32), np.array([0.9, 0.8], np.float32), np.array([1, 0]))
    assert match_predictions(pred, truth, np.array([0])).tolist() == [False, True]


def test_wilson_interval():
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and 0.03 < high < 0.04
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high


def test_input_metrics_follow_the_conditions():
    bright = compute_input_metrics(render_phone(1, Conditions(brightness=1.0)).image)
    dim = compute_input_metrics(render_phone(1, Conditions(brightness=0.4)).image)
    blurred = compute_input_metrics(render_phone(1, Conditions(blur_sigma=3)).image)
    assert dim.brightness < 0.5 * bright.brightness
    assert blurred.sharpness < 0.5 * bright.sharpness
    assert (bright.width, bright.height) == (480, 360)


def test_the_threshold_sits_in_the_middle_of_the_gap_between_good_and_defective_phones() -> None:
    from core.evaluation import choose_threshold

    # Good phones score up to 0.25, defective ones from 0.55: every threshold in (0.25, 0.55] costs 0.
    scores = np.array([0.05, 0.1, 0.25, 0.55, 0.7, 0.9])
    defective = np.array([False, False, False, True, True, True])
    threshold, cost = choose_threshold(scores, defective)
    assert cost == 0 and threshold == pytest.approx(0.41)  # the middle of 0.26 .. 0.55


def test_an_escape_costs_more_than_a_false_reject() -> None:
    from core.evaluation import ESCAPE_COST, choose_threshold

    # One faint defect (0.3) among good phones scoring up to 0.35: catching it costs one false reject, missing it ESCAPE_COST.
    scores = np.array([0.1, 0.35, 0.3, 0.8])
    defective = np.array([False, False, True, True])
    threshold, cost = choose_threshold(scores, defective)
    assert ESCAPE_COST > 1 and cost == 1 and threshold <= 0.30
