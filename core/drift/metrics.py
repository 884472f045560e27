"""What drift monitoring watches, how each metric is judged, and the verdicts it gives.

The metric table is data: each watched metric has a kind (input, output, human, software), a
family that decides the statistic, and default thresholds that a line may override. Judging a
window is a pure function of the reference, the window and the configuration, so the same code
serves the worker's periodic check, ``shadowline drift`` and the Drift page.

Families and their verdicts:

- ``numeric`` (brightness, sharpness, max confidence, ...): KS p < 0.05 while either sample is
  small, normalised Wasserstein >= 0.1 once both have 1000 values; the shift must also be
  material, PSI >= 0.1, or it is reported as significant but not drift. PSI >= 0.2 makes it severe.
- ``categorical`` (boxes per phone, verdicts): chi-square p < 0.05 or Jensen-Shannon >= 0.1 by
  the same rule, with the same PSI floor and severity.
- ``rate`` (disagreement, overrides, failures): drift when the 95 % Wilson lower bound of the
  window's rate exceeds the reference rate plus a margin; severe above a larger margin.
- ``limit`` (latency, queue depth): drift when the window's value exceeds a fixed limit.

Too few phones gives ``inconclusive``, never ``ok``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from core import validation
from core.drift import statistics as ds
from core.vocabulary import AutomationLevel


class MetricKind(StrEnum):
    INPUT = "input"  # data drift: what the camera sees
    OUTPUT = "output"  # what the model says
    HUMAN = "human"  # concept drift: people disagree with the model
    SOFTWARE = "software"  # the system itself


class Family(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    RATE = "rate"
    LIMIT = "limit"


class Verdict(StrEnum):
    OK = "ok"
    DRIFT = "drift"
    INCONCLUSIVE = "inconclusive"


class Severity(StrEnum):
    WARNING = "warning"
    SEVERE = "severe"


@dataclass(frozen=True)
class MetricSpec:
    """One watched metric.

    Attributes:
        name: Key in references, windows, JSON and the database.
        kind: What it watches.
        family: How it is judged.
        label: For people.
        unit: For axes.
        categories: Category values of a categorical metric, in display order.
        thresholds: Default thresholds (keys depend on the family, see :data:`DEFAULT_THRESHOLDS`).
    """

    name: str
    kind: MetricKind
    family: Family
    label: str
    unit: str = ""
    categories: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def steps_down(self) -> bool:
        """Whether a severe alarm on this metric moves the line down (the system's own health does not)."""
        return self.kind is not MetricKind.SOFTWARE


#: Defaults per family: p-value for the tests, distance for large samples, PSI floors, rate margins.
DEFAULT_THRESHOLDS: dict[Family, dict[str, float]] = {
    Family.NUMERIC: {"p_value": 0.05, "distance": 0.1, "psi_warning": 0.1, "psi_severe": 0.2},
    Family.CATEGORICAL: {"p_value": 0.05, "distance": 0.1, "psi_warning": 0.1, "psi_severe": 0.2},
    Family.RATE: {"margin_warning": 0.03, "margin_severe": 0.06},
    Family.LIMIT: {"limit_warning": float("inf"), "limit_severe": float("inf")},
}

BOX_CATEGORIES = ("0", "1", "2", "3+")
VERDICT_CATEGORIES = ("pass", "reject")


def _spec(name: str, kind: MetricKind, family: Family, label: str, unit: str = "", categories: tuple[str, ...] = (), **thresholds: float) -> MetricSpec:
    return MetricSpec(name, kind, family, label, unit, categories, {**DEFAULT_THRESHOLDS[family], **thresholds})


METRICS: tuple[MetricSpec, ...] = (
    _spec("brightness", MetricKind.INPUT, Family.NUMERIC, "Brightness", "grey level 0-255"),
    _spec("contrast", MetricKind.INPUT, Family.NUMERIC, "Contrast", "grey-level std"),
    _spec("sharpness", MetricKind.INPUT, Family.NUMERIC, "Sharpness", "Laplacian variance"),
    _spec("colourfulness", MetricKind.INPUT, Family.NUMERIC, "Colourfulness", "Hasler-Süsstrunk"),
    _spec("mean_b", MetricKind.INPUT, Family.NUMERIC, "Mean blue", "0-255"),
    _spec("mean_g", MetricKind.INPUT, Family.NUMERIC, "Mean green", "0-255"),
    _spec("mean_r", MetricKind.INPUT, Family.NUMERIC, "Mean red", "0-255"),
    _spec("inadmissible_rate", MetricKind.INPUT, Family.RATE, "Phones unlike the model's reference (admission check)", "share"),
    _spec("max_confidence", MetricKind.OUTPUT, Family.NUMERIC, "Model's highest confidence", "0-1"),
    _spec("boxes_per_phone", MetricKind.OUTPUT, Family.CATEGORICAL, "Boxes per phone", "boxes", BOX_CATEGORIES),
    _spec("defect_rate", MetricKind.OUTPUT, Family.CATEGORICAL, "Model's verdicts (defect rate)", "share", VERDICT_CATEGORIES),
    _spec("disagreement_rate", MetricKind.HUMAN, Family.RATE, "Human-model disagreement", "share"),
    _spec("override_rate", MetricKind.HUMAN, Family.RATE, "Overrides of the model's decisions (audits)", "share"),
    _spec("failure_rate", MetricKind.SOFTWARE, Family.RATE, "Failed inspections", "share", margin_warning=0.02, margin_severe=0.10),
    _spec("latency_p95_ms", MetricKind.SOFTWARE, Family.LIMIT, "Inference latency, 95th percentile", "ms", limit_warning=250.0, limit_severe=1000.0),
    _spec("queue_depth", MetricKind.SOFTWARE, Family.LIMIT, "Phones waiting for the worker", "phones", limit_warning=2000.0, limit_severe=20000.0),
)
METRIC_BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}
#: The per-image input metrics (columns of ``image_metrics``).
INPUT_METRICS = tuple(s.name for s in METRICS if s.kind is MetricKind.INPUT and s.family is Family.NUMERIC)


class UnknownMetricError(KeyError):
    """A threshold override names a metric or threshold that does not exist."""


#: Upper bounds of the drift settings (a window larger than this would not be read in time).
MAX_WINDOW_PHONES = 1_000_000
MAX_CONSECUTIVE = 100


def _check_thresholds(spec: MetricSpec, values: dict[str, float]) -> None:
    """The meaningful range of each threshold of ``spec``; a value that switches a metric off is refused."""
    name = spec.name
    if spec.family in (Family.NUMERIC, Family.CATEGORICAL):
        validation.number(f"{name}.p_value", values["p_value"], minimum=0, maximum=0.5, exclusive_minimum=True)
        validation.number(f"{name}.distance", values["distance"], minimum=0, exclusive_minimum=True)
        validation.number(f"{name}.psi_warning", values["psi_warning"], minimum=0, exclusive_minimum=True)
        validation.number(f"{name}.psi_severe", values["psi_severe"], minimum=0, exclusive_minimum=True)
        low, high = "psi_warning", "psi_severe"
    elif spec.family is Family.RATE:
        validation.number(f"{name}.margin_warning", values["margin_warning"], minimum=0, exclusive_maximum=True, maximum=1)
        validation.number(f"{name}.margin_severe", values["margin_severe"], minimum=0, exclusive_maximum=True, maximum=1)
        low, high = "margin_warning", "margin_severe"
    else:  # limits: infinity is the default "no limit" of a system metric
        for key in ("limit_warning", "limit_severe"):
            value = values[key]
            if not (value > 0):
                raise validation.RangeError(f"{name}.{key} must be greater than 0, got {value:g}")
        low, high = "limit_warning", "limit_severe"
    if values[high] < values[low]:
        raise validation.RangeError(f"{name}.{high} ({values[high]:g}) must be at least {name}.{low} ({values[low]:g})")


@dataclass(frozen=True)
class DriftConfig:
    """A line's drift settings (defaults a plant can start with; every value editable).

    Attributes:
        window_phones: The rolling window: the line's last this many inspected phones.
        window_minutes: If set, the window also ends this many minutes back (whichever is smaller).
        min_phones: Fewer phones than this in a window (or reference) is inconclusive.
        min_pairs: Fewer human-judged phones than this makes a human or failure rate inconclusive.
        check_every: The worker checks a line each time this many new phones were inspected.
        consecutive: Checks in a row that must say drift before an alarm is raised.
        step_down_to: Where a severe alarm moves a line that is above it.
        reference_defect_rate: The share of defective phones this line normally sees. A training
            reference is enriched with defects; it is resampled to this share before comparing.
        large_sample: Both samples at least this big: distances instead of significance tests.
        thresholds: Per-metric overrides, ``{metric: {threshold: value}}``.
    """

    window_phones: int = 500
    window_minutes: float | None = None
    min_phones: int = 200
    min_pairs: int = 50
    check_every: int = 100
    consecutive: int = 2
    step_down_to: AutomationLevel = AutomationLevel.SHADOW
    reference_defect_rate: float = 0.3
    large_sample: int = ds.LARGE_SAMPLE
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.window_phones < 1 or self.min_phones < 1 or self.min_pairs < 1 or self.check_every < 1 or self.consecutive < 1:
            raise ValueError("window_phones, min_phones, min_pairs, check_every and consecutive must be at least 1")
        for name in ("window_phones", "min_phones", "min_pairs", "check_every", "large_sample"):
            validation.integer(name, getattr(self, name), minimum=1, maximum=MAX_WINDOW_PHONES)
        validation.integer("consecutive", self.consecutive, minimum=1, maximum=MAX_CONSECUTIVE)
        if self.window_minutes is not None and self.window_minutes <= 0:
            raise ValueError("window_minutes must be positive when set")
        if self.window_minutes is not None:
            validation.number("window_minutes", self.window_minutes, minimum=0, exclusive_minimum=True)
        if not 0.0 <= self.reference_defect_rate < 1.0:
            raise ValueError("reference_defect_rate must be in [0, 1)")
        if AutomationLevel(self.step_down_to).rank >= AutomationLevel.CANARY.rank:
            raise validation.RangeError(
                f"step_down_to must be below canary, got {AutomationLevel(self.step_down_to).value}: a severe alarm would never step a line down"
            )
        for metric, values in self.thresholds.items():
            spec = METRIC_BY_NAME.get(metric)
            if spec is None:
                raise UnknownMetricError(f"no watched metric {metric!r}; metrics: {', '.join(METRIC_BY_NAME)}")
            unknown = set(values) - set(spec.thresholds)
            if unknown:
                raise UnknownMetricError(f"{metric} has no threshold {', '.join(sorted(unknown))}; it has {', '.join(spec.thresholds)}")
        for spec in METRICS:
            _check_thresholds(spec, {key: self.threshold(spec.name, key) for key in spec.thresholds})

    def threshold(self, metric: str, key: str) -> float:
        return float(self.thresholds.get(metric, {}).get(key, METRIC_BY_NAME[metric].thresholds[key]))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["step_down_to"] = self.step_down_to.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DriftConfig:
        data = dict(data or {})
        if "step_down_to" in data:
            data["step_down_to"] = AutomationLevel(data["step_down_to"])
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown drift settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def with_changes(self, **changes: Any) -> DriftConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class RateCount:
    """A rate's raw counts: ``events`` out of ``trials``."""

    events: int
    trials: int

    @property
    def rate(self) -> float | None:
        return self.events / self.trials if self.trials else None


@dataclass
class Sample:
    """Values of the watched metrics over a set of phones (a reference or a window).

    ``values`` holds numeric and categorical metrics (one value per phone that has it),
    ``rates`` the counted metrics, ``limits`` single readings such as queue depth.
    """

    values: dict[str, np.ndarray] = field(default_factory=dict)
    rates: dict[str, RateCount] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)

    def size(self, metric: str) -> int:
        if metric in self.values:
            return int(self.values[metric].size)
        if metric in self.rates:
            return self.rates[metric].trials
        return 1 if metric in self.limits else 0


@dataclass(frozen=True)
class MetricVerdict:
    """The judgement of one metric over one window; what ``shadowline drift --json`` prints."""

    metric: str
    kind: str
    statistic: str
    score: float | None
    threshold: float | None
    drifted: bool
    n_reference: int
    n_current: int
    verdict: str
    severity: str | None
    psi: float | None
    reason: str
    reference_value: float | None = None
    current_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: np.ndarray | None) -> float | None:
    return float(np.median(values)) if values is not None and values.size else None


def _share_of_last(values: np.ndarray | None, category: str) -> float | None:
    return float(np.mean(values == category)) if values is not None and values.size else None


def _judge_distribution(spec: MetricSpec, reference: np.ndarray, current: np.ndarray, config: DriftConfig) -> MetricVerdict:
    name = spec.name
    n_ref, n_cur = int(reference.size), int(current.size)
    if spec.family is Family.NUMERIC:
        summary_ref, summary_cur = _median(reference), _median(current)
    else:
        summary_ref, summary_cur = _share_of_last(reference, spec.categories[-1]), _share_of_last(current, spec.categories[-1])
    base: dict[str, Any] = {
        "metric": name,
        "kind": spec.kind.value,
        "n_reference": n_ref,
        "n_current": n_cur,
        "reference_value": summary_ref,
        "current_value": summary_cur,
    }
    if min(n_ref, n_cur) < config.min_phones:
        statistic = ds.choose_numeric_test(n_ref, n_cur) if spec.family is Family.NUMERIC else ds.choose_categorical_test(n_ref, n_cur)
        short = "reference" if n_ref < config.min_phones else "window"
        return MetricVerdict(
            **base,
            statistic=statistic,
            score=None,
            threshold=None,
            drifted=False,
            verdict=Verdict.INCONCLUSIVE,
            severity=None,
            psi=None,
            reason=f"too few phones in the {short} ({min(n_ref, n_cur)} < {config.min_phones})",
        )
    p_value, distance = config.threshold(name, "p_value"), config.threshold(name, "distance")
    psi_warning, psi_severe = config.threshold(name, "psi_warning"), config.threshold(name, "psi_severe")
    if spec.family is Family.NUMERIC:
        if ds.choose_numeric_test(n_ref, n_cur, large_sample=config.large_sample) == "ks":
            primary = ds.ks_test(reference, current, alpha=p_value)
        else:
            primary = ds.wasserstein_normalised(reference, current, threshold=distance)
        shift = ds.psi(reference, current).score
    else:
        ref_counts = ds.category_counts(reference, spec.categories)
        cur_counts = ds.category_counts(current, spec.categories)
        if ds.choose_categorical_test(n_ref, n_cur, large_sample=config.large_sample) == "chi2":
            primary = ds.chi_square(ref_counts, cur_counts, alpha=p_value)
        else:
            primary = ds.jensen_shannon(ref_counts, cur_counts, threshold=distance)
        shift = ds.psi_from_shares(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())
    comparison = "<" if primary.statistic in ("ks", "chi2") else ">="
    test_text = f"{primary.statistic} {primary.score:.3g} {comparison if primary.drifted else 'not ' + comparison} {primary.threshold:g}"
    if not primary.drifted:
        verdict, severity, reason = Verdict.OK, None, test_text
    elif shift < psi_warning:
        verdict, severity, reason = Verdict.OK, None, f"{test_text}, but PSI {shift:.3f} < {psi_warning:g}: a significant but immaterial difference"
    else:
        severity = Severity.SEVERE if shift >= psi_severe else Severity.WARNING
        bound = f">= {psi_severe:g}" if severity is Severity.SEVERE else f"in [{psi_warning:g}, {psi_severe:g})"
        verdict, reason = Verdict.DRIFT, f"{test_text} and PSI {shift:.3f} {bound}"
    return MetricVerdict(
        **base,
        statistic=primary.statistic,
        score=primary.score,
        threshold=primary.threshold,
        drifted=verdict is Verdict.DRIFT,
        verdict=verdict,
        severity=severity,
        psi=shift,
        reason=reason,
    )


def _judge_rate(spec: MetricSpec, reference_rate: float, counts: RateCount | None, n_reference: int, config: DriftConfig) -> MetricVerdict:
    name = spec.name
    counts = counts or RateCount(0, 0)
    warning = reference_rate + config.threshold(name, "margin_warning")
    severe = reference_rate + config.threshold(name, "margin_severe")
    base: dict[str, Any] = {
        "metric": name,
        "kind": spec.kind.value,
        "statistic": "rate",
        "n_reference": n_reference,
        "n_current": counts.trials,
        "psi": None,
        "reference_value": reference_rate,
        "current_value": counts.rate,
    }
    if counts.trials < config.min_pairs:
        what = "human-judged phones" if spec.kind is MetricKind.HUMAN else "phones"
        return MetricVerdict(
            **base,
            score=None,
            threshold=warning,
            drifted=False,
            verdict=Verdict.INCONCLUSIVE,
            severity=None,
            reason=f"too few {what} in the window ({counts.trials} < {config.min_pairs})",
        )
    lower = ds.wilson_lower(counts.events, counts.trials)
    observed = f"{counts.events}/{counts.trials} = {counts.rate:.1%}, 95% lower bound {lower:.1%}"
    if lower > severe:
        verdict, severity, reason = Verdict.DRIFT, Severity.SEVERE, f"{observed} > {severe:.1%} (reference {reference_rate:.1%} + severe margin)"
    elif lower > warning:
        verdict, severity, reason = Verdict.DRIFT, Severity.WARNING, f"{observed} > {warning:.1%} (reference {reference_rate:.1%} + margin)"
    else:
        verdict, severity, reason = Verdict.OK, None, f"{observed} <= {warning:.1%} (reference {reference_rate:.1%} + margin)"
    return MetricVerdict(**base, score=lower, threshold=warning, drifted=verdict is Verdict.DRIFT, verdict=verdict, severity=severity, reason=reason)


def _judge_limit(spec: MetricSpec, value: float | None, n_current: int, config: DriftConfig) -> MetricVerdict:
    warning, severe = config.threshold(spec.name, "limit_warning"), config.threshold(spec.name, "limit_severe")
    base: dict[str, Any] = {
        "metric": spec.name,
        "kind": spec.kind.value,
        "statistic": "limit",
        "n_reference": 0,
        "n_current": n_current,
        "psi": None,
        "reference_value": None,
    }
    if value is None:
        base.update(score=None, threshold=warning, drifted=False, severity=None, current_value=None)
        return MetricVerdict(**base, verdict=Verdict.INCONCLUSIVE, reason="no readings in the window")
    if value > severe:
        verdict, severity, reason = Verdict.DRIFT, Severity.SEVERE, f"{value:.4g} {spec.unit} > {severe:g}"
    elif value > warning:
        verdict, severity, reason = Verdict.DRIFT, Severity.WARNING, f"{value:.4g} {spec.unit} > {warning:g}"
    else:
        verdict, severity, reason = Verdict.OK, None, f"{value:.4g} {spec.unit} <= {warning:g}"
    base.update(score=value, threshold=warning, current_value=value)
    return MetricVerdict(**base, drifted=verdict is Verdict.DRIFT, verdict=verdict, severity=severity, reason=reason)


def judge(reference: Sample, window: Sample, config: DriftConfig, metrics: tuple[MetricSpec, ...] = METRICS) -> list[MetricVerdict]:
    """Judge every metric of ``window`` against ``reference``."""
    verdicts = []
    empty = np.array([], dtype=np.float64)
    for spec in metrics:
        if spec.family in (Family.NUMERIC, Family.CATEGORICAL):
            verdicts.append(_judge_distribution(spec, reference.values.get(spec.name, empty), window.values.get(spec.name, empty), config))
        elif spec.family is Family.RATE:
            ref_counts = reference.rates.get(spec.name)
            ref_rate = ref_counts.rate if ref_counts and ref_counts.rate is not None else 0.0
            verdicts.append(_judge_rate(spec, ref_rate, window.rates.get(spec.name), ref_counts.trials if ref_counts else 0, config))
        else:
            verdicts.append(_judge_limit(spec, window.limits.get(spec.name), window.size(spec.name), config))
    return verdicts
