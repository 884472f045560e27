"""The synthetic camera: deterministic, truthful boxes, scenarios that really move their parameter."""

from __future__ import annotations

import numpy as np
import pytest

from core.camera import IMAGE_HEIGHT, IMAGE_WIDTH, SCENARIOS, Conditions, get_scenario, render_phone, render_run_phone
from core.camera.scenarios import UnknownScenarioError
from core.image_metrics import compute_input_metrics
from core.vocabulary import DefectClass


def test_same_seed_same_phone_and_different_seed_different_phone():
    a, b, c = render_phone(7), render_phone(7), render_phone(8)
    assert np.array_equal(a.image, b.image)
    assert a.defects == b.defects
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(40))
def test_truth_boxes_lie_inside_the_image_and_have_area(seed):
    phone = render_phone(seed, Conditions(defect_rate=1.0, defect_kinds={DefectClass.SCRATCH: 1, DefectClass.DENT: 1, DefectClass.CHIP: 1}))
    assert phone.image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3) and phone.image.dtype == np.uint8
    assert phone.defects, "defect_rate=1 must give a defect"
    for defect in phone.defects:
        x1, y1, x2, y2 = defect.box
        assert 0 <= x1 < x2 <= IMAGE_WIDTH - 1
        assert 0 <= y1 < y2 <= IMAGE_HEIGHT - 1
        assert (x2 - x1) >= 4 and (y2 - y1) >= 4


def test_a_scratch_changes_the_pixels_inside_its_box():
    clean = render_phone(3, Conditions(defect_rate=0.0, noise_std=0))
    scratched = render_phone(3, Conditions(defect_rate=1.0, noise_std=0, defect_kinds={DefectClass.SCRATCH: 1}))
    x1, y1, x2, y2 = (int(v) for v in scratched.defects[0].box)
    diff = np.abs(clean.image.astype(int) - scratched.image.astype(int))
    assert diff[y1 : y2 + 1, x1 : x2 + 1].max() > 40


def test_defect_rate_is_respected_over_many_phones():
    defective = sum(render_phone(s, Conditions(defect_rate=0.3)).is_defective for s in range(300))
    assert 60 <= defective <= 120


def _metric(scenario: str, index: int, metric: str, n: int = 12) -> float:
    sc = get_scenario(scenario).with_ramp(ramp=100)
    return float(np.median([getattr(compute_input_metrics(render_run_phone(sc, 5 + k, index).image), metric) for k in range(n)]))


@pytest.mark.parametrize(
    ("scenario", "parameter", "direction"),
    [
        ("dim-lights", "brightness", -1),  # the lights fade
        ("blur", "blur_sigma", +1),  # the camera drifts out of focus
        ("glare", "glare", +1),  # a new lamp
    ],
)
def test_drifting_scenarios_move_their_parameter_along_a_ramp(scenario, parameter, direction):
    sc = get_scenario(scenario).with_ramp(ramp=100)
    seeds = range(30)

    def mean_at(index: int) -> float:
        return float(np.mean([getattr(sc.conditions_at(index, seed), parameter) for seed in seeds]))

    start, middle, end = mean_at(0), mean_at(50), mean_at(99)
    assert direction * (middle - start) > 0, "half-way the drift must already show"
    assert direction * (end - middle) > 0, "the drift keeps growing until the end of the ramp"
    assert mean_at(99) == mean_at(300), "after the ramp the drift holds"


@pytest.mark.parametrize(("scenario", "metric"), [("dim-lights", "brightness"), ("blur", "sharpness")])
def test_the_drift_shows_in_the_image_metrics(scenario, metric):
    start, middle, end = (_metric(scenario, i, metric) for i in (0, 50, 99))
    assert start > middle > end


def test_ramp_and_onset():
    sc = get_scenario("dim-lights").with_ramp(ramp=10, onset=5)
    assert [sc.drift_at(i) for i in (0, 4)] == [0.0, 0.0]
    assert sc.drift_at(5) == pytest.approx(0.1)
    assert sc.drift_at(14) == 1.0 and sc.drift_at(500) == 1.0
    assert get_scenario("blur").with_ramp(ramp=0).drift_at(0) == 1.0, "ramp 0 is a step"


def test_new_colour_paints_unseen_colours_and_new_defect_brings_chips():
    colours = {render_run_phone(get_scenario("new-colour").with_ramp(ramp=1), 9, i).colour for i in range(20)}
    assert colours <= {"coral", "lavender"}
    kinds = {d.kind for i in range(40) for d in render_run_phone(get_scenario("new-defect").with_ramp(ramp=1), 9, i, defect_rate=1.0).defects}
    assert kinds == {DefectClass.CHIP}
    normal = {d.kind for i in range(60) for d in render_run_phone(get_scenario("normal"), 9, i, defect_rate=1.0).defects}
    assert DefectClass.CHIP not in normal, "chips never appear under normal conditions (they are the unseen defect)"


def test_every_named_scenario_renders_and_an_unknown_one_lists_the_alternatives():
    for name in SCENARIOS:
        assert render_run_phone(get_scenario(name), 1, 150).image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    with pytest.raises(UnknownScenarioError, match="dim-lights"):
        get_scenario("foggy")


@pytest.mark.parametrize("bad", [{"defect_rate": 1.5}, {"brightness": 0}, {"blur_sigma": -1}, {"glare": 2}, {"colours": ("plaid",)}])
def test_conditions_refuse_impossible_values(bad):
    with pytest.raises(ValueError):
        Conditions(**bad)
