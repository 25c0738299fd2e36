"""Chaos in CI: the full stack as real processes, a short seeded loop of SIGKILLs (bench/chaos.py runs
the long one), the core's database refusing writes in the middle of a run, and the core killed in the
middle of a merge."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.cloud import CloudState, Graph, graph_from_db, graph_from_search, integrity, snapshot_problems
from tests.chaos.faults import immutable_unsupported, read_only
from tests.chaos.loop import chaos, merge_interrupted
from tests.chaos.stack import KINDS, ChaosStack, StackOptions, until

KILLS, SEED = 16, 43
"""Seed 43 kills the core 7 times, the worker, the metrics exporter and the script 3 times each."""
RUN_WITHIN = 90.0


@pytest.mark.timeout(150)
async def test_random_kills_lose_no_run_and_no_resource(tmp_path: Path) -> None:
    async with ChaosStack(tmp_path) as stack:
        report = await chaos(stack, KILLS, SEED)
    summary = "\n".join(report.summary())
    assert report.all_problems() == [], summary
    assert sum(report.kills.values()) == KILLS and set(report.kills) == set(KINDS), summary
    assert report.runs.checked >= len(report.started) >= KILLS // 2, summary
    assert report.deletes.effective > 0 and report.snapshot_checks > KILLS // 2, summary


@pytest.mark.timeout(120)
async def test_a_read_only_database_is_reported_retried_and_survived(tmp_path: Path) -> None:
    if reason := immutable_unsupported(tmp_path):
        pytest.skip(f"no way to make files read-only for root here: {reason}")
    async with ChaosStack(tmp_path) as stack:
        first = await stack.post_run()
        assert first.task_id is not None
        await stack.wait_ended(first.task_id, RUN_WITHIN)
        core = stack.procs["core"]
        pid, logged = core.pid, len(list(core.entries()))

        def core_logged(event: str) -> list[dict[str, Any]]:
            return [e for _, e in list(core.entries())[logged:] if e.get("event") == event]

        run = await stack.post_run()
        assert run.task_id is not None
        with read_only(stack.core_dir):

            async def failing() -> bool:
                return bool(core_logged("store_commit_failed"))

            assert await until(failing, 30), core.tail()
            cause = core_logged("store_commit_failed")[0]["error"]  # the cause, not a failed ROLLBACK
            assert ("I/O error" in cause or "readonly" in cause) and "cannot rollback" not in cause, cause
            async with stack.session.get(f"{stack.url}/system/ready") as r:
                assert r.status == 503 and "storage unavailable" in (await r.json())["error"]
            async with stack.session.get(f"{stack.url}/metrics") as r:
                counted = [
                    line for line in (await r.text()).splitlines() if line.startswith("resotocore_store_errors_to")
                ]
                assert float(counted[0].split()[1]) >= 1, counted
            assert (await stack.get(f"/tasks/{run.task_id}"))["status"] == "running"
            await asyncio.sleep(1)  # it keeps trying
        ended = await stack.wait_ended(run.task_id, RUN_WITHIN)
        assert ended["status"] == "succeeded" or (ended["status"] == "failed" and ended["error"]), ended
        assert core.alive and core.pid == pid and core_logged("store_commit_recovered")
        assert await stack.ready()
        assert integrity(stack.core_db) == "ok" and integrity(stack.graph_db) == "ok"
        final = await stack.post_run()
        assert final.task_id is not None
        assert (await stack.wait_ended(final.task_id, RUN_WITHIN))["status"] == "succeeded"
        await _assert_graph_is_the_cloud(stack)


MERGE_RESOURCES = 8000
"""Per region: the merge of 16,000 resources takes long enough (about half a second) to be hit."""


@pytest.mark.timeout(150)
async def test_a_merge_cut_by_a_kill_of_the_core_leaves_the_old_graph_or_the_new_one(tmp_path: Path) -> None:
    rng = random.Random(3)
    options = StackOptions(accounts=1, resources=MERGE_RESOURCES, timeout=60)
    async with ChaosStack(tmp_path, options) as stack:
        worker, cut, merge_seconds = stack.procs["worker"], False, 0.0
        for attempt in range(3):
            if attempt:  # a new cloud: everything expired is back, the graph starts afresh
                await stack.new_cloud(tmp_path / "clouds" / str(attempt))
            first = await stack.post_run()  # collects everything, then the cleanup deletes what expired
            assert first.task_id is not None
            merge_seconds = merge_seconds or await _merge_seconds(stack)
            assert (await stack.wait_ended(first.task_id, RUN_WITHIN))["status"] == "succeeded"
            before = _resources(graph_from_search(await stack.search({"cloud": ["example"]})))
            state = CloudState.read(stack.cloud_file, stack.journal)
            after = {nid for nid in state.resources if nid not in state.deleted}
            assert before != after, "the next collect must change the graph"
            logged = len(list(worker.entries()))
            run = await stack.post_run()
            assert run.task_id is not None
            assert await until(lambda: _collected(stack), 60, every=0.01), "the worker did not generate the account"
            await asyncio.sleep(merge_seconds * rng.uniform(0.2, 0.7))  # the batch is on its way
            await stack.kill("core")
            graph = _resources(graph_from_db(stack.graph_db))
            assert graph in (before, after), f"a mix: {len(graph - before)} new, {len(before - graph)} gone"
            assert integrity(stack.graph_db) == "ok" and integrity(stack.core_db) == "ok"
            await stack.start("core")
            assert await stack.wait_connected()
            ended = await stack.wait_ended(run.task_id, RUN_WITHIN)
            assert ended["status"] in ("succeeded", "failed"), ended
            if any(merge_interrupted(e) for _, e in list(worker.entries())[logged:]):
                cut = True
                break
        assert cut, f"no kill landed inside a merge (one takes {merge_seconds:.2f} s)"
        repair = await stack.post_run()  # the next collect makes the graph whole again
        assert repair.task_id is not None
        assert (await stack.wait_ended(repair.task_id, RUN_WITHIN))["status"] == "succeeded"
        await _assert_graph_is_the_cloud(stack)


async def _merge_seconds(stack: ChaosStack) -> float:
    """From the worker's last progress of generating the account to the end of the collect step."""
    assert await until(lambda: _collected(stack), 60, every=0.01)
    started = asyncio.get_running_loop().time()

    async def merged() -> bool:
        tasks = await stack.running()
        return not tasks or tasks[0]["step"] != "collect"

    assert await until(merged, 60, every=0.01)
    return asyncio.get_running_loop().time() - started


async def _collected(stack: ChaosStack) -> bool:
    """Whether the worker reported every region of the account generated: the merge starts now."""
    tasks = await stack.running()
    progress = tasks[0].get("progress", {}).get("chaos.worker", {}).get("progress", {}) if tasks else {}
    return bool(progress.get("name") == "example-account-0" and progress.get("current") == progress.get("total"))


def _resources(graph: Graph) -> set[str]:
    return set().union(*(view.resources for view in graph.values()))


async def _assert_graph_is_the_cloud(stack: ChaosStack) -> None:
    state = CloudState.read(stack.cloud_file, stack.journal)
    graph = graph_from_search(await stack.search({"cloud": ["example"]}))
    assert snapshot_problems(state, graph, exact=True) == []
