"""Prometheus metrics of the inspection service (``/metrics``), all named ``shadowline_*``, base units.

Each service owns its registry (tests run several services in one process). Latency is a
histogram per line and model version; actions and fail-safes are counters; the queue depth and
the models in use are read from the database and the loaded models when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

#: Seconds; dense around the default 300 ms budget.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


class _StateCollector(Collector):
    """Values read at scrape time: queue depth per line, and which model version runs where."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]], models: Callable[[], list[dict[str, str]]]) -> None:
        self._queue_depths = queue_depths
        self._models = models

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily("shadowline_queue_depth", "Phones queued or being inspected, per line.", labels=["line"])
        for line, value in self._queue_depths().items():
            depth.add_metric([line], value)
        yield depth
        info = InfoMetricFamily("shadowline_model", "The model versions each line runs (slot blue: active, green: candidate) and whether loaded.")
        for labels in self._models():
            info.add_metric([], labels)
        yield info


class ServiceMetrics:
    """The service's instruments."""

    def __init__(self, queue_depths: Callable[[], dict[str, int]], models: Callable[[], list[dict[str, str]]]) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "shadowline_inspection_latency_seconds",
            "Time from a phone's arrival to the gate's answer, per line and model version.",
            ["line", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "shadowline_gate_actions", "Answers given to the gate, by action and who decided.", ["line", "action", "decided_by"], registry=self.registry
        )
        self.failsafes = Counter("shadowline_failsafes", "Answers that were the line's fail-safe, by reason.", ["line", "reason"], registry=self.registry)
        self.rejected = Counter("shadowline_rejected_requests", "Requests refused with a 4xx, by reason.", ["reason"], registry=self.registry)
        self.upkeep = Histogram(
            "shadowline_upkeep_seconds",
            "Time of one round of the upkeep after written phones (step-downs, alarm and drift counts), off the answer's path.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upkeep_phones = Counter("shadowline_upkeep_phones", "Written phones whose upkeep is done.", registry=self.registry)
        self.in_flight = Gauge("shadowline_inspections_in_flight", "Phones the service is inspecting now.", registry=self.registry)
        self.registry.register(_StateCollector(queue_depths, models))

    def render(self) -> bytes:
        return generate_latest(self.registry)
