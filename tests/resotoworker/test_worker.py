"""The dispatcher (one task per action, answers, shutdown) and serve() against an in-process core."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from resotolib.graph import CleanRequest
from resotolib.protocol import Action, ActionData, SubscriberId, TaskId
from resotoworker.config import WorkerConfig
from resotoworker.handler import ActionFailed, Handler, Reporter
from resotoworker.worker import Dispatcher, Worker, serve
from tests.resotoworker.support import FakeCollector, FakeGraph, RecordingReporter
from tests.support import CoreClientFactory, core_of, until


class FakeChannel:
    def __init__(self) -> None:
        self.answers: list[tuple[str, str, str | None]] = []
        self.notices: list[tuple[str, Any]] = []
        self.answered = asyncio.Event()

    async def done(self, action: Action) -> None:
        self.answers.append(("done", action.data.step, None))
        self.answered.set()

    async def error(self, action: Action, message: str) -> None:
        self.answers.append(("error", action.data.step, message))
        self.answered.set()

    async def info(self, action: Action, message: str, level: str = "info") -> None:
        self.notices.append(("info", (level, message)))

    async def progress(
        self, action: Action, name: str, current: float, total: float, *, context: Sequence[str] = ()
    ) -> None:
        self.notices.append(("progress", (name, current, total, list(context))))


class ScriptedWorker(Worker):
    """Handlers for the step names used below."""

    def __init__(self, config: WorkerConfig) -> None:
        super().__init__(config, FakeGraph(), [FakeCollector()])
        self.started: list[str] = []
        self.release = asyncio.Event()

    def handler(self, message_type: str) -> Handler | None:
        async def ok(reporter: Reporter) -> None:
            self.started.append(message_type)
            await reporter.progress("step", 1, 2)
            await self.release.wait()

        async def partial(reporter: Reporter) -> None:
            raise ActionFailed("2 of 3 accounts failed")

        async def crash(reporter: Reporter) -> None:
            raise KeyError("boom")

        async def slow(reporter: Reporter) -> None:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()

        handlers = {"collect": ok, "cleanup_plan": partial, "cleanup": crash, "slow": slow}
        return handlers.get(message_type)


def action(message_type: str, task: str = "t1") -> Action:
    return Action(message_type=message_type, data=ActionData(task=TaskId(task), step=message_type))


async def answered(channel: FakeChannel, count: int) -> None:
    async with asyncio.timeout(5):
        while len(channel.answers) < count:
            channel.answered.clear()
            await channel.answered.wait()


async def test_each_action_is_answered_by_its_outcome(tmp_path: Path) -> None:
    channel, worker = FakeChannel(), ScriptedWorker(WorkerConfig(data_dir=tmp_path))
    dispatcher = Dispatcher(channel, worker)
    worker.release.set()
    for message_type in ("collect", "cleanup_plan", "cleanup", "generate_metrics"):
        dispatcher.dispatch(action(message_type))
    await answered(channel, 4)
    assert sorted(channel.answers) == [
        ("done", "collect", None),
        ("error", "cleanup", "cleanup failed: KeyError: 'boom'"),
        ("error", "cleanup_plan", "2 of 3 accounts failed"),
        ("error", "generate_metrics", "resoto.worker does not handle generate_metrics"),
    ]
    assert ("progress", ("step", 1, 2, [])) in channel.notices
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert dispatcher.running == {}


async def test_an_action_already_running_is_not_started_twice(tmp_path: Path) -> None:
    channel, worker = FakeChannel(), ScriptedWorker(WorkerConfig(data_dir=tmp_path))
    dispatcher = Dispatcher(channel, worker)
    dispatcher.dispatch(action("collect"))
    await asyncio.sleep(0.01)
    dispatcher.dispatch(action("collect"))
    dispatcher.dispatch(action("collect", task="t2"))
    await asyncio.sleep(0.01)
    assert worker.started == ["collect", "collect"]
    worker.release.set()
    await answered(channel, 2)
    assert channel.answers == [("done", "collect", None)] * 2


async def test_stop_cancels_running_handlers_and_answers_them(tmp_path: Path) -> None:
    channel, worker = FakeChannel(), ScriptedWorker(WorkerConfig(data_dir=tmp_path, subscriber_id="w1"))
    dispatcher = Dispatcher(channel, worker)
    dispatcher.dispatch(action("collect"))
    await asyncio.sleep(0.01)
    await dispatcher.stop()
    assert channel.answers == [("error", "collect", "w1 stopped while handling the action")]


async def test_a_handler_over_the_time_limit_is_answered_with_an_error(tmp_path: Path) -> None:
    channel, worker = FakeChannel(), ScriptedWorker(WorkerConfig(data_dir=tmp_path, timeout=1))
    Dispatcher(channel, worker).dispatch(action("slow"))
    await answered(channel, 1)
    assert channel.answers == [("error", "slow", "slow timed out after 1s")]


async def test_cleanup_handlers_are_limited_to_the_timeout(tmp_path: Path) -> None:
    class Hanging(FakeGraph):
        async def clean(self, graph: str, request: CleanRequest) -> int:
            await asyncio.Event().wait()
            return 0

    config = WorkerConfig(data_dir=tmp_path, timeout=1, cleanup_expired=True)
    handler = Worker(config, Hanging(), [FakeCollector()]).handler("cleanup_plan")
    assert handler is not None
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await handler(RecordingReporter())
    assert 0.9 < asyncio.get_running_loop().time() - started < 2


def test_handlers_follow_the_flags(tmp_path: Path) -> None:
    plain = Worker(WorkerConfig(data_dir=tmp_path), FakeGraph(), [FakeCollector()])
    assert plain.handler("collect") is not None
    assert plain.handler("cleanup_plan") is None and plain.handler("cleanup") is None
    full = Worker(WorkerConfig(data_dir=tmp_path, cleanup=True, cleanup_expired=True), FakeGraph(), [])
    assert full.handler("cleanup_plan") is not None and full.handler("cleanup") is not None


async def test_serve_subscribes_per_flags_and_stops_on_request(core_client: CoreClientFactory, tmp_path: Path) -> None:
    client = await core_client()
    url = str(client.make_url("")).rstrip("/")
    config = WorkerConfig(resotocore_uri=url, data_dir=tmp_path, cleanup_expired=True, timeout=123, subscriber_id="w")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(config, stop))
    async with asyncio.timeout(10):
        while True:
            response = await client.get("/subscriber/w")
            if response.status == 200 and (await client.get("/subscribers")).status == 200:
                subscriber = await response.json()
                if len(subscriber["subscriptions"]) == 2:
                    break
            await asyncio.sleep(0.05)
    assert set(subscriber["subscriptions"]) == {"collect", "cleanup_plan"}
    assert all(s["timeout"] == 123 for s in subscriber["subscriptions"].values())
    stop.set()
    async with asyncio.timeout(5):
        await serving


async def test_serve_without_cleanup_flags_drops_the_cleanup_subscriptions_of_an_earlier_run(
    core_client: CoreClientFactory, tmp_path: Path
) -> None:
    client = await core_client()
    registry = core_of(client).registry
    url = str(client.make_url("")).rstrip("/")
    sid = SubscriberId("resoto.worker")
    runs = [
        (
            WorkerConfig(resotocore_uri=url, data_dir=tmp_path, cleanup=True, cleanup_expired=True),
            {"collect", "cleanup_plan", "cleanup"},
        ),
        (WorkerConfig(resotocore_uri=url, data_dir=tmp_path), {"collect"}),  # restarted without the cleanup flags
    ]
    for config, expected in runs:
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(config, stop))
        await until(lambda: registry.is_connected(sid))  # the worker registers before it connects
        subscriber = registry.get(sid)
        assert subscriber is not None and set(subscriber.subscriptions) == expected
        stop.set()
        async with asyncio.timeout(5):
            await serving
        await until(lambda: not registry.is_connected(sid))
