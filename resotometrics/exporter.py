"""What /metrics serves: the cached snapshot through a custom collector, plus the exporter's own metrics.

Everything lives on one dedicated ``CollectorRegistry`` (never the process-wide default). A scrape
renders whatever snapshot is current; an update swaps in a complete new one with a single assignment,
so a scrape sees the old snapshot or the new one, never a mix, and never waits for the core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from resotometrics.definition import MetricDefinition
from resotometrics.snapshot import EMPTY, Snapshot

UPDATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class SnapshotCollector:
    """A prometheus-client collector yielding the families of the current snapshot."""

    def __init__(self, definitions: Sequence[MetricDefinition]) -> None:
        self.definitions = tuple(definitions)
        self.snapshot = EMPTY

    def describe(self) -> Iterable[Metric]:
        """The families without samples: lets the registry refuse names that clash with other collectors."""
        for d in self.definitions:
            family = CounterMetricFamily if d.type == "counter" else GaugeMetricFamily
            yield family(d.name, d.help, labels=list(d.labels))

    def collect(self) -> Iterable[Metric]:
        return self.snapshot.families


class Exporter:
    """The registry served on /metrics and the state /health reports."""

    def __init__(self, definitions: Sequence[MetricDefinition]) -> None:
        self.registry = CollectorRegistry()
        self.collector = SnapshotCollector(definitions)
        self.registry.register(self.collector)
        self.update_seconds = Histogram(
            "resotometrics_update_metrics_seconds",
            "Time one metrics update took (every aggregate query plus building the snapshot), successful or not.",
            buckets=UPDATE_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "resotometrics_last_success_timestamp_seconds",
            "Unix time at which the served snapshot was computed (0: no update succeeded yet).",
            registry=self.registry,
        )
        self.failures = Counter(
            "resotometrics_update_failures",
            "Metrics updates that failed; the previous snapshot stayed served.",
            registry=self.registry,
        )
        self.last_error: str | None = None
        self.updates = 0

    @property
    def definitions(self) -> tuple[MetricDefinition, ...]:
        return self.collector.definitions

    @property
    def snapshot(self) -> Snapshot:
        return self.collector.snapshot

    def succeeded(self, snapshot: Snapshot, seconds: float) -> None:
        """Serve ``snapshot`` from now on."""
        self.collector.snapshot = snapshot
        self.update_seconds.observe(seconds)
        if snapshot.computed_at is not None:
            self.last_success.set(snapshot.computed_at.timestamp())
        self.updates += 1
        self.last_error = None

    def failed(self, reason: str, seconds: float) -> None:
        """Count a failed update; the current snapshot stays."""
        self.update_seconds.observe(seconds)
        self.failures.inc()
        self.last_error = reason

    def render(self) -> bytes:
        """The text exposition of everything on the registry (prometheus-client escapes the label values)."""
        return generate_latest(self.registry)

    def health(self, core_connected: bool) -> dict[str, object]:
        computed_at: datetime | None = self.snapshot.computed_at
        return {
            "status": "ok",
            "core_connected": core_connected,
            "metrics": len(self.definitions),
            "series": self.snapshot.series,
            "updates": self.updates,
            "last_success": computed_at.isoformat() if computed_at else None,
            "last_error": self.last_error,
        }
