"""Test doubles for the worker's handlers (a graph API in memory, a recording reporter, a collector)
and a real worker process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from resotolib.client import CoreClient
from resotolib.graph import CleanRequest, Edge, MergeResult, Node, NodePatch, SearchRequest
from resotolib.protocol import Event, parse_message
from resotoworker.collector import Collector, CollectorContext, GraphBatch, Progress
from resotoworker.handler import Level
from tests.support import CoreProcess, LoggedProcess


class RecordingReporter:
    def __init__(self) -> None:
        self.progress_calls: list[tuple[str, int, int, tuple[str, ...]]] = []
        self.infos: list[tuple[str, str]] = []

    async def progress(self, name: str, current: int, total: int, context: Sequence[str] = ()) -> None:
        self.progress_calls.append((name, current, total, tuple(context)))

    async def info(self, message: str, level: Level = "info") -> None:
        self.infos.append((level, message))


class FakeGraph:
    """GraphApi in memory: records merges, cleans and patches; search answers with the given items."""

    def __init__(self, items: Sequence[Node | Edge] = (), marked: int = 0) -> None:
        self.items = list(items)
        self.marked = marked
        self.merges: dict[str, list[dict[str, Any]]] = {}
        self.cleans: list[CleanRequest] = []
        self.searches: list[SearchRequest] = []
        self.patches: list[list[NodePatch]] = []
        self.fail_merge: set[str] = set()
        self.fail_patch = False

    async def merge(self, graph: str, lines: Iterable[str]) -> MergeResult:
        parsed = [json.loads(line) for line in lines]
        account = next(p["reported"]["id"] for p in parsed if p.get("metadata", {}).get("replace"))
        if account in self.fail_merge:
            raise RuntimeError(f"merge of {account} refused")
        self.merges[account] = parsed
        return MergeResult(created=sum(1 for p in parsed if "id" in p))

    async def search(self, graph: str, request: SearchRequest) -> AsyncIterator[Node | Edge]:
        self.searches.append(request)
        for item in self.items:
            await asyncio.sleep(0)
            yield item

    async def clean(self, graph: str, request: CleanRequest) -> int:
        self.cleans.append(request)
        return self.marked

    async def patch_nodes(self, graph: str, patches: Iterable[NodePatch]) -> dict[str, Any]:
        if self.fail_patch:
            raise RuntimeError("core refused the patch")
        batch = list(patches)
        self.patches.append(batch)
        return {"updated": len(batch), "missing": []}


class FakeCollector(Collector):
    """Accounts of one region with `per_account` resources; some accounts fail or hang, some deletes fail."""

    cloud = "fake"

    def __init__(
        self,
        accounts: Sequence[str] = ("a1", "a2", "a3"),
        *,
        per_account: int = 2,
        failing: Iterable[str] = (),
        hanging: Iterable[str] = (),
        failing_deletes: Iterable[str] = (),
    ) -> None:
        super().__init__(CollectorContext(Path(".")))
        self.account_ids = list(accounts)
        self.per_account = per_account
        self.failing = set(failing)
        self.hanging = set(hanging)
        self.failing_deletes = set(failing_deletes)
        self.deleted: list[str] = []
        self.active = 0
        self.max_active = 0

    async def accounts(self) -> Sequence[str]:
        return self.account_ids

    async def collect_account(self, account: str, progress: Progress) -> GraphBatch:
        if account in self.hanging:
            await asyncio.Event().wait()
        if account in self.failing:
            raise PermissionError("access denied")
        batch = GraphBatch(self.cloud, account)
        for n in range(self.per_account):
            batch.resource("fake_thing", "r1", f"{account}-{n}")
            await progress(account, n + 1, self.per_account)
        return batch

    async def delete(self, node: Node) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(0.001)
            if node.reported["id"] in self.failing_deletes:
                raise RuntimeError("resource is locked")
            self.deleted.append(str(node.reported["id"]))
        finally:
            self.active -= 1


def resource(provider_id: str, cloud: str = "fake", kind: str = "fake_thing") -> Node:
    """A node as the core's search returns it: with its ancestors."""
    ancestors: dict[str, Any] = {"cloud": cloud, "account": "a1", "region": "r1"}
    return Node(
        id=f"n-{provider_id}",
        reported={"kind": kind, "id": provider_id, "name": provider_id},
        metadata={"ancestors": ancestors},
        desired={"clean": True},
    )


def delete_edge(from_id: str, to_id: str) -> Edge:
    return Edge(from_id=f"n-{from_id}", to_id=f"n-{to_id}", edge_type="delete")


class WorkerProcess(LoggedProcess):
    """A real `resotoworker` process; its JSON log lines are collected as they come."""

    command = "resotoworker"

    async def start(self) -> WorkerProcess:
        await self.spawn()
        return self


async def run_workflow(
    client: CoreClient, core: CoreProcess, worker: WorkerProcess, within: float = 30.0
) -> dict[str, Any]:
    """Start collect_and_cleanup and wait for its task_end event; returns the finished task (fails with both logs)."""
    async with client.websocket("events", params={"show": "task_end"}) as events:
        started = await client.run_workflow("collect_and_cleanup")
        assert started["status"] == "started", started
        try:
            async with asyncio.timeout(within):
                async for frame in events:
                    message = parse_message(frame.data)
                    if isinstance(message, Event) and message.data.get("task") == started["task_id"]:
                        break
        except TimeoutError:
            raise AssertionError(f"run did not end within {within}s\n{logs(core, worker)}") from None
    task = await client.task(started["task_id"])
    assert task["success"], f"run failed: {task}\n{logs(core, worker)}"
    return task


def logs(core: CoreProcess, worker: WorkerProcess) -> str:
    return f"--- core log:\n{core.log[-40:]}\n--- worker log:\n{worker.tail()}"
