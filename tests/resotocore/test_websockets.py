"""The action channel and the event stream: real websockets against a core on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from structlog.testing import capture_logs

from resotocore.config import CoreConfig
from tests.support import CoreClientFactory, answer, core_of, receive_json, settle, subscribe


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
    return ws.close_code, str(msg.extra or "")


async def test_handle_is_404_without_subscriptions(core_client: CoreClientFactory) -> None:
    client = await core_client()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/subscriber/nobody/handle")
    assert info.value.status == 404


async def test_second_connection_is_429_and_checked_before_404(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await subscribe(client, "w", "collect")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/subscriber/w/handle")
    assert info.value.status == 429
    await client.delete("/subscriber/w/collect")  # no subscriptions left, still connected: 429, not 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/subscriber/w/handle")
    assert info.value.status == 429
    await ws.close()


async def test_pending_actions_are_sent_on_connect_and_resent_on_reconnect(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await client.post("/subscriber/w/collect")
    task_id = (await (await client.post("/workflows/collect/run")).json())["task_id"]
    ws = await client.ws_connect("/subscriber/w/handle")
    action = await receive_json(ws)
    assert action["data"] == {"task": task_id, "step": "collect"}
    await ws.close()
    ws = await client.ws_connect("/subscriber/w/handle")
    assert await receive_json(ws) == action
    await answer(ws, action)
    await settle(core_of(client))
    assert (await (await client.get(f"/tasks/{task_id}")).json())["status"] == "succeeded"
    await ws.close()


async def test_events_stream_shows_the_run_and_filters_by_show(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client()
    everything = await events_ws(client)
    only_end = await events_ws(client, "task_end%2Cnothing")  # URL-encoded comma, as Resoto's client sends it
    worker = await subscribe(client, "w", "generate_metrics")
    task_id = (await (await client.post("/workflows/metrics/run")).json())["task_id"]
    action = await receive_json(worker)
    await answer(worker, action)
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["message_type"] != "task_end":
        seen.append(await receive_json(everything))
    assert [(m["kind"], m["message_type"]) for m in seen] == [
        ("event", "task_started"),
        ("event", "step_started"),
        ("event", "step_end"),
        ("event", "step_started"),
        ("action", "generate_metrics"),
        ("action_done", "generate_metrics"),
        ("event", "step_end"),
        ("event", "step_started"),
        ("event", "step_end"),
        ("event", "task_end"),
    ]
    assert seen[5]["data"]["subscriber_id"] == "w"
    assert seen[0]["data"] == {"task": task_id, "workflow": "metrics", "trigger": "manual"}
    end = await receive_json(only_end)
    assert end == {
        "kind": "event",
        "message_type": "task_end",
        "data": {"task": task_id, "workflow": "metrics", "success": True, "status": "succeeded"},
    }


@pytest.mark.parametrize("show", ["*", "task_end%2C*", "%2A"])
async def test_show_with_a_star_shows_everything(core_client: CoreClientFactory, events_ws: Any, show: str) -> None:
    client = await core_client()
    observer = await events_ws(client, show)  # "*" is Resoto's name for every message type
    await (await events_ws(client, "nothing")).send_json({"kind": "event", "message_type": "hello", "data": {}})
    assert (await receive_json(observer))["message_type"] == "hello"


async def test_blank_frames_are_skipped(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client()
    observer = await events_ws(client, "hello")
    sender = await events_ws(client, "nothing")
    for blank in ("", " ", "\n", "\r\n\t"):  # Resoto's core skips them as well: no protocol error
        await sender.send_str(blank)
    await sender.send_json({"kind": "event", "message_type": "hello", "data": {}})
    assert (await receive_json(observer))["message_type"] == "hello"
    assert not sender.closed


async def test_an_event_sent_by_a_client_starts_the_workflow(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client()
    observer = await events_ws(client, "task_started")
    sender = await events_ws(client, "nothing")
    with capture_logs() as logs:
        await sender.send_json({"kind": "event", "message_type": "start_collect_and_cleanup_workflow", "data": {}})
        started = await receive_json(observer)
        await settle(core_of(client))
    assert started["data"]["workflow"] == "collect_and_cleanup"
    assert started["data"]["trigger"] == "event:start_collect_and_cleanup_workflow"
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert {"event": "event_trigger", "message_type": "start_collect_and_cleanup_workflow"}.items() <= next(
        e for e in logs if e["event"] == "event_trigger"
    ).items()


async def test_answers_on_the_events_socket_are_accepted(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client()
    await client.post("/subscriber/w/generate_metrics")
    task_id = (await (await client.post("/workflows/metrics/run")).json())["task_id"]
    sender = await events_ws(client, "nothing")
    data = {"task": task_id, "step": "generate_metrics", "subscriber_id": "w"}
    await sender.send_json({"kind": "action_done", "message_type": "generate_metrics", "data": data})
    await settle(core_of(client))
    assert (await (await client.get(f"/tasks/{task_id}")).json())["status"] == "succeeded"


async def test_late_progress_and_info_and_unknown_answers_keep_the_connection(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await subscribe(client, "w", "generate_metrics", "post_generate_metrics")
    task_id = (await (await client.post("/workflows/metrics/run")).json())["task_id"]
    action = await receive_json(ws)
    await answer(ws, action)
    progress = {
        "task": task_id, "step": "generate_metrics", "context": [], "at": "2024-01-01T00:00:00Z",
        "progress": {"kind": "progress", "name": "x", "current": 1, "total": 1},
    }  # fmt: skip
    await ws.send_json({"kind": "action_progress", "message_type": "generate_metrics", "data": progress})
    info = {"task": task_id, "step": "generate_metrics", "level": "info", "message": "done late"}
    await ws.send_json({"kind": "action_info", "message_type": "generate_metrics", "data": info})
    with capture_logs() as logs:
        await answer(ws, {"message_type": "generate_metrics", "data": {"task": "no-such-task", "step": "x"}})
        await answer(ws, action)  # duplicate
        next_action = await receive_json(ws)
    ignored = [(e["task"], e["subscriber_id"], e["reason"]) for e in logs if e["event"] == "answer_ignored"]
    assert ignored == [
        ("no-such-task", "w", "no such running task"),
        (task_id, "w", "answer for step 'generate_metrics', current step is 'post_generate_metrics'"),
    ] and all(e["log_level"] == "warning" for e in logs if e["event"] == "answer_ignored")
    assert next_action["message_type"] == "post_generate_metrics"
    await answer(ws, next_action)
    await settle(core_of(client))
    run = await (await client.get(f"/tasks/{task_id}")).json()
    assert run["status"] == "succeeded"
    assert [i["message"] for i in run["steps"][1]["info"]] == ["done late"]
    assert not ws.closed


async def test_tasks_show_each_subscribers_progress_of_the_current_step_merged(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await subscribe(client, "w", "collect", "post_collect")
    task_id = (await (await client.post("/workflows/collect/run")).json())["task_id"]
    action = await receive_json(ws)

    async def report(step: str, context: list[str], name: str, current: int) -> None:
        progress = {"kind": "progress", "name": name, "current": current, "total": 4}
        data = {"task": task_id, "step": step, "context": context, "progress": progress, "at": "2024-01-01T00:00:00Z"}
        await ws.send_json({"kind": "action_progress", "message_type": step, "data": data})

    async def shown() -> Any:
        await settle(core_of(client))
        return (await (await client.get(f"/tasks/{task_id}")).json()).get("progress", {}).get("w")

    await report("collect", ["aws"], "acc1", 1)
    assert (await shown())["progress"] == {"kind": "progress", "name": "acc1", "current": 1, "total": 4}
    await report("collect", ["aws"], "acc2", 4)
    await report("collect", ["aws"], "acc1", 2)  # one message per account, as Resoto's worker reports
    assert (await shown())["progress"] == {
        "kind": "tree", "name": "collect", "parts": [
            {"kind": "progress", "name": "acc1", "current": 2, "total": 4, "path": ["aws"]},
            {"kind": "progress", "name": "acc2", "current": 4, "total": 4, "path": ["aws"]},
        ],
    }  # fmt: skip
    await answer(ws, action)
    assert (await receive_json(ws))["message_type"] == "post_collect"
    assert await shown() is None  # a new step: nothing reported yet
    await report("collect", ["aws"], "acc2", 4)  # late, from the step before
    assert await shown() is None


BAD_FRAMES = [
    ("{nope", "malformed JSON"),
    ('{"kind":"shout","message_type":"x","data":{}}', "unknown message kind"),
    ('{"kind":"action","message_type":"collect","data":{"task":"t","step":"collect"}}', "must not send 'action'"),
    ('{"kind":"action_done","message_type":"collect","data":{}}', "data.task"),
]


@pytest.mark.parametrize(("frame", "reason"), BAD_FRAMES)
@pytest.mark.parametrize("channel", ["handle", "events"])
async def test_bad_frames_close_that_socket_and_change_nothing(
    core_client: CoreClientFactory, events_ws: Any, channel: str, frame: str, reason: str
) -> None:
    client = await core_client()
    core = core_of(client)
    worker = await subscribe(client, "w", "collect")
    task_id = (await (await client.post("/workflows/collect/run")).json())["task_id"]
    action = await receive_json(worker)
    before = await core.store.run(task_id)
    bad = await subscribe(client, "bad", "other") if channel == "handle" else await events_ws(client)
    await bad.send_str(frame)
    code, message = await closed_with(bad)
    assert code == WSCloseCode.POLICY_VIOLATION
    assert reason in message
    await settle(core)
    assert await core.store.run(task_id) == before
    # the core and the other socket carry on
    await answer(worker, action)
    await settle(core)
    assert (await (await client.get(f"/tasks/{task_id}")).json())["status"] == "succeeded"
    assert (await client.get("/system/ping")).status == 200


async def test_binary_and_oversized_frames_close_the_socket(core_client: CoreClientFactory, config: CoreConfig) -> None:
    client = await core_client(config.model_copy(update={"max_frame_size": 2048}))
    ws = await subscribe(client, "w", "collect")
    await ws.send_bytes(b"\x00\x01")
    assert (await closed_with(ws))[0] == WSCloseCode.UNSUPPORTED_DATA
    ws = await client.ws_connect("/subscriber/w/handle")
    await ws.send_str('{"kind":"event","message_type":"x","data":{"pad":"' + "x" * 4096 + '"}}')
    assert (await closed_with(ws))[0] == WSCloseCode.MESSAGE_TOO_BIG
    assert (await client.get("/system/ping")).status == 200


async def test_a_listener_that_does_not_keep_up_is_closed_and_others_are_unaffected(
    core_client: CoreClientFactory, config: CoreConfig, events_ws: Any
) -> None:
    client = await core_client(config.model_copy(update={"queue_size": 5}))
    core = core_of(client)
    slow = await events_ws(client, "noise")
    other = await events_ws(client, "signal")
    for i in range(20):  # emitted within one tick: the writer cannot drain in between
        core.engine.emit_event("noise", {"i": i})
    core.engine.emit_event("signal", {})
    code, message = await closed_with(slow)
    assert code == WSCloseCode.TRY_AGAIN_LATER and "too slow" in message
    assert (await receive_json(other))["message_type"] == "signal"
    metrics = await (await client.get("/metrics")).text()
    assert 'resotocore_queue_overflows_total{channel="events"} 1.0' in metrics


async def test_a_step_starting_during_the_handshake_sends_its_action_once(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await core_client()
    assert (await client.post("/subscriber/w/generate_metrics")).status == 200
    original = web.WebSocketResponse.prepare

    async def prepare_while_a_run_starts(self: web.WebSocketResponse, request: web.BaseRequest) -> Any:
        await core_of(client).engine.trigger("metrics", "manual")  # the step starts mid-handshake
        return await original(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", prepare_while_a_run_starts)
    ws = await client.ws_connect("/subscriber/w/handle")
    action = await receive_json(ws)
    assert action["message_type"] == "generate_metrics"
    with pytest.raises(TimeoutError):
        await receive_json(ws, within=0.3)  # not a second time
    await ws.close()


async def test_a_long_unicode_close_reason_stays_valid_utf8(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await client.ws_connect("/events")
    await ws.send_str('{"kind": "x' + "é" * 200 + '", "message_type": "x", "data": {}}')  # cut mid-character
    code, message = await closed_with(ws)  # an invalid UTF-8 reason would be a client-side error here
    assert code == WSCloseCode.POLICY_VIOLATION and message.startswith("unknown message kind")
    assert len(message.encode()) <= 120
