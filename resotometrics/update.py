"""One metrics update: every definition's aggregate query against the core, then a new snapshot.

The queries run one after another, each under what is left of the update's time limit. The first one
that fails ends the update with ``UpdateFailed`` naming its metric; the snapshot being served is only
replaced when every query answered. A graph that does not exist (yet) is no failure: every metric is
empty, as it would be for an empty graph.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from resotolib.client import CoreError, graph_missing
from resotolib.graph import AggregateRequest, AggregateRow
from resotometrics.definition import MetricDefinition
from resotometrics.exporter import Exporter
from resotometrics.snapshot import Snapshot, build_snapshot

log = structlog.get_logger(__name__)


class AggregateApi(Protocol):
    """The part of the core's API an update needs (implemented by resotolib.client.CoreClient)."""

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]: ...


class UpdateFailed(Exception):
    """A metric's query failed; ``str()`` names the metric and the reason."""

    def __init__(self, metric: str, reason: str) -> None:
        super().__init__(f"metric {metric}: {reason}")
        self.metric = metric
        self.reason = reason


async def compute(
    api: AggregateApi, graph: str, definitions: Sequence[MetricDefinition], now: datetime, time_limit: float
) -> Snapshot:
    """Run every definition's query and build the snapshot; raises UpdateFailed on the first failure."""
    deadline = asyncio.get_running_loop().time() + time_limit
    rows: dict[str, list[AggregateRow]] = {}
    for definition in definitions:
        try:
            async with asyncio.timeout_at(deadline):
                rows[definition.name] = await api.aggregate(graph, definition.request(now))
        except TimeoutError:
            raise UpdateFailed(definition.name, f"the update took longer than {time_limit:g}s") from None
        except CoreError as e:
            if graph_missing(e):  # nothing collected yet (or the graph was deleted): nothing to count
                log.info("graph_missing", graph=graph)
                return build_snapshot(definitions, {}, now)
            raise UpdateFailed(definition.name, str(e)) from None
        log.debug("metric_queried", metric=definition.name, rows=len(rows[definition.name]))
    return build_snapshot(definitions, rows, now)


class Updater:
    """Runs updates for one exporter: computes a snapshot and swaps it in, or counts the failure."""

    def __init__(
        self,
        api: AggregateApi,
        graph: str,
        exporter: Exporter,
        time_limit: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.graph = graph
        self.exporter = exporter
        self.time_limit = time_limit
        self.clock = clock

    async def update(self) -> Snapshot:
        """Compute and serve a new snapshot; on failure count it, keep the old one and raise."""
        started = time.perf_counter()
        try:
            snapshot = await compute(self.api, self.graph, self.exporter.definitions, self.clock(), self.time_limit)
        except Exception as e:
            self.exporter.failed(str(e), time.perf_counter() - started)
            raise
        self.exporter.succeeded(snapshot, time.perf_counter() - started)
        return snapshot
