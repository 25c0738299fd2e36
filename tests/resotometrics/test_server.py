"""The exporter in one process: updates and their answers, the web app, and serve() against a real core."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from prometheus_client.parser import text_string_to_metric_families

from resotocore.app import create_app as create_core_app
from resotocore.config import CoreConfig
from resotolib.client import CoreClient, CoreError, CoreUnreachable
from resotolib.graph import AggregateRequest, AggregateRow
from resotolib.protocol import Action, ActionData, TaskId
from resotometrics.config import MetricsConfig
from resotometrics.definition import MetricDefinition
from resotometrics.exporter import Exporter
from resotometrics.loader import load_definitions
from resotometrics.server import ActionHandler, serve
from resotometrics.update import UpdateFailed, Updater
from resotometrics.web import create_app
from resotoworker.collector import GraphBatch
from tests.resotometrics.support import only, parse_metrics
from tests.support import FakeClock

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEFINITIONS = [
    MetricDefinition(name="a_total", help="A.", labels={"cloud": "cloud"}),
    MetricDefinition(name="b_total", help="B."),
    MetricDefinition(name="c_bytes", help="C.", function="sum", path="reported.size", scale=2),
]


class FakeCore:
    """Answers aggregates with one row per query; can fail or hang on one metric's query."""

    def __init__(self) -> None:
        self.calls = 0
        self.value = 1
        self.fail_on: str | None = None
        self.error: Exception = CoreError(400, "invalid path")
        self.hang_on: str | None = None
        self.hanging = asyncio.Event()

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]:
        self.calls += 1
        path = request.functions[0].path
        name = {None: "a_total" if request.group_by else "b_total", "reported.size": "c_bytes"}[path]
        if name == self.hang_on:
            self.hanging.set()
            await asyncio.Event().wait()
        if name == self.fail_on:
            raise self.error
        return [AggregateRow(group=dict.fromkeys(request.group_by, "aws"), values={"value": self.value})]


class Answers:
    """A channel that records the answers."""

    def __init__(self) -> None:
        self.succeeded: list[Action] = []
        self.failed: list[tuple[Action, str]] = []

    async def done(self, action: Action) -> None:
        self.succeeded.append(action)

    async def error(self, action: Action, message: str) -> None:
        self.failed.append((action, message))


def action(task: str = "t1", message_type: str = "generate_metrics") -> Action:
    return Action(message_type=message_type, data=ActionData(task=TaskId(task), step="generate_metrics"))


def served(exporter: Exporter) -> dict[str, float]:
    samples = parse_metrics(exporter.render().decode())
    return {name: value for (name, _), value in samples.items() if not name.startswith("resotometrics_")}


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def exporter() -> Exporter:
    return Exporter(DEFINITIONS)


def updater(core: FakeCore, exporter: Exporter, time_limit: float = 5) -> Updater:
    return Updater(core, "resoto", exporter, time_limit, clock=lambda: AT)


async def test_update_swaps_in_a_complete_snapshot(core: FakeCore, exporter: Exporter) -> None:
    snapshot = await updater(core, exporter).update()
    assert exporter.snapshot is snapshot and snapshot.computed_at == AT
    assert served(exporter) == {"a_total": 1.0, "b_total": 1.0, "c_bytes": 2.0}
    assert core.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        CoreError(400, "invalid path"),
        CoreUnreachable("http://core", "ConnectionRefusedError"),
        CoreError(404, "Not Found"),  # not the core's "no graph": a wrong URI
    ],
    ids=["rejected", "unreachable", "not-found"],
)
async def test_failing_query_names_its_metric_and_keeps_the_old_snapshot(
    core: FakeCore, exporter: Exporter, error: Exception
) -> None:
    await updater(core, exporter).update()
    old = exporter.snapshot
    core.value, core.fail_on, core.error = 7, "b_total", error
    with pytest.raises(UpdateFailed) as caught:
        await updater(core, exporter).update()
    assert caught.value.metric == "b_total" and str(caught.value) == f"metric b_total: {error}"
    assert exporter.snapshot is old
    assert served(exporter) == {"a_total": 1.0, "b_total": 1.0, "c_bytes": 2.0}
    assert only(parse_metrics(exporter.render().decode()), "resotometrics_update_failures_total") == {frozenset(): 1.0}
    assert exporter.last_error == f"metric b_total: {error}"


async def test_slow_query_names_its_metric(core: FakeCore, exporter: Exporter) -> None:
    core.hang_on = "c_bytes"
    with pytest.raises(UpdateFailed, match=r"^metric c_bytes: the update took longer than 0.05s$"):
        await updater(core, exporter, time_limit=0.05).update()
    assert exporter.snapshot.computed_at is None


async def test_actions_are_answered(core: FakeCore, exporter: Exporter) -> None:
    answers = Answers()
    handler = ActionHandler(answers, updater(core, exporter))
    await handler.handle(action("t1"))
    core.fail_on = "a_total"
    await handler.handle(action("t2"))
    await handler.handle(action("t3", message_type="collect"))
    assert [a.data.task for a in answers.succeeded] == ["t1"]
    assert [(a.data.task, message) for a, message in answers.failed] == [
        ("t2", "metric a_total: 400: invalid path"),
        ("t3", "resotometrics does not handle collect"),
    ]
    assert handler.current is None and handler.idle.is_set()


async def test_stop_cancels_a_hanging_update_and_answers_it(
    core: FakeCore, exporter: Exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("resotometrics.server.STOP_GRACE", 0.05)
    core.hang_on = "a_total"
    answers = Answers()
    handler = ActionHandler(answers, updater(core, exporter, time_limit=60))
    actions: asyncio.Queue[Action] = asyncio.Queue()
    actions.put_nowait(action("t1"))

    async def stream() -> Any:
        while True:
            yield await actions.get()

    consumer = asyncio.get_running_loop().create_task(handler.consume(stream()))
    await asyncio.wait_for(core.hanging.wait(), 5)
    await handler.stop(consumer)
    assert consumer.cancelled()
    assert [(a.data.task, m) for a, m in answers.failed] == [("t1", "resotometrics stopped during the metrics update")]
    failures = only(parse_metrics(exporter.render().decode()), "resotometrics_update_failures_total")
    assert failures == {frozenset(): 0.0}  # a stop is not a failed update


async def test_scrapes_never_reach_the_core(core: FakeCore, exporter: Exporter, aiohttp_client: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(exporter, lambda: True))
    await updater(core, exporter).update()
    calls = core.calls
    for _ in range(5):
        response = await client.get("/metrics")
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        assert only(parse_metrics(await response.text()), "a_total") == {frozenset({("cloud", "aws")}): 1.0}
    assert core.calls == calls
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok" and health["core_connected"] is True and health["series"] == 3
    assert health["last_success"] == AT.isoformat()


async def test_serve_against_a_real_core(aiohttp_client: Any, tmp_path: Path, clock: FakeClock) -> None:
    """serve() wired up in process: subscribe, update on the action, answer done, serve the snapshot."""
    requests: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        requests[request.path.rsplit("/", 1)[-1] if request.path.startswith("/graph/") else "other"] += 1
        return await handler(request)

    core_app = create_core_app(CoreConfig(data_dir=tmp_path / "core", port=0), clock)
    core_app.middlewares.append(count)
    core: TestClient[Any, Any] = await aiohttp_client(core_app)
    core_url = str(core.make_url("")).rstrip("/")
    batch = GraphBatch("example", "acc-1")
    for n in range(3):
        batch.resource(
            "example_instance", "r1", f"i-{n}", instance_cores=2, instance_memory=4, instance_type="ex.small"
        )
    async with CoreClient(core_url) as client:
        await client.merge("resoto", batch.ndjson())

    async with exporter_serving(core_url) as url:
        assert (await run_metrics(core))["success"] is True
        aggregates = requests["aggregate"]
        assert aggregates == 11  # one query per built-in metric

        samples = parse_metrics(await get_text(f"{url}/metrics"))
        labels = frozenset({("cloud", "example"), ("account", "acc-1"), ("region", "r1"),
                            ("instance_type", "ex.small"), ("status", "")})  # fmt: skip
        assert only(samples, "resoto_instances_total") == {labels: 3.0}
        assert only(samples, "resoto_memory_bytes") == {labels: 12.0 * 2**30}
        assert only(samples, "resoto_accounts_total") == {frozenset({("cloud", "example")}): 1.0}
        assert requests["aggregate"] == aggregates  # the scrape did not reach the core


async def test_a_graph_that_does_not_exist_gives_empty_metrics(
    aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """Before the first collect (or once the graph is deleted) every metric is there without samples,
    and the update succeeds, instead of failing on the core's 404 at every run."""
    core: TestClient[Any, Any] = await aiohttp_client(create_core_app(CoreConfig(data_dir=tmp_path, port=0), clock))
    core_url = str(core.make_url("")).rstrip("/")
    names = {d.name for d in load_definitions(None)}
    async with exporter_serving(core_url) as url:
        async with CoreClient(core_url) as client:
            assert (await run_metrics(core))["success"] is True
            empty = await get_text(f"{url}/metrics")
            batch = GraphBatch("example", "acc-1")
            batch.resource("example_instance", "r1", "i-1", instance_cores=2, instance_type="ex.small")
            await client.merge("resoto", batch.ndjson())
            assert (await run_metrics(core))["success"] is True
            collected = parse_metrics(await get_text(f"{url}/metrics"))
            await client.delete_graph("resoto")
            assert (await run_metrics(core))["success"] is True
            deleted = await get_text(f"{url}/metrics")
        health = await get_json(f"{url}/health")
    for text in (empty, deleted):
        families = {f.name: f.samples for f in text_string_to_metric_families(text) if f.name in names}
        assert set(families) == names and not any(families.values()), families
    assert sum(only(collected, "resoto_instances_total").values()) == 1.0
    assert health["last_error"] is None and health["series"] == 0 and health["updates"] == 3
    assert only(parse_metrics(deleted), "resotometrics_update_failures_total") == {frozenset(): 0.0}


@asynccontextmanager
async def exporter_serving(core_url: str) -> AsyncIterator[str]:
    """The exporter served against the core at `core_url`, connected to its action channel; its URL."""
    config = MetricsConfig(resotocore_uri=core_url, web_port=0, timeout=30)
    stop = asyncio.Event()
    urls: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    server = asyncio.get_running_loop().create_task(serve(config, stop, urls.set_result))
    try:
        [url] = await asyncio.wait_for(urls, 10)
        await wait_until(lambda: connected(url))
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def run_metrics(core: TestClient[Any, Any]) -> dict[str, Any]:
    """Run the metrics workflow to its end; the task as the core shows it."""
    events = await core.ws_connect("/events?show=task_end")
    try:
        started = await (await core.post("/workflows/metrics/run")).json()
        async with asyncio.timeout(10):
            while (await events.receive_json())["data"]["task"] != started["task_id"]:
                pass
    finally:
        await events.close()
    return dict(await (await core.get(f"/tasks/{started['task_id']}")).json())


async def connected(url: str) -> bool:
    health = await get_json(f"{url}/health")
    return health["core_connected"] is True


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.text()


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    """Poll another party's state (nothing to await here) until it holds."""
    for _ in range(int(within / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within}s")
