"""A store that refuses commits (disk full, files made read-only, server gone): the engine reports it
and retries, sends nothing whose state is not stored, loses no answer and no deadline, and goes on once
the store takes commits again.

The store boundary is made to fail in-process here, so this runs everywhere; tests/chaos makes a real
core's database files read-only where the machine allows it (chattr)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from resotocore.core import Core
from resotocore.db.store import Changes, StoreError
from resotocore.workflow.model import Step, Workflow
from tests.support import CoreClientFactory, FakeClock, answer, core_of, receive_json, settle, subscribe

WORKFLOW = [
    Workflow(
        id="wf", name="wf", steps=(Step(name="work", message_type="work"), Step(name="after", message_type="after"))
    )
]


class RefusingStore:
    """Wraps the core's store: every commit fails with StoreError until `heal()`."""

    def __init__(self, core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
        self._commit = core.store.commit
        self.refused = 0
        self.refusing = True
        self._changed = asyncio.Condition()
        monkeypatch.setattr(core.store, "commit", self.commit)

    async def commit(self, changes: Changes) -> None:
        if self.refusing:
            async with self._changed:
                self.refused += 1
                self._changed.notify_all()
            raise StoreError("cannot write to resotocore.db: disk I/O error")
        await self._commit(changes)

    async def wait_refused(self, times: int, within: float = 5) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.refused >= times)

    def heal(self) -> None:
        self.refusing = False


async def state(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/tasks/{task_id}")).json()
    return body


async def refused_answer(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch, times: int
) -> tuple[TestClient[Any, Any], aiohttp.ClientWebSocketResponse, str, RefusingStore]:
    """A run whose first step's answer the store has refused `times` times (and goes on refusing)."""
    client = await core_client(workflows=WORKFLOW)
    ws = await subscribe(client, "w", "work", "after")
    task_id = (await (await client.post("/workflows/wf/run")).json())["task_id"]
    action = await receive_json(ws)
    store = RefusingStore(core_of(client), monkeypatch)
    await answer(ws, action)
    await store.wait_refused(times)
    return client, ws, task_id, store


async def test_an_answer_the_store_refuses_is_retried_and_nothing_leaves_before_it_is_stored(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, ws, task_id, store = await refused_answer(core_client, monkeypatch, 3)
    ready = await client.get("/system/ready")
    assert ready.status == 503 and "disk I/O error" in (await ready.json())["error"]
    assert "resotocore_store_errors_total 3.0" in await (await client.get("/metrics")).text()
    assert (await state(client, task_id))["step"] == "work"
    with pytest.raises(TimeoutError):
        await receive_json(ws, within=0.2)  # the next action waits until the answer is stored
    store.heal()
    after = await receive_json(ws)
    assert after["data"] == {"task": task_id, "step": "after"}
    assert (await client.get("/system/ready")).status == 200
    assert (await state(client, task_id))["steps"][0]["subscribers"]["w"]["outcome"] == "done"


async def test_a_deadline_while_the_store_refuses_is_not_lost(
    core_client: CoreClientFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await core_client(workflows=WORKFLOW)
    core = core_of(client)
    silent = await subscribe(client, "silent", "work", answer_within=30)
    task_id = (await (await client.post("/workflows/wf/run")).json())["task_id"]
    await receive_json(silent)
    store = RefusingStore(core, monkeypatch)
    clock.advance(timedelta(seconds=30))
    await store.wait_refused(2)
    assert (await state(client, task_id))["status"] == "running"
    store.heal()
    await asyncio.wait_for(core.engine.drain(), 5)
    run = await state(client, task_id)
    assert run["status"] == "failed" and run["steps"][0]["subscribers"]["silent"]["outcome"] == "timeout"


async def test_stopping_ends_the_retries(core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await core_client(workflows=WORKFLOW)
    core = core_of(client)
    ws = await subscribe(client, "w", "work")
    await client.post("/workflows/wf/run")
    action = await receive_json(ws)
    store = RefusingStore(core, monkeypatch)
    await answer(ws, action)
    await store.wait_refused(2)
    await asyncio.wait_for(core.engine.stop(), 2)  # gives up on the answer instead of waiting for the store
    store.heal()
    await settle(core)


async def test_starting_or_cancelling_a_run_while_the_store_refuses_is_503_at_once(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, ws, task_id, store = await refused_answer(core_client, monkeypatch, 1)
    core = core_of(client)
    async with asyncio.timeout(2):  # answered at once: a caller that gave up could not tell what happened
        started = await client.post("/workflows/wf/run")
        cancelled = await client.delete(f"/tasks/{task_id}")
    for response in (started, cancelled):
        assert response.status == 503 and "disk I/O error" in (await response.json())["error"]
    assert [run.id for run in core.engine.running()] == [task_id]
    store.heal()
    assert (await receive_json(ws))["data"] == {"task": task_id, "step": "after"}
    assert (await client.post("/workflows/wf/run")).status == 202  # accepted again (queued behind the run)
