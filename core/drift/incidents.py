"""Incidents: the alarms of one cause on one line, named by the most telling of them.

A dim lamp moves brightness, the colour means, sharpness, then the model's confidence and boxes:
nine alarms, one cause, one thing for a person to act on. Alarms raised on a line while it has an
open incident join it; the incident is named by its headline alarm, chosen here: an input first
(the cause is what the camera sees), then people against the model, then the model's outputs;
within a kind, severe before warning, then the order of the metric table (brightness before the
colour channels it moves with). System health (latency, queue, failures) is a scope of its own:
it is for the people who run the software, and never the same cause as drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.drift.metrics import METRIC_BY_NAME, METRICS, Family, MetricKind

#: The order in which kinds of metric name an incident (the most telling first).
KIND_ORDER: tuple[MetricKind, ...] = (MetricKind.INPUT, MetricKind.HUMAN, MetricKind.OUTPUT, MetricKind.SOFTWARE)
_METRIC_ORDER = {spec.name: i for i, spec in enumerate(METRICS)}


class Scope(StrEnum):
    """Which incidents an alarm may join, and who is told: drift (everyone) or the system's health (engineers, admins)."""

    DRIFT = "drift"
    SYSTEM = "system"


def scope_of(kind: str) -> Scope:
    return Scope.SYSTEM if kind == MetricKind.SOFTWARE.value else Scope.DRIFT


#: What an incident is, by the kind of its headline alarm.
KIND_TITLE: dict[str, str] = {
    MetricKind.INPUT.value: "input drift",
    MetricKind.OUTPUT.value: "the model's outputs drift",
    MetricKind.HUMAN.value: "people disagree with the model",
    MetricKind.SOFTWARE.value: "system health",
}


@dataclass(frozen=True)
class AlarmFacts:
    """What naming an incident needs of one alarm."""

    metric: str
    kind: str
    severity: str
    reference_value: float | None = None
    current_value: float | None = None
    statistic: str = ""
    score: float | None = None


def headline_index(alarms: Sequence[AlarmFacts]) -> int:
    """Position of the most telling alarm in ``alarms`` (see the module doc); ``alarms`` must not be empty."""
    if not alarms:
        raise ValueError("an incident has at least one alarm")

    def rank(i: int) -> tuple[int, int, int]:
        a = alarms[i]
        kind = next((k for k, kind in enumerate(KIND_ORDER) if kind.value == a.kind), len(KIND_ORDER))
        return (kind, a.severity != "severe", _METRIC_ORDER.get(a.metric, len(_METRIC_ORDER)))

    return min(range(len(alarms)), key=rank)


#: Below this change of the median, a numeric metric's alarm is about the shape of its values, and says so.
SMALL_MEDIAN_CHANGE = 0.05


def _pct(share: float) -> str:
    return f"{share * 100:.1f} %" if abs(share) < 0.1 else f"{share * 100:.0f} %"


def describe_change(metric: str, reference_value: float | None, current_value: float | None, *, statistic: str = "", score: float | None = None) -> str:
    """The change of one metric in the floor's words: ``brightness down 66 %``, ``human-model disagreement 10 % (normally 0.7 %)``."""
    spec = METRIC_BY_NAME.get(metric)
    label = spec.label if spec else metric
    name = label[0].lower() + label[1:]
    if statistic == "run" and score is not None:  # the admission check's run of refused phones
        return f"{score:.0f} phones in a row unlike the model's reference"
    if spec is None or current_value is None:
        return name
    if spec.family is Family.NUMERIC:
        if not reference_value:
            return f"{name} at {current_value:.3g}"
        change = (current_value - reference_value) / abs(reference_value)
        if abs(change) < 0.005:
            return f"{name} unchanged in the median ({current_value:.3g}), its spread changed"
        if abs(change) < SMALL_MEDIAN_CHANGE:
            # A judged alarm with the median barely moved: the distribution's shape moved (a test on hundreds of
            # phones sees that), and "brightness down 0.8 % (severe)" read as nonsense to a supervisor.
            return f"{name} {'down' if change < 0 else 'up'} only {_pct(abs(change))} in the median, its spread changed"
        return f"{name} {'down' if change < 0 else 'up'} {_pct(abs(change))}"
    if spec.family in (Family.RATE, Family.CATEGORICAL):
        normally = f" (normally {_pct(reference_value)})" if reference_value is not None else ""
        return f"{name} {_pct(current_value)}{normally}"
    return f"{name} {current_value:.4g} {spec.unit}".rstrip()


def incident_title(headline: AlarmFacts) -> str:
    """``input drift — brightness down 66 % (severe)``."""
    kind = KIND_TITLE.get(headline.kind, headline.kind)
    change = describe_change(headline.metric, headline.reference_value, headline.current_value, statistic=headline.statistic, score=headline.score)
    return f"{kind} — {change} ({headline.severity})"
