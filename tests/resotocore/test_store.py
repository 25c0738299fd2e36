"""The storage contract: every backend must pass these (SQLite always; more backends join the fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resotocore.db.sqlite import SqliteStore
from resotocore.db.store import Changes, QueuedRun, Store, StoreError
from resotocore.workflow.machine import Run, RunStatus
from resotolib.protocol import Subscriber, SubscriberId, Subscription, TaskId

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = SqliteStore(tmp_path / "store.db")
    yield backend
    await backend.close()


def run(task_id: str, workflow: str = "wf", minutes: int = 0, status: RunStatus = RunStatus.running) -> Run:
    return Run(
        id=TaskId(task_id), workflow_id=workflow, trigger="manual", status=status,
        created_at=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


async def test_runs_are_upserted_and_listed(store: Store) -> None:
    await store.commit(Changes(runs=[run("a", minutes=0), run("b", minutes=1), run("c", "other", minutes=2)]))
    await store.commit(Changes(runs=[run("a", minutes=0, status=RunStatus.succeeded)]))
    assert [r.id for r in await store.running()] == ["b", "c"]
    a = await store.run(TaskId("a"))
    assert a is not None and a.status is RunStatus.succeeded
    assert await store.run(TaskId("zzz")) is None
    page = await store.history("wf", limit=10, offset=0)
    assert [r.id for r in page.runs] == ["b", "a"] and page.total == 2
    page = await store.history("wf", limit=1, offset=1)
    assert [r.id for r in page.runs] == ["a"] and page.total == 2


async def test_history_keeps_insertion_order_for_equal_times(store: Store) -> None:
    for name in ("z", "a", "m"):
        await store.commit(Changes(runs=[run(name)]))
    await store.commit(Changes(runs=[run("z", status=RunStatus.failed)]))  # an update keeps the place
    assert [r.id for r in (await store.history("wf", 10, 0)).runs] == ["m", "a", "z"]


async def test_subscribers_queue_and_trigger_times(store: Store) -> None:
    sub = Subscriber(id=SubscriberId("w"), subscriptions={"collect": Subscription(message_type="collect", timeout=5)})
    queued = QueuedRun("wf", "schedule", T0)
    await store.commit(Changes(subscribers=[sub], queued=[queued], trigger_times={"wf/0": T0}))
    assert await store.subscribers() == [sub]
    assert await store.queue() == [queued]
    assert await store.trigger_times() == {"wf/0": T0}
    later = T0 + timedelta(hours=1)
    await store.commit(Changes(deleted_subscribers=[SubscriberId("w")], dequeued=["wf"], trigger_times={"wf/0": later}))
    assert await store.subscribers() == []
    assert await store.queue() == []
    assert await store.trigger_times() == {"wf/0": later}


async def test_a_failing_commit_writes_nothing(store: Store) -> None:
    broken = Changes(runs=[run("a")], trigger_times={"wf/0": "not a time"})  # type: ignore[dict-item]
    with pytest.raises(AttributeError):
        await store.commit(broken)
    assert await store.running() == []
    assert await store.trigger_times() == {}
    await store.commit(Changes(runs=[run("b")]))  # the store is still usable
    assert [r.id for r in await store.running()] == ["b"]


async def test_sqlite_write_errors_become_store_errors(tmp_path: Path) -> None:
    backend = SqliteStore(tmp_path / "ro.db")
    await backend.commit(Changes(runs=[run("a")]))
    backend._db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="cannot write"):
        await backend.commit(Changes(runs=[run("b")]))
    assert [r.id for r in await backend.running()] == ["a"]
    await backend.close()


async def test_only_changed_steps_are_written_and_all_are_read_back(store: Store) -> None:
    from resotocore.workflow.machine import StepRun

    def step(name: str) -> StepRun:
        return StepRun(name=name, message_type=name, started_at=T0, deadline=T0)

    first = run("a").model_copy(update={"steps": (step("s0"), step("s1"))})
    changes = Changes()
    changes.add_run(first)
    await store.commit(changes)
    # a later state whose step 0 is declared unchanged: what is stored for it stays
    later = first.model_copy(update={"steps": (step("ignored"), step("s1b"), step("s2"))})
    changes = Changes()
    changes.add_run(later, 1)
    await store.commit(changes)
    loaded = await store.run(TaskId("a"))
    assert loaded is not None
    assert [s.name for s in loaded.steps] == ["s0", "s1b", "s2"]
