"""CoreClient against a real core on loopback: bus, workflows, tasks, events, graph, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from resotocore.config import CoreConfig
from resotocore.web import auth
from resotolib.client import CoreClient, CoreError, CoreUnreachable
from resotolib.graph import (
    AggregateFunction,
    AggregateRequest,
    CleanRequest,
    Edge,
    Filter,
    Node,
    NodePatch,
    SearchRequest,
)
from resotolib.protocol import Event, Subscription
from tests.support import CoreClientFactory, core_of, free_ports, until


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def core(core_client: CoreClientFactory, session: aiohttp.ClientSession) -> AsyncIterator[CoreClient]:
    client = await core_client()
    async with CoreClient(str(client.server.make_url("")), session=session) as core:
        yield core


# ---- bus ------------------------------------------------------------------------------------------


async def test_subscriptions_are_added_listed_and_removed(core: CoreClient) -> None:
    added = await core.add_subscription("w1", "collect", timeout=30, wait_for_completion=False)
    assert added.subscriptions == {
        "collect": Subscription(message_type="collect", timeout=30, wait_for_completion=False)
    }
    await core.add_subscription("w1", "cleanup")
    await core.add_subscription("w2", "collect")
    assert await core.subscriber("w1") == await core.add_subscription("w1", "cleanup")
    assert [s.id for s in await core.subscribers()] == ["w1", "w2"]
    removed = await core.remove_subscription("w1", "collect")
    assert set(removed.subscriptions) == {"cleanup"}
    await core.delete_subscriber("w1")
    assert await core.subscriber("w1") is None
    await core.delete_subscriber("w1")  # unknown: nothing happens
    assert [s.id for s in await core.subscribers()] == ["w2"]


async def test_set_subscriptions_makes_the_list_the_whole_set_or_changes_nothing(core: CoreClient) -> None:
    await core.add_subscription("w1", "collect")
    await core.add_subscription("w1", "cleanup")
    wanted = [Subscription(message_type="collect", timeout=30), Subscription(message_type="post_collect")]
    replaced = await core.set_subscriptions("w1", wanted)
    assert replaced.subscriptions == {s.message_type: s for s in wanted}
    assert await core.subscriber("w1") == replaced
    with pytest.raises(CoreError) as refused:
        await core.set_subscriptions("w1", [Subscription(message_type="collect"), Subscription(message_type="a b")])
    assert refused.value.status == 400 and "a b" in refused.value.message
    assert await core.subscriber("w1") == replaced
    assert (await core.set_subscriptions("w1", [])).subscriptions == {}
    assert await core.subscriber("w1") is None


# ---- workflows and tasks ----------------------------------------------------------------------------


async def test_run_workflow_answers_started_queued_and_skipped_without_raising(core: CoreClient) -> None:
    await core.add_subscription("w", "collect")  # never connects: the run waits in step collect
    started = await core.run_workflow("collect")
    assert started["status"] == "started" and started["task_id"]
    assert (await core.run_workflow("collect"))["status"] == "queued"
    skipped = await core.run_workflow("collect")
    assert skipped["status"] == "skipped" and skipped["error"]


async def test_workflows_tasks_cancel_and_history(core: CoreClient) -> None:
    assert {w["id"] for w in await core.workflows()} == {"collect_and_cleanup", "collect", "cleanup", "metrics"}
    await core.add_subscription("w", "collect")
    task_id = (await core.run_workflow("collect"))["task_id"]
    assert [t["id"] for t in await core.tasks()] == [task_id]
    task = await core.task(task_id)
    assert (task["step"], task["waiting_for"]) == ("collect", ["w"])
    cancelled = await core.cancel_task(task_id)
    assert cancelled["status"] == "cancelled"
    with pytest.raises(CoreError) as info:
        await core.cancel_task(task_id)
    assert info.value.status == 409 and "already ended" in info.value.message
    page = await core.runs("collect", limit=1)
    assert (page["total"], page["limit"], [r["id"] for r in page["runs"]]) == (1, 1, [task_id])


# ---- errors ---------------------------------------------------------------------------------------


async def test_error_answers_raise_core_error_with_the_core_message(core: CoreClient) -> None:
    with pytest.raises(CoreError) as info:
        await core.task("nope")
    assert (info.value.status, info.value.message) == (404, "no task 'nope'")
    assert str(info.value) == "404: no task 'nope'"
    with pytest.raises(CoreError) as info:
        await core.add_subscription("w", "collect", timeout=0)
    assert info.value.status == 400 and "invalid timeout 0" in info.value.message
    with pytest.raises(CoreError) as info:
        await core.runs("collect", limit=0)
    assert info.value.status == 400 and "invalid limit" in info.value.message
    with pytest.raises(CoreError) as info:
        await core.run_workflow("nope")
    assert info.value.status == 404
    with pytest.raises(CoreError) as info:
        async with core.websocket("subscriber", "nobody", "handle"):
            pass
    assert info.value.status == 404 and "/subscriber/nobody/handle" in info.value.message
    await core.ping()


async def test_no_core_listening_raises_core_unreachable_naming_the_url(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    async with CoreClient(url, session=session, request_timeout=5) as core:
        for call in (core.workflows(), core.subscriber("w"), core.send_event("e")):
            with pytest.raises(CoreUnreachable) as info:
                await call
            assert info.value.status == 0 and url in str(info.value) and info.value.url == url
            assert isinstance(info.value, CoreError)


async def test_client_closes_only_the_session_it_created(session: aiohttp.ClientSession) -> None:
    async with CoreClient("http://127.0.0.1:1", session=session):
        pass
    assert not session.closed
    own = CoreClient("http://127.0.0.1:1")
    with pytest.raises(CoreUnreachable):
        await own.ping()
    await own.close()
    await own.close()


# ---- events ---------------------------------------------------------------------------------------


async def test_events_stream_and_send_event_start_a_workflow(core_client: CoreClientFactory) -> None:
    client = await core_client()
    async with CoreClient(str(client.server.make_url(""))) as core:
        stream = core.events(show=["task_started", "task_end"])
        first = asyncio.ensure_future(anext(stream))
        await until(lambda: core_of(client).bus.listeners == 1)
        await core.send_event("start_metrics_workflow", {"by": "test"})
        started = await asyncio.wait_for(first, 5)
        assert isinstance(started, Event) and started.message_type == "task_started"
        ended = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(ended, Event) and ended.message_type == "task_end" and ended.data["success"] is True
        assert ended.data["workflow"] == "metrics"
        await stream.aclose()
        await until(lambda: core_of(client).bus.listeners == 0)


async def test_events_stream_ends_when_the_core_closes_it(core_client: CoreClientFactory) -> None:
    client = await core_client()
    async with CoreClient(str(client.server.make_url(""))) as core:
        stream = core.events()
        first = asyncio.ensure_future(anext(stream, None))
        await until(lambda: core_of(client).bus.listeners == 1)
        await core_of(client).close_websockets()
        assert await asyncio.wait_for(first, 5) is None
        assert (stream.close_code, stream.close_reason) == (aiohttp.WSCloseCode.GOING_AWAY, "core is shutting down")


async def test_an_event_stream_closed_for_want_of_a_token_is_refused_access(
    core_client: CoreClientFactory, config: CoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "FIRST_FRAME_TIMEOUT", 0.2)
    client = await core_client(config.model_copy(update={"psk": "sekrit"}))
    async with CoreClient(str(client.server.make_url(""))) as core:
        stream = core.events()
        with pytest.raises(CoreError) as info:
            await asyncio.wait_for(anext(stream), 5)
    assert (info.value.status, info.value.message) == (401, "authorization required: no authorization frame in time")
    assert stream.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_an_event_sent_without_a_token_to_a_core_that_wants_one_is_an_error(
    core_client: CoreClientFactory, config: CoreConfig
) -> None:
    client = await core_client(config.model_copy(update={"psk": "sekrit"}))
    url = str(client.server.make_url(""))
    async with CoreClient(url) as without_token, CoreClient(url, psk="sekrit") as with_token:
        with pytest.raises(CoreError) as info:
            await without_token.send_event("start_metrics_workflow")
        assert info.value.status == 401 and info.value.message.startswith("authorization required")
        await with_token.send_event("start_metrics_workflow")  # taken: the run starts (and ends: nobody waits)
        async with asyncio.timeout(5):
            while (await with_token.runs("metrics"))["total"] == 0:  # noqa: ASYNC110 - polled over HTTP
                await asyncio.sleep(0.02)
        assert (await with_token.runs("metrics"))["total"] == 1  # one run: the refused event started none


# ---- graph ----------------------------------------------------------------------------------------


def node(nid: str, kind: str, **reported: Any) -> str:
    return Node(id=nid, reported={"kind": kind, "id": nid, "name": nid, **reported}).model_dump_json()


def edge(from_id: str, to_id: str, edge_type: str = "default") -> str:
    return Edge.model_validate({"from": from_id, "to": to_id, "edge_type": edge_type}).model_dump_json(by_alias=True)


INSTANCES = 2000  # well beyond one 64 KiB chunk of the streamed body


async def collect_lines() -> AsyncIterator[str]:
    yield node("cloud", "cloud")
    yield node("acc", "account")
    for i in range(INSTANCES):
        yield node(f"i-{i}", "instance", cores=i % 4, region="eu-1")
    yield edge("cloud", "acc")
    for i in range(INSTANCES):
        yield edge("acc", f"i-{i}")


async def test_merge_streams_ndjson_and_search_streams_nodes_then_edges(core: CoreClient) -> None:
    result = await core.merge("resoto", collect_lines())
    assert (result.created, result.updated, result.deleted) == (INSTANCES + 2, 0, 0)
    again = await core.merge("resoto", [node("cloud", "cloud"), node("acc", "account", name="renamed")])
    assert (again.updated, again.unchanged) == (1, 1)
    assert await core.graphs() == ["resoto"]
    found = [item async for item in core.search("resoto", SearchRequest(with_edges="default"))]
    nodes = [n for n in found if isinstance(n, Node)]
    edges = [e for e in found if isinstance(e, Edge)]
    assert len(nodes) == INSTANCES + 2 and len(edges) == INSTANCES + 1
    assert found[: len(nodes)] == nodes  # nodes first, then edges
    assert {(e.from_id, e.edge_type) for e in edges} == {("cloud", "default"), ("acc", "default")}
    limited = SearchRequest(filter=Filter(kinds=["instance"]), limit=3)
    assert [n.id for n in [x async for x in core.search("resoto", limited)] if isinstance(n, Node)] == [
        "i-0",
        "i-1",
        "i-10",
    ]


async def test_search_can_stop_early_without_reading_the_rest(core: CoreClient) -> None:
    await core.merge("resoto", collect_lines())
    stream = core.search("resoto", SearchRequest())
    assert isinstance(await anext(stream), Node)
    await stream.aclose()
    assert await core.graphs() == ["resoto"]  # the client still works


async def test_aggregate_clean_patch_and_delete(core: CoreClient) -> None:
    await core.merge("resoto", collect_lines())
    count = AggregateFunction.model_validate({"function": "count", "as": "n"})
    rows = await core.aggregate("resoto", AggregateRequest(group_by=["kind"], functions=[count]))
    assert {(r.group["kind"], r.values["n"]) for r in rows} == {("cloud", 1), ("account", 1), ("instance", INSTANCES)}
    marked = await core.clean("resoto", CleanRequest(filter=Filter(ids=["i-1", "i-2"]), reason="test"))
    assert marked == 2
    patched = await core.patch_nodes("resoto", [NodePatch(id="i-1", cleaned=True), NodePatch(id="gone", clean=True)])
    assert patched == {"updated": 1, "missing": ["gone"]}
    cleaned = SearchRequest(filter=Filter(cleaned=True))
    assert [n.id async for n in core.search("resoto", cleaned) if isinstance(n, Node)] == ["i-1"]
    assert await core.delete_graph("resoto") == INSTANCES + 2
    assert await core.graphs() == []


async def test_graph_errors_carry_the_core_message(core: CoreClient) -> None:
    with pytest.raises(CoreError) as info:
        await core.merge("resoto", [node("a", "cloud"), "{not json"])
    assert info.value.status == 400 and "line 2" in info.value.message
    with pytest.raises(CoreError) as info:
        [x async for x in core.search("nothing", SearchRequest())]
    assert info.value.status == 404 and "nothing" in info.value.message
    with pytest.raises(CoreError) as info:
        await core.delete_graph("nothing")
    assert info.value.status == 404


async def test_merge_takes_a_plain_iterable_too(core: CoreClient) -> None:
    lines = (node(f"n-{i}", "thing") for i in range(10))
    assert (await core.merge("other", lines)).created == 10
