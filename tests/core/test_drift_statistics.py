"""The drift statistics agree with SciPy's own implementations on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from core.drift import statistics as ds

RNG = np.random.default_rng(20261122)
SAMPLES = [
    (RNG.normal(0, 1, 300), RNG.normal(0, 1, 500)),
    (RNG.normal(0, 1, 400), RNG.normal(0.3, 1.2, 250)),
    (RNG.exponential(2.0, 2000), RNG.exponential(2.5, 3000)),
    (RNG.integers(0, 5, 600).astype(float), RNG.integers(0, 6, 700).astype(float)),  # many ties
]


@pytest.mark.parametrize(("reference", "current"), SAMPLES)
def test_ks_matches_scipy(reference: np.ndarray, current: np.ndarray) -> None:
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert ds.ks_statistic(reference, current) == pytest.approx(expected.statistic, abs=1e-12)
    result = ds.ks_test(reference, current)
    assert result.score == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)
    assert result.drifted == (expected.pvalue < 0.05)
    assert result.statistic == "ks" and result.threshold == 0.05


@pytest.mark.parametrize(("reference", "current"), SAMPLES)
def test_wasserstein_matches_scipy(reference: np.ndarray, current: np.ndarray) -> None:
    assert ds.wasserstein(reference, current) == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-9)
    result = ds.wasserstein_normalised(reference, current, threshold=0.1)
    assert result.score == pytest.approx(stats.wasserstein_distance(reference, current) / np.std(reference), rel=1e-9)


@pytest.mark.parametrize(("reference", "current"), SAMPLES)
def test_psi_is_symmetric_kl_over_reference_deciles(reference: np.ndarray, current: np.ndarray) -> None:
    edges = ds.psi_bin_edges(reference)
    all_edges = np.concatenate([[-np.inf], edges, [np.inf]])
    ref_share = np.maximum(np.histogram(reference, all_edges)[0] / reference.size, ds.EMPTY_BIN)
    cur_share = np.maximum(np.histogram(current, all_edges)[0] / current.size, ds.EMPTY_BIN)
    # PSI = KL(cur || ref) + KL(ref || cur)
    expected = float(np.sum(rel_entr(cur_share, ref_share)) + np.sum(rel_entr(ref_share, cur_share)))
    assert ds.psi(reference, current).score == pytest.approx(expected, rel=1e-9)


def test_psi_bins_follow_reference_deciles() -> None:
    reference = np.arange(1000, dtype=float)
    assert ds.psi(reference, reference).score == pytest.approx(0.0, abs=1e-12)
    shifted = ds.psi(reference, reference + 500)
    assert shifted.drifted and shifted.score > 1.0


@pytest.mark.parametrize(("reference", "current"), [([70, 30], [65, 35]), ([50, 30, 15, 5], [40, 30, 20, 10]), ([10, 0, 5], [3, 4, 5])])
def test_jensen_shannon_and_chi_square_match_scipy(reference: list[int], current: list[int]) -> None:
    ref, cur = np.array(reference, dtype=float), np.array(current, dtype=float)
    assert ds.jensen_shannon(ref, cur).score == pytest.approx(jensenshannon(ref / ref.sum(), cur / cur.sum()), rel=1e-9)
    shares = np.maximum(ref / ref.sum(), ds.EMPTY_BIN)
    expected = stats.chisquare(cur, shares / shares.sum() * cur.sum())
    assert ds.chi_square(ref, cur).score == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("k", "n"), [(0, 50), (3, 50), (40, 500), (499, 500)])
def test_wilson_lower_matches_scipy(k: int, n: int) -> None:
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low
    assert ds.wilson_lower(k, n) == pytest.approx(expected, abs=1e-9)
    assert ds.rate_above(k, n, tolerated=0.05).drifted == (expected > 0.05)


def test_category_counts_and_test_choice() -> None:
    assert ds.category_counts(["pass", "reject", "pass", "other"], ["pass", "reject"]).tolist() == [2, 1]
    assert ds.choose_numeric_test(999, 100_000) == "ks"
    assert ds.choose_numeric_test(1000, 1000) == "wasserstein"
    assert ds.choose_categorical_test(5000, 10) == "chi2"
    assert ds.choose_categorical_test(5000, 5000) == "jensen_shannon"


def test_same_distribution_is_not_drift_and_a_shift_is() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(100, 10, 800)
    assert not ds.ks_test(reference, rng.normal(100, 10, 500)).drifted
    assert ds.ks_test(reference, rng.normal(80, 10, 500)).drifted
    assert ds.wasserstein_normalised(reference, rng.normal(80, 10, 5000)).drifted


def test_empty_input_is_an_error_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="both sides"):
        ds.ks_test([], [1.0])
    with pytest.raises(ValueError, match="both sides"):
        ds.psi([1.0], [np.nan])
    with pytest.raises(ValueError, match="at least one trial"):
        ds.wilson_lower(0, 0)
