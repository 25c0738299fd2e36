"""The ``collect`` action: every collector in parallel, each of its accounts in parallel, all of a
collector's work under the worker's time limit. Each account is merged into the graph as soon as it is
collected, so one failing account never drops the others' data; the answer names what failed.

Progress comes in one part per account (context: cloud and account, named after the account): 0 of 1
once the account is listed, then as its collector counts (a region at a time); the core shows the parts
of the step together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from resotoworker.collector import Collector
from resotoworker.handler import ActionFailed, GraphApi, Reporter, describe_error

log = structlog.get_logger(__name__)


async def collect(
    collectors: Sequence[Collector], client: GraphApi, graph: str, time_limit: float, reporter: Reporter
) -> None:
    """Collect and merge every account of every collector; raise ActionFailed naming each failure."""
    run = _Collect(client, graph, time_limit, reporter)
    await asyncio.gather(*(run.collector(c) for c in collectors))
    log.info("collect_finished", accounts=run.total, merged=run.done, failed=len(run.failures))
    if run.failures:
        summary = f"collect failed for {len(run.failures)} of {run.total} accounts: "
        raise ActionFailed(summary + "; ".join(run.failures))


@dataclass
class _Collect:
    client: GraphApi
    graph: str
    time_limit: float
    reporter: Reporter
    total: int = 0
    """Accounts known so far, across all collectors."""
    done: int = 0
    """Accounts collected and merged."""
    failures: list[str] = field(default_factory=list)

    async def collector(self, collector: Collector) -> None:
        cloud = collector.cloud
        deadline = asyncio.get_running_loop().time() + self.time_limit
        try:
            async with asyncio.timeout_at(deadline):
                accounts = list(await collector.accounts())
        except Exception as e:
            self.total += 1
            await self.failed(cloud, None, "listing accounts", e)
            return
        self.total += len(accounts)
        log.info("collector_started", cloud=cloud, accounts=len(accounts))
        for account in accounts:  # every account is a part of the step's progress from the start
            await self.reporter.progress(account, 0, 1, [cloud, account])
        await asyncio.gather(*(self.account(collector, account, deadline) for account in accounts))

    async def account(self, collector: Collector, account: str, deadline: float) -> None:
        cloud = collector.cloud
        started = time.perf_counter()

        async def progress(name: str, current: int, total: int) -> None:
            await self.reporter.progress(name, current, total, [cloud, account])

        stage = "collecting"
        try:
            async with asyncio.timeout_at(deadline):
                batch = await collector.collect_account(account, progress)
                stage = "merging"
                lines, nodes = batch.ndjson(), len(batch.nodes)
                del batch  # the lines are all the merge needs, and far smaller
                result = await self.client.merge(self.graph, lines)
        except Exception as e:
            await self.failed(cloud, account, stage, e)
            return
        self.done += 1
        log.info(
            "account_collected", cloud=cloud, account=account, nodes=nodes, created=result.created,
            updated=result.updated, deleted=result.deleted, seconds=round(time.perf_counter() - started, 3),
        )  # fmt: skip

    async def failed(self, cloud: str, account: str | None, stage: str, error: Exception) -> None:
        where = f"{cloud}/{account}" if account else cloud
        timed_out = isinstance(error, TimeoutError)
        reason = f"timed out after {self.time_limit:g}s" if timed_out else describe_error(error)
        self.failures.append(f"{where}: {stage} failed: {reason}")
        log.error("collect_failed", cloud=cloud, account=account, stage=stage, error=reason)
        await self.reporter.info(f"{where}: {stage} failed: {reason}", level="error")
