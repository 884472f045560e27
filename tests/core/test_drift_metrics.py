"""Judging a window: statistic chosen by sample size, PSI floor and severity, rates, limits, inconclusive."""

from __future__ import annotations

import numpy as np
import pytest

from core.drift import actions
from core.drift.metrics import METRICS, DriftConfig, RateCount, Sample, UnknownMetricError, judge
from core.vocabulary import AutomationLevel

RNG = np.random.default_rng(5)


def _sample(n: int, brightness_mean: float = 100.0, **rates: RateCount) -> Sample:
    values = {name: RNG.normal(50, 5, n) for name in ("contrast", "sharpness", "colourfulness", "mean_b", "mean_g", "mean_r", "max_confidence")}
    values["brightness"] = RNG.normal(brightness_mean, 10, n)
    values["boxes_per_phone"] = RNG.choice(np.array(["0", "1", "2", "3+"]), n, p=[0.6, 0.3, 0.08, 0.02])
    values["defect_rate"] = RNG.choice(np.array(["pass", "reject"]), n, p=[0.7, 0.3])
    return Sample(values=values, rates=dict(rates))


def _by_metric(verdicts):
    return {v.metric: v for v in verdicts}


def test_every_metric_gets_a_verdict_with_its_statistic_and_threshold() -> None:
    verdicts = judge(_sample(500), _sample(400), DriftConfig())
    assert [v.metric for v in verdicts] == [m.name for m in METRICS]
    by = _by_metric(verdicts)
    assert by["brightness"].statistic == "ks" and by["brightness"].threshold == 0.05 and by["brightness"].verdict == "ok"
    assert by["boxes_per_phone"].statistic == "chi2"
    for v in verdicts:
        assert v.verdict in ("ok", "drift", "inconclusive") and v.reason


def test_large_samples_use_distances_not_significance_tests() -> None:
    by = _by_metric(judge(_sample(5000), _sample(5000), DriftConfig()))
    assert by["brightness"].statistic == "wasserstein" and by["brightness"].threshold == 0.1
    assert by["defect_rate"].statistic == "jensen_shannon"


def test_a_large_shift_is_severe_drift_and_a_moderate_one_a_warning() -> None:
    reference = _sample(800)
    severe = _by_metric(judge(reference, _sample(400, brightness_mean=60), DriftConfig()))["brightness"]
    assert severe.verdict == "drift" and severe.severity == "severe" and severe.psi >= 0.2
    assert "PSI" in severe.reason and "ks" in severe.reason
    moderate = _by_metric(judge(reference, _sample(3000, brightness_mean=104), DriftConfig(large_sample=100_000)))["brightness"]
    assert moderate.verdict == "drift" and moderate.severity == "warning" and 0.1 <= moderate.psi < 0.2


def test_significant_but_immaterial_difference_is_not_drift() -> None:
    # 3000 phones make a 1-point shift significant for KS; PSI says it is negligible.
    by = _by_metric(judge(_sample(3000), _sample(3000, brightness_mean=101.5), DriftConfig(large_sample=100_000)))
    assert by["brightness"].score < 0.05 and by["brightness"].verdict == "ok"
    assert "immaterial" in by["brightness"].reason


def test_too_few_phones_is_inconclusive_never_ok() -> None:
    by = _by_metric(judge(_sample(500), _sample(50, brightness_mean=20), DriftConfig(min_phones=200)))
    assert by["brightness"].verdict == "inconclusive" and not by["brightness"].drifted
    assert "too few phones in the window (50 < 200)" in by["brightness"].reason
    empty = _by_metric(judge(Sample(), _sample(500), DriftConfig()))
    assert empty["brightness"].verdict == "inconclusive" and "reference" in empty["brightness"].reason
    assert empty["latency_p95_ms"].verdict == "inconclusive"


def test_rates_are_judged_by_their_lower_bound_against_reference_plus_margin() -> None:
    reference = _sample(400, disagreement_rate=RateCount(4, 400))  # 1 %
    config = DriftConfig()
    ok = _by_metric(judge(reference, _sample(400, disagreement_rate=RateCount(12, 400)), config))["disagreement_rate"]
    assert ok.verdict == "ok" and ok.threshold == pytest.approx(0.04)
    warning = _by_metric(judge(reference, _sample(400, disagreement_rate=RateCount(30, 400)), config))["disagreement_rate"]
    assert warning.verdict == "drift" and warning.severity == "warning"
    severe = _by_metric(judge(reference, _sample(400, disagreement_rate=RateCount(80, 400)), config))["disagreement_rate"]
    assert severe.severity == "severe"
    few = _by_metric(judge(reference, _sample(400, disagreement_rate=RateCount(20, 30)), config))["disagreement_rate"]
    assert few.verdict == "inconclusive" and "human-judged" in few.reason


def test_limits_and_per_metric_threshold_overrides() -> None:
    window = _sample(300)
    window.limits.update(queue_depth=50.0, latency_p95_ms=30.0)
    config = DriftConfig(thresholds={"queue_depth": {"limit_warning": 40.0, "limit_severe": 500.0}})
    by = _by_metric(judge(_sample(300), window, config))
    assert by["queue_depth"].verdict == "drift" and by["queue_depth"].severity == "warning" and by["queue_depth"].threshold == 40.0
    assert by["latency_p95_ms"].verdict == "ok"


def test_config_rejects_unknown_metrics_thresholds_and_bad_values() -> None:
    with pytest.raises(UnknownMetricError, match="no watched metric"):
        DriftConfig(thresholds={"brightnes": {"p_value": 0.01}})
    with pytest.raises(UnknownMetricError, match="has no threshold"):
        DriftConfig(thresholds={"brightness": {"margin_warning": 0.01}})
    with pytest.raises(ValueError, match="at least 1"):
        DriftConfig(window_phones=0)
    assert DriftConfig.from_dict(DriftConfig(step_down_to=AutomationLevel.ASSIST).as_dict()).step_down_to is AutomationLevel.ASSIST


def test_settings_are_changed_by_key_value_assignments() -> None:
    config = actions.parse_setting(DriftConfig(), "window_phones=300")
    config = actions.parse_setting(config, "brightness.psi_severe=0.3")
    config = actions.parse_setting(config, "window_minutes=15")
    assert config.window_phones == 300 and config.threshold("brightness", "psi_severe") == 0.3 and config.window_minutes == 15.0
    assert actions.parse_setting(config, "window_minutes=none").window_minutes is None
    with pytest.raises(ValueError, match="unknown drift setting"):
        actions.parse_setting(config, "windows=3")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        actions.parse_setting(config, "window_phones")


@pytest.mark.parametrize(
    ("assignment", "refusal"),
    [
        ("window_phones=0", "at least 1"),
        ("window_phones=2000000", "at most 1000000"),
        ("min_pairs=-1", "at least 1"),
        ("check_every=1.5", "whole number"),
        ("consecutive=0", "at least 1"),
        ("consecutive=1000", "at most 100"),
        ("window_minutes=-5", "positive"),
        ("reference_defect_rate=1", r"\[0, 1\)"),
        ("step_down_to=full", "below canary"),
        ("brightness.p_value=0", "greater than 0"),  # would never call anything drift
        ("brightness.p_value=0.9", "at most 0.5"),
        ("brightness.psi_warning=nan", "finite"),
        ("brightness.psi_severe=0.05", "must be at least brightness.psi_warning"),
        ("disagreement_rate.margin_warning=-0.01", "at least 0"),
        ("disagreement_rate.margin_severe=1", "less than 1"),
        ("queue_depth.limit_warning=0", "greater than 0"),
        ("queue_depth.limit_severe=10", "must be at least queue_depth.limit_warning"),
    ],
)
def test_drift_settings_out_of_range_are_refused(assignment, refusal) -> None:
    with pytest.raises(ValueError, match=refusal):
        actions.parse_setting(DriftConfig(), assignment)


def test_drift_settings_in_range_are_taken() -> None:
    config = actions.parse_setting(DriftConfig(), "queue_depth.limit_severe=inf")  # a system limit may stay unlimited
    assert config.threshold("queue_depth", "limit_severe") == float("inf")
    assert actions.parse_setting(DriftConfig(), "window_phones=50").window_phones == 50, "a small window is inconclusive, not refused"
