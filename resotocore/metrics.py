"""The core's own Prometheus metrics, on a registry per app so tests can run many cores."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 10800)


class CoreMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs_started = Counter(
            "resotocore_runs_started", "Workflow runs started", ["workflow"], registry=self.registry
        )
        self.runs_finished = Counter(
            "resotocore_runs_finished",
            "Workflow runs finished, by outcome",
            ["workflow", "status"],
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "resotocore_step_duration_seconds",
            "Duration of workflow steps",
            ["workflow", "step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.subscribers_connected = Gauge(
            "resotocore_subscribers_connected",
            "Subscribers connected to their action channel",
            registry=self.registry,
        )
        self.event_listeners = Gauge(
            "resotocore_event_listeners", "Websockets listening on /events", registry=self.registry
        )
        self.queue_overflows = Counter(
            "resotocore_queue_overflows",
            "Websockets closed because they did not read their queue",
            ["channel"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "resotocore_store_errors",
            "Commits of run state the store refused (each is retried)",
            registry=self.registry,
        )
        self.protocol_errors = Counter(
            "resotocore_protocol_errors", "Websockets closed because of invalid frames", registry=self.registry
        )
        self._step_durations: dict[tuple[str, str], Histogram] = {}

    def step_ended(self, workflow: str, step: str, seconds: float) -> None:
        """Observe a step's duration; each step's histogram is looked up once (labels() takes a lock)."""
        histogram = self._step_durations.get((workflow, step))
        if histogram is None:
            histogram = self._step_durations[(workflow, step)] = self.step_duration.labels(workflow, step)
        histogram.observe(seconds)
