"""The drift statistics: small pure functions, each returning its score, threshold and verdict.

Which test judges a metric depends on the sample sizes, as in Evidently's defaults: with few
phones a significance test (two-sample Kolmogorov-Smirnov for numbers, chi-square for
categories, p < 0.05); with many phones on both sides a distance (Wasserstein distance
normalised by the reference's standard deviation, or Jensen-Shannon distance, >= 0.1), because a
significance test on large samples calls every negligible difference "drift". The population
stability index (PSI) measures how much a distribution moved: >= 0.1 is a moderate shift,
>= 0.2 a significant one. Every function here is checked against SciPy's own implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

#: Below this many values on either side a significance test judges; at or above it, a distance.
LARGE_SAMPLE = 1000
#: Probability floor for empty bins in PSI and Jensen-Shannon (avoids log(0) and 1/0).
EMPTY_BIN = 1e-4
#: Bins of the PSI: deciles of the reference.
PSI_BINS = 10


@dataclass(frozen=True)
class StatResult:
    """One statistic's answer.

    Attributes:
        statistic: ``ks`` | ``chi2`` (scores are p-values: drift when below the threshold),
            ``wasserstein`` | ``jensen_shannon`` | ``psi`` (distances: drift at or above it),
            ``rate`` (the Wilson lower bound of a rate: drift when above the threshold).
        score: The value that was compared with the threshold.
        threshold: The threshold used.
        drifted: Whether ``score`` crossed ``threshold``.
    """

    statistic: str
    score: float
    threshold: float
    drifted: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic D: the largest gap between the two empirical CDFs."""
    ref, cur = np.sort(reference), np.sort(current)
    points = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, points, side="right") / ref.size
    cdf_cur = np.searchsorted(cur, points, side="right") / cur.size
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


def ks_test(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, *, alpha: float = 0.05) -> StatResult:
    """Two-sample KS test; the score is the p-value (Smirnov's asymptotic distribution, as SciPy's ``method='asymp'``)."""
    ref, cur = _clean(reference), _clean(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("the KS test needs values on both sides")
    d = ks_statistic(ref, cur)
    m, n = sorted((float(ref.size), float(cur.size)), reverse=True)
    effective_n = round(m * n / (m + n))
    p_value = float(np.clip(stats.kstwo.sf(d, effective_n), 0.0, 1.0))
    return StatResult("ks", p_value, alpha, p_value < alpha)


def wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """The first Wasserstein distance between two samples: the area between their empirical CDFs."""
    ref, cur = np.sort(reference), np.sort(current)
    points = np.sort(np.concatenate([ref, cur]))
    widths = np.diff(points)
    cdf_ref = np.searchsorted(ref, points[:-1], side="right") / ref.size
    cdf_cur = np.searchsorted(cur, points[:-1], side="right") / cur.size
    return float(np.sum(np.abs(cdf_ref - cdf_cur) * widths))


def wasserstein_normalised(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, *, threshold: float = 0.1) -> StatResult:
    """Wasserstein distance divided by the reference's standard deviation (in "reference sigmas")."""
    ref, cur = _clean(reference), _clean(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("the Wasserstein distance needs values on both sides")
    score = wasserstein(ref, cur) / max(float(np.std(ref)), 1e-3)
    return StatResult("wasserstein", score, threshold, score >= threshold)


def psi_bin_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, duplicates removed (the outer bins are open)."""
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return np.maximum(counts / max(values.size, 1), EMPTY_BIN)


def psi_from_shares(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """PSI = sum((current - reference) * ln(current / reference)) over bins (shares floored at :data:`EMPTY_BIN`)."""
    ref = np.maximum(np.asarray(reference_shares, dtype=np.float64), EMPTY_BIN)
    cur = np.maximum(np.asarray(current_shares, dtype=np.float64), EMPTY_BIN)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, *, threshold: float = 0.1, bins: int = PSI_BINS) -> StatResult:
    """Population stability index over the reference's quantile bins."""
    ref, cur = _clean(reference), _clean(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs values on both sides")
    edges = psi_bin_edges(ref, bins)
    score = psi_from_shares(_shares(ref, edges), _shares(cur, edges))
    return StatResult("psi", score, threshold, score >= threshold)


def category_counts(values: Sequence[object] | np.ndarray, categories: Sequence[object]) -> np.ndarray:
    """Counts of each of ``categories`` in ``values`` (values outside them are not counted)."""
    array = np.asarray(values)
    return np.array([int(np.sum(array == category)) for category in categories], dtype=np.float64)


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray, *, threshold: float = 0.1) -> StatResult:
    """Jensen-Shannon distance (natural log, as SciPy's ``jensenshannon``) between two category distributions."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("Jensen-Shannon needs counts on both sides")
    p, q = ref / ref.sum(), cur / cur.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    score = math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))
    return StatResult("jensen_shannon", score, threshold, score >= threshold)


def chi_square(reference_counts: np.ndarray, current_counts: np.ndarray, *, alpha: float = 0.05) -> StatResult:
    """Chi-square goodness of fit of the current counts to the reference's shares; the score is the p-value.

    Categories the reference never saw get the :data:`EMPTY_BIN` share, so a brand-new category
    counts as a large difference instead of a division by zero.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("chi-square needs counts on both sides")
    shares = np.maximum(ref / ref.sum(), EMPTY_BIN)
    expected = shares / shares.sum() * cur.sum()
    chi2 = float(np.sum((cur - expected) ** 2 / expected))
    p_value = float(stats.chi2.sf(chi2, max(1, ref.size - 1)))
    return StatResult("chi2", p_value, alpha, p_value < alpha)


def wilson_lower(successes: int, trials: int, z: float = 1.959963984540054) -> float:
    """Lower end of the Wilson score interval of a proportion (95 % by default)."""
    if trials <= 0:
        raise ValueError("a rate needs at least one trial")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - spread) / denominator)


def rate_above(successes: int, trials: int, *, tolerated: float) -> StatResult:
    """Whether a rate is credibly above ``tolerated``: its 95 % Wilson lower bound exceeds it."""
    score = wilson_lower(successes, trials)
    return StatResult("rate", score, tolerated, score > tolerated)


def choose_numeric_test(n_reference: int, n_current: int, *, large_sample: int = LARGE_SAMPLE) -> str:
    """``ks`` while either side is small, ``wasserstein`` once both have ``large_sample`` values."""
    return "wasserstein" if min(n_reference, n_current) >= large_sample else "ks"


def choose_categorical_test(n_reference: int, n_current: int, *, large_sample: int = LARGE_SAMPLE) -> str:
    """``chi2`` while either side is small, ``jensen_shannon`` once both have ``large_sample`` values."""
    return "jensen_shannon" if min(n_reference, n_current) >= large_sample else "chi2"
