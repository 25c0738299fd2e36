"""ActionSubscriber against a real core on loopback: actions, answers, reconnects, backoff, unsubscribe.

One test uses a scripted core instead, for the one case a real core cannot be made to produce on cue:
an answer lost on the wire, so the core asks again for an action that was already answered.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from resotocore.app import create_app
from resotocore.config import CoreConfig
from resotolib.client import CoreClient, CoreError
from resotolib.protocol import (
    Action,
    ActionData,
    Event,
    Message,
    Subscriber,
    SubscriberId,
    Subscription,
    TaskId,
    parse_message,
    serialize,
)
from resotolib.subscriber import ActionSubscriber, backoff
from tests.support import CoreClientFactory, FakeClock, core_of, free_ports, settle, subscribe, until

SUBSCRIPTIONS = [Subscription(message_type="collect", timeout=30), Subscription(message_type="post_collect")]


def fast(
    url: str, session: aiohttp.ClientSession, subscriptions: list[Subscription] = SUBSCRIPTIONS, exclusive: bool = False
) -> ActionSubscriber:
    """A subscriber with tiny backoffs, so reconnects take milliseconds."""
    return ActionSubscriber(
        url, "w", subscriptions, session=session, min_backoff=0.001, max_backoff=0.01, exclusive=exclusive
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def next_action(actions: AsyncIterator[Action]) -> Action:
    return await asyncio.wait_for(anext(actions), 5)


# ---- backoff --------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_below_a_capped_exponential() -> None:
    rng = random.Random(7)
    delays = [backoff(attempt, 0.5, 30.0, rng) for attempt in range(12) for _ in range(50)]
    caps = [min(30.0, 0.5 * 2**attempt) for attempt in range(12) for _ in range(50)]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays[-50:]) > 15  # jitter spreads over the whole range up to the cap ...
    assert min(delays[-50:]) < 15  # ... not only near it
    assert backoff(10_000, 0.5, 30.0, rng) <= 30.0  # huge attempt numbers neither overflow nor pass the cap
    assert [backoff(3, 0.5, 30.0, random.Random(1)) for _ in range(2)] == [backoff(3, 0.5, 30.0, random.Random(1))] * 2


# ---- against a real core --------------------------------------------------------------------------


async def live_core(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> tuple[TestClient[Any, Any], str, CoreClient]:
    """A core on loopback: its test client, its URL, and a CoreClient of it."""
    client = await core_client()
    url = str(client.server.make_url(""))
    return client, url, CoreClient(url, session=session)


async def test_action_is_yielded_answered_and_the_run_advances(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client, url, core = await live_core(core_client, session)
    async with fast(url, session) as subscriber:
        actions = aiter(subscriber)
        await subscriber.wait_connected()
        subscriber_json = await core.subscriber("w")
        assert subscriber_json is not None and set(subscriber_json.subscriptions) == {"collect", "post_collect"}
        task_id = (await core.run_workflow("collect"))["task_id"]
        action = await next_action(actions)
        assert (action.message_type, action.data) == ("collect", ActionData(task=task_id, step="collect"))
        await subscriber.progress(action, "eu-1", 1, 2, context=["example"], path=["example", "acc"])
        await subscriber.info(action, "half way", level="warning")
        await settle(core_of(client))
        assert (await core.task(task_id))["progress"]["w"]["progress"] == {
            "kind": "progress", "name": "eu-1", "current": 1, "total": 2, "path": ["example", "acc"]
        }  # fmt: skip
        await subscriber.done(action)
        following = await next_action(actions)
        assert (following.message_type, following.data.task) == ("post_collect", task_id)
        task = await core.task(task_id)
        assert (task["step"], task["waiting_for"]) == ("post_collect", ["w"])
        assert "progress" not in task  # what was reported in collect is not the progress of post_collect
        collect_step = next(s for s in task["steps"] if s["name"] == "collect")
        assert [(i["level"], i["message"]) for i in collect_step["info"]] == [("warning", "half way")]
        await subscriber.error(following, "report failed")
        await settle(core_of(client))
        ended = await core.task(task_id)
        assert (ended["status"], ended["error"]) == ("failed", "steps failed: post_collect")
        assert all(step["ended_at"] for step in ended["steps"]) and len(ended["steps"]) == 6  # on_error: continue
    assert subscriber.stats.connections == 1 and subscriber.stats.failures == 0


async def test_reconnect_gets_the_pending_action_again_without_yielding_it_twice(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client, url, core = await live_core(core_client, session)
    async with fast(url, session) as subscriber:
        actions = aiter(subscriber)
        await subscriber.wait_connected()
        task_id = (await core.run_workflow("collect"))["task_id"]
        action = await next_action(actions)
        await core_of(client).close_websockets()  # the core drops the channel; the action is still pending
        await until(lambda: subscriber.stats.connections == 2 and subscriber.stats.duplicates == 1)
        await subscriber.done(action)
        following = await next_action(actions)
        assert (following.message_type, following.data.task) == ("post_collect", task_id)
        assert subscriber.stats.failures == 1


async def test_reconnect_registers_every_subscription_again(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client, url, core = await live_core(core_client, session)
    async with fast(url, session) as subscriber:
        await subscriber.wait_connected()
        await core.delete_subscriber("w")  # the core forgets it (as after expiry); without them: 404 on connect
        await core_of(client).close_websockets()
        await until(lambda: subscriber.stats.connections == 2)
        again = await core.subscriber("w")
        assert again is not None and again.subscriptions == {s.message_type: s for s in SUBSCRIPTIONS}


async def test_answer_given_while_the_core_is_down_is_delivered_after_its_restart(
    aiohttp_client: Any, config: CoreConfig, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    first = await aiohttp_client(create_app(config, clock))
    url, port = str(first.server.make_url("")), first.server.port
    core = CoreClient(url, session=session)
    async with fast(url, session) as subscriber:
        actions = aiter(subscriber)
        await subscriber.wait_connected()
        task_id = (await core.run_workflow("collect"))["task_id"]
        action = await next_action(actions)
        await first.close()  # the core stops; the run's state stays in the data dir
        await until(lambda: not subscriber.connected and subscriber.stats.failures >= 2)
        await subscriber.info(action, "the core is down")
        await subscriber.done(action)
        assert (subscriber.pending_answers, subscriber.stats.dropped) == (1, 1)
        second = await aiohttp_client(create_app(config, clock), server_kwargs={"port": port})
        following = await next_action(actions)  # the outbox went first; the core resumed and moved on
        assert (following.message_type, following.data.task) == ("post_collect", task_id)
        assert (subscriber.pending_answers, subscriber.stats.connections) == (0, 2)
        assert (await core.task(task_id))["step"] == "post_collect"
        assert subscriber.stats.duplicates == 1  # the core re-sent collect on connect: not yielded again
        await second.close()


async def test_a_channel_held_by_another_connection_is_retried_until_it_is_free(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client = await core_client()
    url = str(client.server.make_url(""))
    other = await subscribe(client, "w", "collect")  # an older connection of the same subscriber id
    with capture_logs() as logs:
        async with fast(url, session) as subscriber:
            await until(lambda: subscriber.stats.failures >= 2)
            assert not subscriber.connected
            held = await CoreClient(url, session=session).subscriber("w")  # the holder's subscriptions stay
            assert held is not None and set(held.subscriptions) == {"collect"}
            await other.close()
            await asyncio.wait_for(subscriber.wait_connected(), 5)
    refused = [e for e in logs if e["event"] == "already_connected"]
    assert refused and all(e["reason"].startswith("429: ") and e["log_level"] == "warning" for e in refused)
    assert not [e for e in logs if e["event"] == "core_unreachable"]


async def test_an_exclusive_subscriber_ends_when_its_id_is_taken_before_it_ever_connected(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client = await core_client()
    url = str(client.server.make_url(""))
    other = await subscribe(client, "w", "collect")  # another process owns the id
    with capture_logs() as logs:
        subscriber = fast(url, session, exclusive=True)
        async with subscriber:
            assert [a async for a in subscriber] == []  # the iteration ends: nothing to wait for
    assert subscriber.refused is not None and "'w' is already connected: 429" in subscriber.refused
    assert subscriber.stats.connections == 0 and subscriber.stats.failures == 0
    held = await CoreClient(url, session=session).subscriber("w")
    assert held is not None and set(held.subscriptions) == {"collect"}
    assert [e["log_level"] for e in logs if e["event"] == "already_connected"] == ["error"]
    await other.close()


async def test_an_exclusive_subscriber_that_was_connected_waits_for_its_id_like_any(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client = await core_client()
    url = str(client.server.make_url(""))
    subscriber = fast(url, session, exclusive=True)
    async with subscriber:
        await asyncio.wait_for(subscriber.wait_connected(), 5)
        await core_of(client).close_websockets()  # the core drops the channel; our old connection may linger
        await until(lambda: subscriber.stats.connections == 2)
    assert subscriber.refused is None


async def test_a_registration_slipping_in_before_the_connect_is_undone_once_connected(
    core_client: CoreClientFactory, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await core_client()
    url = str(client.server.make_url(""))
    other = CoreClient(url, session=session)
    subscriber = fast(url, session, exclusive=True)
    register = subscriber._register

    async def another_process_registers_right_after(connected: bool = False) -> bool:
        registered = await register(connected)
        if not connected:  # a second hook with the same id, started at the same moment, registers now
            await other.set_subscriptions("w", [Subscription(message_type="cleanup")], unless_connected=True)
        return registered

    monkeypatch.setattr(subscriber, "_register", another_process_registers_right_after)
    async with subscriber:
        await asyncio.wait_for(subscriber.wait_connected(), 5)  # connected: registered once more too
        held = await other.subscriber("w")
        assert held is not None and set(held.subscriptions) == {"collect", "post_collect"}  # the holder's own


async def test_an_exclusive_subscriber_retries_a_refused_handshake(
    core_client: CoreClientFactory, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 429 to the handshake says nothing about whom (the id, or a flood of new tokens): the next
    # registration's answer tells, so the subscriber tries again
    client = await core_client()
    url = str(client.server.make_url(""))
    subscriber = fast(url, session, exclusive=True)
    websocket = subscriber._client.websocket
    refusals = [CoreError(429, "websocket /subscriber/w/handle refused: Too Many Requests")]

    def refused_once(*path: str, **kwargs: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return websocket(*path, **kwargs)

    monkeypatch.setattr(subscriber._client, "websocket", refused_once)
    async with subscriber:
        await asyncio.wait_for(subscriber.wait_connected(), 5)
    assert subscriber.refused is None and subscriber.stats.failures == 1


async def test_unsubscribe_removes_the_subscriptions_and_stops_reconnecting(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    client, url, core = await live_core(core_client, session)
    async with fast(url, session) as subscriber:
        await subscriber.wait_connected()
        await core.add_subscription("w", "cleanup")  # registered by someone else: left alone
        await subscriber.unsubscribe()
        remaining = await core.subscriber("w")
        assert remaining is not None and set(remaining.subscriptions) == {"cleanup"}
        await core_of(client).close_websockets()
        assert [a async for a in subscriber] == []  # the iteration ends instead of reconnecting
        assert subscriber.stats.connections == 1


async def test_registering_again_leaves_the_core_only_this_subscribers_subscriptions(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    _, url, core = await live_core(core_client, session)
    async with fast(url, session, [Subscription(message_type="a"), Subscription(message_type="b")]) as earlier:
        await earlier.wait_connected()
    registered = await core.subscriber("w")
    assert registered is not None and set(registered.subscriptions) == {"a", "b"}
    only_a = Subscription(message_type="a", timeout=45, wait_for_completion=False)
    async with fast(url, session, [only_a]) as later:  # the same id, run again with fewer message types
        await later.wait_connected()
        assert await core.subscriber("w") == Subscriber(id=SubscriberId("w"), subscriptions={"a": only_a})
        assert await core.subscribers() == [Subscriber(id=SubscriberId("w"), subscriptions={"a": only_a})]


async def test_a_run_waiting_for_a_message_type_this_subscriber_dropped_moves_on(
    core_client: CoreClientFactory, session: aiohttp.ClientSession
) -> None:
    _, url, core = await live_core(core_client, session)
    async with fast(url, session) as earlier:  # collect and post_collect
        actions = aiter(earlier)
        await earlier.wait_connected()
        task_id = (await core.run_workflow("collect"))["task_id"]
        assert (await next_action(actions)).message_type == "collect"  # never answered
    async with fast(url, session, [Subscription(message_type="post_collect")]) as later:
        following = await next_action(aiter(later))  # collect no longer waits for "w": the run went on
        assert (following.message_type, following.data.task) == ("post_collect", task_id)
    collect_step = next(s for s in (await core.task(task_id))["steps"] if s["name"] == "collect")
    assert collect_step["subscribers"]["w"]["outcome"] == "gone"


async def test_an_unreachable_core_is_retried_with_warnings_and_the_iteration_survives(
    session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    with capture_logs() as logs:
        subscriber = fast(url, session)
        actions = aiter(subscriber)
        waiting = asyncio.ensure_future(anext(actions, None))
        await until(lambda: subscriber.stats.failures >= 3)
        assert not waiting.done()
        await subscriber.close()
        assert await asyncio.wait_for(waiting, 5) is None
    warnings = [e for e in logs if e["event"] == "core_unreachable"]
    assert len(warnings) >= 3
    assert all(e["log_level"] == "warning" and e["url"] == url and 0 <= e["retry_in"] <= 0.01 for e in warnings)
    assert url in warnings[0]["reason"]


# ---- against a scripted core ----------------------------------------------------------------------


class ScriptedCore:
    """Sends the same frames on every connect and drops the first connection once an answer arrives."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = frames
        self.received: list[Message] = []
        self.connections = 0
        self.answers = 0
        self.second_answer = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/subscriber/{id}", self.subscribe)
        app.router.add_get("/subscriber/{id}/handle", self.handle)
        return app

    async def subscribe(self, request: web.Request) -> web.Response:
        subscriptions = TypeAdapter(list[Subscription]).validate_json(await request.read())
        subscriber = Subscriber(
            id=SubscriberId(request.match_info["id"]),
            subscriptions={s.message_type: s for s in subscriptions},
        )
        return web.json_response(text=subscriber.model_dump_json())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        for frame in self.frames:
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
        async for msg in ws:
            message = parse_message(msg.data)
            self.received.append(message)
            if message.kind == "action_done":
                self.answers += 1
                if self.answers == 2:
                    self.second_answer.set()
                if self.connections == 1:
                    await ws.close()  # as if the answer had been lost with the connection
        return ws


async def test_an_answered_action_asked_again_gets_the_stored_answer_and_odd_frames_are_ignored(
    aiohttp_client: Any, session: aiohttp.ClientSession
) -> None:
    action = Action(message_type="collect", data=ActionData(task=TaskId("t1"), step="collect"))
    scripted = ScriptedCore(
        [
            "{not json",
            '{"kind":"unknown","message_type":"x","data":{}}',
            serialize(Event(message_type="task_started", data={})),
            b"\x00binary",
            serialize(action),
        ]
    )
    server = await aiohttp_client(scripted.app())
    subscriber = fast(str(server.server.make_url("")), session, SUBSCRIPTIONS[:1])
    async with subscriber:
        actions = aiter(subscriber)
        assert await next_action(actions) == action
        await subscriber.info(action, "working")
        await subscriber.done(action)
        await asyncio.wait_for(scripted.second_answer.wait(), 5)
    assert [a async for a in actions] == []  # closed: nothing else was yielded, the action not twice
    assert [m.kind for m in scripted.received] == ["action_info", "action_done", "action_done"]
    assert scripted.received[1] == scripted.received[2]
    stats = subscriber.stats
    assert (stats.connections, stats.duplicates, stats.answers_resent) == (2, 1, 1)


async def test_close_ends_every_iteration(core_client: CoreClientFactory, session: aiohttp.ClientSession) -> None:
    client = await core_client()
    subscriber = fast(str(client.server.make_url("")), session)
    first, second = aiter(subscriber), aiter(subscriber)
    waiting = [asyncio.ensure_future(anext(it, None)) for it in (first, second)]
    await subscriber.wait_connected()
    await subscriber.close()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [None, None]
    assert not session.closed
    await until(lambda: core_of(client).registry.connected == 0)


def test_a_subscriber_needs_a_subscription() -> None:
    with pytest.raises(ValueError, match="at least one subscription"):
        ActionSubscriber("http://127.0.0.1:1", "w", [])
