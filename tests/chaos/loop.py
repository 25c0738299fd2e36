"""The chaos loop: start runs, SIGKILL a random process of the stack at a random moment, start it again,
many times in a row; then let everything settle, run once more without kills, and audit.

Everything random comes from one seed: which process dies, and when (a delay within the time one run
takes, so kills land in every step, during merges and during cleanup; now and then right after the
POST, so a POST may lose its answer). After each kill of the core its database files are checked
while it is down (integrity, and the graph as the restarted core will find it); whenever the stack is
idle the graph is held against the cloud.

The example cloud is static: once every expired resource is deleted, cleanups have nothing left to
do. So when that happens (and no run runs) the harness now and then replaces it by a new cloud of the
same seed, in which everything expired is back, and starts the graph afresh; each cloud is audited on
its own.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.chaos.audit import acknowledged, audit_deletes, audit_runs
from tests.chaos.cloud import CloudState, graph_from_db, graph_from_search, integrity, snapshot_problems
from tests.chaos.report import ChaosReport
from tests.chaos.stack import KINDS, ChaosStack, PostResult

RUN_WITHIN = 60.0
"""Seconds one run may take, kills included, before the loop goes on without waiting for it."""
WAIT_FOR_RUN = 0.75
"""Chance that the loop waits for the run to end after a kill (else the next kill may hit the same run)."""
AT_POST = 0.15
"""Chance that a kill comes within 20 ms of a POST."""
NEW_CLOUD = 0.5
"""Chance that a cloud with nothing left to delete is replaced (else runs go on merging over the old graph)."""


@dataclass
class Cloud:
    """One example cloud of the session: its files, and the worker starts that saw it."""

    folder: Path
    first_start: int


async def chaos(stack: ChaosStack, kills: int, seed: int, settle_within: float = 120.0) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport(seed)
    started_at = time.monotonic()
    clouds = [Cloud(stack.worker_dir, 0)]
    window = await _first_run(stack, report)
    for _ in range(kills):
        # the same draws in every round, whatever happens: the victims are a function of the seed alone
        at_post, delay, victim, wait = rng.random() < AT_POST, rng.random(), rng.choice(KINDS), rng.random()
        fresh = rng.random() < NEW_CLOUD
        await _revive(stack, report)
        post = None
        if not await _busy(stack):
            if fresh and _nothing_to_delete(stack):
                clouds.append(await _new_cloud(stack, clouds))
            post = asyncio.create_task(stack.post_run())
        await asyncio.sleep(delay * (0.02 if post and at_post else window))
        report.moments[await _moment(stack, post)] += 1
        await stack.kill(victim)
        report.kills[victim] += 1
        if post is not None:
            _record(report, await post)
        if victim == "core":
            check_files(stack, report)
        await stack.start(victim)
        if not await stack.wait_connected():
            report.problems.append(f"subscribers not connected again after the {victim} restarted")
        if wait < WAIT_FOR_RUN and await stack.wait_idle(RUN_WITHIN):
            await check_graph(stack, report)
    await _revive(stack, report)
    await final_run(stack, report, settle_within)
    await audit(stack, report, clouds)
    report.seconds = time.monotonic() - started_at
    return report


async def _first_run(stack: ChaosStack, report: ChaosReport) -> float:
    """A run without kills; its duration (as the core timed it) is the window the kills are drawn from."""
    result = await stack.post_run()
    _record(report, result)
    assert result.task_id is not None, f"the first run did not start: {result}"
    run = await stack.wait_ended(result.task_id, RUN_WITHIN)
    if run["status"] != "succeeded":
        report.problems.append(f"the first run, without kills, {run['status']}: {run['error']}")
    await check_graph(stack, report)
    took = datetime.fromisoformat(run["ended_at"]) - datetime.fromisoformat(run["created_at"])
    return max(0.02, took.total_seconds() * 1.1)


async def final_run(stack: ChaosStack, report: ChaosReport, settle_within: float) -> None:
    """Let every run end, then one more without kills: it must succeed and leave graph == cloud."""
    if not await stack.wait_idle(settle_within):
        stuck = [(r["id"], r["step"]) for r in await stack.running()]
        report.problems.append(f"runs still running {settle_within:.0f} s after the last kill: {stuck}")
    result = await stack.post_run()
    _record(report, result)
    if result.task_id is None:
        report.problems.append(f"the final run did not start: {result}")
        return
    try:
        run = await stack.wait_ended(result.task_id, RUN_WITHIN)
    except AssertionError as e:
        report.problems.append(f"the final run, without kills: {e}")
        return
    if run["status"] != "succeeded":
        report.problems.append(f"the final run, without kills, {run['status']}: {run['error']}")
    await check_graph(stack, report, exact=True)
    async with stack.session.get(stack.metrics_url) as r:
        if r.status != 200 or "resoto" not in await r.text():
            report.problems.append(f"the exporter's /metrics answered {r.status}")


async def audit(stack: ChaosStack, report: ChaosReport, clouds: list[Cloud]) -> None:
    history = await stack.history()
    report.runs = audit_runs(history, report.started, report.posts["failed"])
    worker = stack.procs["worker"]
    report.clouds = len(clouds)
    for cloud, upto in zip(clouds, [c.first_start for c in clouds[1:]] + [len(worker.starts)], strict=True):
        pids = {start.pid for start in worker.starts[cloud.first_start : upto]}
        acks = acknowledged((start.pid, entry) for start, entry in worker.entries() if start.pid in pids)
        if (cloud.folder / stack.cloud_file.name).exists():
            state = CloudState.read(cloud.folder / stack.cloud_file.name, cloud.folder / stack.journal.name)
            report.deletes.add(audit_deletes(state, acks))
    report.merges_interrupted = sum(1 for _, e in worker.entries() if merge_interrupted(e))
    for path in (stack.core_db, stack.graph_db):
        _integrity(path, report)
    script = stack.script_tasks.read_text().split() if stack.script_tasks.exists() else []
    report.script_runs, report.script_reruns = len(script), len(script) - len(set(script))
    for run in history:  # every post_collect the script answered done ran the script for that run
        post_collect = next((s for s in run["steps"] if s["name"] == "post_collect"), None)
        outcome = (post_collect or {}).get("subscribers", {}).get("chaos-script", {}).get("outcome")
        if outcome == "done" and run["id"] not in script:
            report.problems.append(f"run {run['id']}: post_collect done, but the script did not record it")
    for kind in KINDS:
        report.problems += [f"{kind} exited by itself: {e}" for e in stack.procs[kind].exited_by_itself]


async def check_graph(stack: ChaosStack, report: ChaosReport, exact: bool = False) -> None:
    """The graph through the core's search, against the cloud (the stack is idle)."""
    if not stack.cloud_file.exists():
        return  # a new cloud, not collected yet
    nodes = await stack.search({"cloud": ["example"]})
    state = CloudState.read(stack.cloud_file, stack.journal)
    report.snapshot_checks += 1
    report.problems += [f"graph: {p}" for p in snapshot_problems(state, graph_from_search(nodes), exact=exact)]


def check_files(stack: ChaosStack, report: ChaosReport) -> None:
    """While the core is down: its databases are intact, the graph in the file is one cloud state per account."""
    _integrity(stack.core_db, report)
    if stack.graph_db.exists():
        _integrity(stack.graph_db, report)
        if stack.cloud_file.exists():
            state = CloudState.read(stack.cloud_file, stack.journal)
            report.snapshot_checks += 1
            problems = snapshot_problems(state, graph_from_db(stack.graph_db))
            report.problems += [f"graph after a kill of the core: {p}" for p in problems]


def merge_interrupted(entry: dict[str, Any]) -> bool:
    """A worker's log entry saying the core went away while it was sending a merge (not: was already down)."""
    return (
        entry.get("event") == "collect_failed"
        and entry.get("stage") == "merging"
        and "ClientConnectorError" not in str(entry.get("error"))
    )


def _integrity(path: Path, report: ChaosReport) -> None:
    report.integrity_checks += 1
    result = integrity(path)
    if result != "ok":
        report.problems.append(f"integrity_check of {path.name}: {result}")


def _nothing_to_delete(stack: ChaosStack) -> bool:
    """Whether every resource a cleanup_plan would mark is deleted already."""
    if not stack.cloud_file.exists():
        return False
    state, now = CloudState.read(stack.cloud_file, stack.journal), datetime.now(UTC)
    return all(
        nid in state.deleted or r.protected or r.expires is None or r.expires >= now
        for nid, r in state.resources.items()
    )


async def _new_cloud(stack: ChaosStack, clouds: list[Cloud]) -> Cloud:
    archive = stack.root / "clouds" / str(len(clouds))
    await stack.new_cloud(archive)
    clouds[-1].folder = archive
    return Cloud(stack.worker_dir, len(stack.procs["worker"].starts) - 1)


async def _revive(stack: ChaosStack, report: ChaosReport) -> None:
    """Start again whatever ended by itself (recorded as a problem at the end)."""
    for kind in KINDS:
        if stack.procs[kind].check_exit():
            await stack.start(kind)
    await stack.wait_connected()


async def _busy(stack: ChaosStack) -> bool:
    try:
        return bool(await stack.running())
    except (aiohttp.ClientError, TimeoutError):
        return True


async def _moment(stack: ChaosStack, post: asyncio.Task[PostResult] | None) -> str:
    if post is not None and not post.done():
        return "post"
    try:
        async with asyncio.timeout(1):
            running = await stack.running()
    except (aiohttp.ClientError, TimeoutError):
        return "unknown"
    return str(running[0]["step"]) if running else "idle"


def _record(report: ChaosReport, result: PostResult) -> None:
    report.posts[result.status] += 1
    if result.task_id is not None:
        report.started.append(result.task_id)
