"""Core and worker as real processes: the collect_and_cleanup workflow deletes the expired resources of
the example cloud, and only those, from the cloud and (after the next collect) from the graph."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from resotolib.client import CoreClient, CoreError
from resotolib.graph import Filter, Node, SearchRequest
from resotoworker.collectors.example_cloud import STATE_FILE, CloudSpec, ExampleCloud, generate_region
from tests.resotoworker.support import WorkerProcess, logs, run_workflow
from tests.support import StartCore

StartWorker = Callable[..., Awaitable[WorkerProcess]]
Key = tuple[str, str, str]
"""account, region, resource id"""


def generated(spec: CloudSpec) -> dict[Key, Any]:
    accounts, regions = spec.account_ids(), spec.region_ids()
    return {
        (accounts[a], regions[r], res.id): res
        for a in range(spec.accounts)
        for r in range(spec.regions)
        for res in generate_region(spec, a, r)
    }


def in_cloud(path: Path) -> set[Key]:
    cloud = ExampleCloud.load(path)
    accounts, regions = cloud.spec.account_ids(), cloud.spec.region_ids()
    return {(a, r, res.id) for a in accounts for r in regions for res in cloud.resources(a, r)}


async def example_nodes(client: CoreClient) -> dict[Key, Node]:
    nodes: dict[Key, Node] = {}
    async for item in client.search("resoto", SearchRequest(filter=Filter(cloud=["example"]))):
        if isinstance(item, Node) and item.kind.startswith("example_"):
            ancestors = item.metadata["ancestors"]
            assert isinstance(ancestors, dict), item
            nodes[(str(ancestors["account"]), str(ancestors["region"]), str(item.reported["id"]))] = item
    return nodes


async def test_collect_and_cleanup_removes_expired_resources(
    core_process: StartCore, worker_process: StartWorker, tmp_path: Path
) -> None:
    began = time.perf_counter()
    core = await core_process()
    data_dir = tmp_path / "worker"
    worker = await worker_process(
        "--resotocore-uri", core.url, "--collector", "example", "--cleanup", "--cleanup-expired",
        "--data-dir", str(data_dir), "--example-accounts", "2", "--example-regions", "2",
        "--example-resources", "25", "--timeout", "60",
    )  # fmt: skip
    await worker.wait_for("subscriber_connected")
    async with CoreClient(core.url) as client:
        first = await run_workflow(client, core, worker)
        first_run = time.perf_counter() - began

        cloud_file = data_dir / STATE_FILE
        spec = ExampleCloud.load(cloud_file).spec
        everything = generated(spec)
        now = datetime.now(UTC)
        expired = {k for k, r in everything.items() if r.expires is not None and r.expires < now}
        protected = {k for k in expired if everything[k].protected}
        doomed = expired - protected
        assert len(everything) == 100 and doomed and protected and len(everything) - len(expired) > 50

        # the cloud: exactly the expired, unprotected resources are gone
        assert in_cloud(cloud_file) == set(everything) - doomed, logs(core, worker)

        # the graph: they are marked cleaned (with an event log entry) until the next collect
        nodes = await example_nodes(client)
        assert set(nodes) == set(everything)
        cleaned = {k for k, n in nodes.items() if n.metadata.get("cleaned")}
        assert cleaned == doomed, logs(core, worker)
        for key in doomed:
            entries = nodes[key].metadata["event_log"]
            assert isinstance(entries, list) and isinstance(entries[-1], dict), nodes[key]
            assert entries[-1]["kind"] == "cleaned" and entries[-1]["message"] == "deleted by resoto.worker"
        for key in protected:
            assert nodes[key].metadata.get("protected") is True and not nodes[key].desired.get("clean")
        steps = {s["name"]: s for s in first["steps"]}
        for name in ("collect", "cleanup_plan", "cleanup"):
            assert steps[name]["subscribers"]["resoto.worker"]["outcome"] == "done", first
        [plan_info] = steps["cleanup_plan"]["info"]
        assert plan_info["message"] == (
            f"marked {len(doomed)} expired resources of example for cleanup; unmarked 0 no longer expired"
        )
        [cleanup_info] = steps["cleanup"]["info"]
        assert cleanup_info["message"] == f"deleted {len(doomed)} of {len(doomed)} resources marked for cleanup"

        # the next run's collect no longer sees them; nothing else is deleted
        before = worker.log.copy()
        await run_workflow(client, core, worker)
        nodes = await example_nodes(client)
        assert set(nodes) == set(everything) - doomed, logs(core, worker)
        assert not any(n.metadata.get("cleaned") for n in nodes.values())
        assert in_cloud(cloud_file) == set(everything) - doomed
        assert not [e for e in worker.log[len(before) :] if e.get("event") == "resource_deleted"]
    total = time.perf_counter() - began

    worker.signal(signal.SIGTERM)
    stopping = time.perf_counter()
    assert await worker.wait(within=5) == 0, worker.tail()
    assert worker.log[-1]["event"] == "worker_stopped"
    print(f"first run {first_run:.2f}s, both runs {total:.2f}s, stop {time.perf_counter() - stopping:.2f}s")


async def test_dry_run_marks_but_deletes_nothing(
    core_process: StartCore, worker_process: StartWorker, tmp_path: Path
) -> None:
    core = await core_process()
    data_dir = tmp_path / "worker"
    worker = await worker_process(
        "--resotocore-uri", core.url, "--cleanup", "--cleanup-expired", "--cleanup-dry-run",
        "--data-dir", str(data_dir), "--example-resources", "25",
    )  # fmt: skip
    await worker.wait_for("subscriber_connected")
    async with CoreClient(core.url) as client:
        await run_workflow(client, core, worker)
        nodes = await example_nodes(client)
    everything = generated(ExampleCloud.load(data_dir / STATE_FILE).spec)
    assert in_cloud(data_dir / STATE_FILE) == set(everything)
    marked = {k for k, n in nodes.items() if n.desired.get("clean")}
    assert marked and not any(n.metadata.get("cleaned") for n in nodes.values())
    would = {e["node_id"] for e in worker.log if e.get("event") == "cleanup_would_delete"}
    assert would == {nodes[k].id for k in marked}


async def test_sigint_during_a_collect_stops_the_worker_quickly_and_answers(
    core_process: StartCore, worker_process: StartWorker, tmp_path: Path
) -> None:
    core = await core_process()
    worker = await worker_process(
        "--resotocore-uri", core.url, "--data-dir", str(tmp_path / "worker"),
        "--example-accounts", "4", "--example-regions", "10", "--example-resources", "5000",
    )  # fmt: skip
    await worker.wait_for("subscriber_connected")
    async with CoreClient(core.url) as client:
        started = await client.run_workflow("collect_and_cleanup")
        await worker.wait_for("action_started")
        worker.signal(signal.SIGINT)
        stopping = time.perf_counter()
        assert await worker.wait(within=5) == 0, worker.tail()
        took = time.perf_counter() - stopping
        assert took < 3, f"stopping took {took:.2f}s\n{worker.tail()}"
        events = [e["event"] for e in worker.log]
        assert "action_cancelled" in events and events[-1] == "worker_stopped", worker.tail()
        collect = next(s for s in (await client.task(started["task_id"]))["steps"] if s["name"] == "collect")
        outcome = collect["subscribers"]["resoto.worker"]
        assert outcome == {**outcome, "outcome": "error", "error": "resoto.worker stopped while handling the action"}


async def test_worker_signs_its_requests_for_a_core_with_a_psk(
    core_process: StartCore, worker_process: StartWorker, tmp_path: Path, monkeypatch: Any
) -> None:
    core = await core_process("--psk", "s3cret")
    monkeypatch.setenv("RESOTOWORKER_PSK", "s3cret")  # the env var, as docker-compose passes it
    worker = await worker_process(
        "--resotocore-uri", core.url, "--collector", "example", "--data-dir", str(tmp_path / "worker"),
        "--example-accounts", "1", "--example-regions", "1", "--example-resources", "5",
    )  # fmt: skip
    await worker.wait_for("subscriber_connected")
    async with CoreClient(core.url, psk="s3cret") as client:
        task = await run_workflow(client, core, worker)
        collect = next(step for step in task["steps"] if step["name"] == "collect")
        assert collect["subscribers"]["resoto.worker"]["outcome"] == "done"
    async with CoreClient(core.url) as client:
        with pytest.raises(CoreError) as info:
            await client.subscribers()
        assert info.value.status == 401
