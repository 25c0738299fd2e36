"""The engine through the HTTP API, with a fake clock: timeouts, triggers, surpass, cancel, recovery."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from resotocore.bus.subscribers import STARTUP_GRACE
from resotocore.config import CoreConfig
from resotocore.db.store import Changes
from resotocore.scheduler.cron import MAX_COUNTED_SLOTS, Schedule, count_missed
from resotocore.workflow import engine as engine_module
from resotocore.workflow import machine as m
from resotocore.workflow.engine import _first_changed
from resotocore.workflow.model import EventTrigger, OnError, OnSurpass, Step, Workflow
from resotolib.protocol import ActionDone, SubscriberId, TaskId, parse_message
from tests.support import START, CoreClientFactory, FakeClock, answer, core_of, receive_json, settle, subscribe


def one_step(on_surpass: OnSurpass = OnSurpass.wait, on_error: OnError = OnError.continue_) -> list[Workflow]:
    steps = (
        Step(name="work", message_type="work", on_error=on_error),
        Step(name="after", message_type="after"),
    )
    trigger = EventTrigger(message_type="go", filter_data={"env": "prod"})
    return [Workflow(id="wf", name="wf", steps=steps, triggers=(trigger,), on_surpass=on_surpass)]


async def task(client: TestClient[Any, Any], task_id: str) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def run(client: TestClient[Any, Any], workflow: str = "wf") -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/workflows/{workflow}/run")
    return response.status, await response.json()


async def test_step_timeout_fires_on_time_extended_by_subscriber_timeout(
    core_client: CoreClientFactory, clock: FakeClock
) -> None:
    client = await core_client(workflows=one_step())
    core = core_of(client)
    silent = await subscribe(client, "silent", "work", answer_within=30)
    _, body = await run(client)
    await receive_json(silent)
    clock.advance(timedelta(seconds=29))
    await settle(core)
    state = await task(client, body["task_id"])
    assert state["step"] == "work" and state["waiting_for"] == ["silent"]
    clock.advance(timedelta(seconds=1))
    await settle(core)
    state = await task(client, body["task_id"])
    assert state["status"] == "failed"  # on_error continue: went on, but the run records the failure
    assert state["steps"][0]["subscribers"]["silent"]["outcome"] == "timeout"
    assert state["steps"][0]["duration"] == 30.0


async def test_on_error_stop_ends_the_run(core_client: CoreClientFactory) -> None:
    client = await core_client(workflows=one_step(on_error=OnError.stop))
    ws = await subscribe(client, "w", "work", "after")
    _, body = await run(client)
    await answer(ws, await receive_json(ws), error="AccessDenied")
    await settle(core_of(client))
    state = await task(client, body["task_id"])
    assert state["status"] == "failed"
    assert "AccessDenied" in state["error"]
    assert [s["name"] for s in state["steps"]] == ["work"]


async def test_on_surpass_wait_queues_one_run(core_client: CoreClientFactory) -> None:
    client = await core_client(workflows=one_step(OnSurpass.wait))
    ws = await subscribe(client, "w", "work")
    status, first = await run(client)
    assert status == 200 and first["status"] == "started"
    status, second = await run(client)
    assert status == 202 and second["status"] == "queued"
    status, third = await run(client)
    assert status == 409 and third["status"] == "skipped" and "already queued" in third["error"]
    assert (await (await client.get("/workflows")).json())[0]["queued"] is True
    await answer(ws, await receive_json(ws))
    action = await receive_json(ws)  # the queued run starts when the first ends
    assert action["data"]["task"] != first["task_id"]
    await answer(ws, action)
    await settle(core_of(client))
    history = await (await client.get("/workflows/wf/runs")).json()
    assert [r["status"] for r in history["runs"]] == ["succeeded", "succeeded"]
    assert history["runs"][0]["trigger"] == "queued:manual"


async def test_on_surpass_skip_parallel_replace(core_client: CoreClientFactory, config: CoreConfig) -> None:
    for policy, expected_status, running in [
        (OnSurpass.skip, 409, 1),
        (OnSurpass.parallel, 200, 2),
        (OnSurpass.replace_, 200, 1),
    ]:
        cfg = config.model_copy(update={"data_dir": config.data_dir / policy.value})
        client = await core_client(cfg, workflows=one_step(policy))
        await client.post("/subscriber/w/work")
        _, first = await run(client)
        status, second = await run(client)
        assert status == expected_status, policy
        tasks = await (await client.get("/tasks")).json()
        assert len(tasks) == running, policy
        if policy is OnSurpass.replace_:
            replaced = await task(client, first["task_id"])
            assert replaced["status"] == "cancelled" and "replaced" in replaced["error"]
            assert tasks[0]["id"] == second["task_id"]


async def test_cancel_a_run(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client(workflows=one_step())
    events = await events_ws(client, "task_end")
    await client.post("/subscriber/w/work")
    _, body = await run(client)
    response = await client.delete(f"/tasks/{body['task_id']}")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    end = await receive_json(events)
    assert end["data"]["success"] is False and end["data"]["status"] == "cancelled"
    assert (await client.delete(f"/tasks/{body['task_id']}")).status == 409
    assert (await client.delete("/tasks/unknown")).status == 404
    assert await (await client.get("/tasks")).json() == []


async def test_event_trigger_with_data_filter(core_client: CoreClientFactory, events_ws: Any) -> None:
    client = await core_client(workflows=one_step())
    sender = await events_ws(client, "nothing")
    await sender.send_json({"kind": "event", "message_type": "go", "data": {"env": "dev"}})
    await settle(core_of(client))
    assert await (await client.get("/tasks")).json() == []
    await sender.send_json({"kind": "event", "message_type": "go", "data": {"env": "prod", "more": 1}})
    await client.post("/subscriber/w/work")  # keep the run open so it shows up
    await settle(core_of(client))
    history = await (await client.get("/workflows/wf/runs")).json()
    assert [r["trigger"] for r in history["runs"]] == ["event:go"]


async def test_cron_trigger_fires_at_the_next_slot(core_client: CoreClientFactory, clock: FakeClock) -> None:
    client = await core_client()
    workflows = {w["id"]: w for w in await (await client.get("/workflows")).json()}
    assert workflows["collect_and_cleanup"]["next_run"] == "2026-03-01T13:00:00+00:00"
    assert workflows["collect"]["next_run"] is None
    clock.advance(timedelta(minutes=59, seconds=29))
    await settle(core_of(client))
    assert (await (await client.get("/workflows/collect_and_cleanup/runs")).json())["total"] == 0
    clock.advance(timedelta(seconds=1))
    await settle(core_of(client))
    history = await (await client.get("/workflows/collect_and_cleanup/runs")).json()
    assert [(r["trigger"], r["created_at"]) for r in history["runs"]] == [("schedule", "2026-03-01T13:00:00+00:00")]
    workflows = {w["id"]: w for w in await (await client.get("/workflows")).json()}
    assert workflows["collect_and_cleanup"]["next_run"] == "2026-03-01T14:00:00+00:00"


@pytest.mark.parametrize(("policy", "runs"), [("latest", 1), ("none", 0)])
async def test_missed_runs_are_caught_up_once_at_start(
    core_client: CoreClientFactory, config: CoreConfig, policy: str, runs: int
) -> None:
    cfg = config.model_copy(update={"catch_up": policy})
    client = await core_client(cfg)
    await client.close()
    later = FakeClock(START + timedelta(hours=3, minutes=10))  # slots 13:00, 14:00, 15:00 were missed
    client = await core_client(cfg, later)
    core = core_of(client)
    history = await (await client.get("/workflows/collect_and_cleanup/runs")).json()
    assert [r["trigger"] for r in history["runs"]] == ["catch-up:3 missed"] * runs
    assert core.scheduler.missed == {"collect_and_cleanup": 3}
    await client.close()
    # the slots are consumed: a restart right after catches up nothing more
    client = await core_client(cfg, FakeClock(START + timedelta(hours=3, minutes=20)))
    assert core_of(client).scheduler.missed == {}


async def test_counting_missed_slots_at_start_leaves_the_loop_serving(
    core_client: CoreClientFactory, config: CoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config.model_copy(update={"schedule": "* * * * *"})
    await (await core_client(cfg)).close()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    seen: list[int] = []

    def counted(schedule: Schedule, last: datetime, now: datetime) -> tuple[int, datetime | None]:
        seen.append(ticks)
        result = count_missed(schedule, last, now)
        seen.append(ticks)
        return result

    monkeypatch.setattr("resotocore.scheduler.scheduler.count_missed", counted)
    ticking = asyncio.create_task(ticker())
    try:  # down for a year: far more slots than are counted
        client = await core_client(cfg, FakeClock(START + timedelta(days=365)))
    finally:
        ticking.cancel()
    before, after = seen
    assert after > before  # the loop went on while the slots were counted
    assert core_of(client).scheduler.missed == {"collect_and_cleanup": MAX_COUNTED_SLOTS}
    history = await (await client.get("/workflows/collect_and_cleanup/runs")).json()
    assert [r["trigger"] for r in history["runs"]] == [f"catch-up:{MAX_COUNTED_SLOTS} missed"]


async def restart_after_three_missed_slots(
    core_client: CoreClientFactory, config: CoreConfig, policy: str = "latest", clock: FakeClock | None = None
) -> TestClient[Any, Any]:
    """A core started at START, stopped, and started again after the slots 13:00, 14:00, 15:00."""
    cfg = config.model_copy(update={"catch_up": policy})
    await (await core_client(cfg)).close()
    return await core_client(cfg, clock or FakeClock(START + timedelta(hours=3, minutes=10)))


async def events_before_probe(ws: Any) -> list[dict[str, Any]]:
    """What an /events socket receives before the probe event it sends comes back to it."""
    await ws.send_json({"kind": "event", "message_type": "probe", "data": {}})
    frames = []
    while (frame := await receive_json(ws))["message_type"] != "probe":
        frames.append(frame)
    return frames


@pytest.mark.parametrize("policy", ["latest", "none"])
async def test_an_observer_connecting_after_start_learns_of_the_missed_runs_once(
    core_client: CoreClientFactory, config: CoreConfig, events_ws: Any, policy: str
) -> None:
    client = await restart_after_three_missed_slots(core_client, config, policy)
    observer = await events_ws(client, "workflow_runs_missed,probe")
    missed = {"workflow": "collect_and_cleanup", "missed": 3, "since": "2026-03-01T12:00:30+00:00", "policy": policy}
    announced = {"kind": "event", "message_type": "workflow_runs_missed", "data": missed}
    assert await events_before_probe(observer) == [announced]
    assert await events_before_probe(observer) == []  # once per connection
    another = await events_ws(client, "workflow_runs_missed,probe")
    assert [e["data"] for e in await events_before_probe(another)] == [missed]  # and once for each


async def test_an_observer_not_showing_the_missed_runs_does_not_get_them(
    core_client: CoreClientFactory, config: CoreConfig, events_ws: Any
) -> None:
    client = await restart_after_three_missed_slots(core_client, config, "none")
    other = await events_ws(client, "task_end,probe")
    assert await events_before_probe(other) == []
    showing = await events_ws(client, "probe,workflow_runs_missed")
    assert [e["message_type"] for e in await events_before_probe(showing)] == ["workflow_runs_missed"]


async def test_the_missed_runs_are_announced_until_the_start_up_grace_ends(
    core_client: CoreClientFactory, config: CoreConfig, events_ws: Any
) -> None:
    later = FakeClock(START + timedelta(hours=3, minutes=10))
    client = await restart_after_three_missed_slots(core_client, config, clock=later)
    later.advance(STARTUP_GRACE - timedelta(seconds=1))
    await settle(core_of(client))
    in_time = await events_ws(client, "workflow_runs_missed,probe")
    assert [e["data"]["missed"] for e in await events_before_probe(in_time)] == [3]
    later.advance(timedelta(seconds=1))
    await settle(core_of(client))
    too_late = await events_ws(client, "workflow_runs_missed,probe")
    assert await events_before_probe(too_late) == []
    workflows = {w["id"]: w for w in await (await client.get("/workflows")).json()}
    assert workflows["collect_and_cleanup"]["missed_at_startup"] == 3  # still shown here


async def test_a_run_resumes_after_restart_and_appears_once(core_client: CoreClientFactory) -> None:
    client = await core_client()
    ws = await subscribe(client, "w", "collect", "cleanup")
    _, body = await run(client, "collect_and_cleanup")
    await answer(ws, await receive_json(ws))
    cleanup = await receive_json(ws)
    assert cleanup["message_type"] == "cleanup"
    await ws.close()
    await client.close()

    client = await core_client()
    tasks = await (await client.get("/tasks")).json()
    assert [(t["id"], t["step"], t["waiting_for"]) for t in tasks] == [(body["task_id"], "cleanup", ["w"])]
    ws = await client.ws_connect("/subscriber/w/handle")
    assert await receive_json(ws) == cleanup  # the pending action is sent again
    await answer(ws, cleanup)
    await settle(core_of(client))
    history = await (await client.get("/workflows/collect_and_cleanup/runs")).json()
    assert [(r["id"], r["status"]) for r in history["runs"]] == [(body["task_id"], "succeeded")]
    collect = next(s for s in history["runs"][0]["steps"] if s["name"] == "collect")
    assert collect["subscribers"]["w"]["outcome"] == "done"


async def test_a_subscriber_gone_too_long_is_dropped_and_not_waited_for(
    core_client: CoreClientFactory, clock: FakeClock
) -> None:
    client = await core_client(workflows=one_step())
    core = core_of(client)
    await client.post("/subscriber/ghost/work", params={"timeout": "3600"})
    _, body = await run(client)
    clock.advance(timedelta(minutes=4))  # within the start-up grace: kept
    await settle(core)
    assert (await client.get("/subscriber/ghost")).status == 200
    clock.advance(timedelta(minutes=1, seconds=30))
    await settle(core)
    assert (await client.get("/subscriber/ghost")).status == 404
    state = await task(client, body["task_id"])
    assert state["steps"][0]["subscribers"]["ghost"]["outcome"] == "gone"


async def test_connected_subscribers_are_never_dropped(core_client: CoreClientFactory, clock: FakeClock) -> None:
    client = await core_client(workflows=one_step())
    ws = await subscribe(client, "w", "work")
    clock.advance(timedelta(minutes=30))
    await settle(core_of(client))
    assert (await client.get("/subscriber/w")).status == 200
    await ws.close()


async def test_history_is_newest_first_and_paginated(core_client: CoreClientFactory, clock: FakeClock) -> None:
    client = await core_client(workflows=one_step())
    ids = []
    for _ in range(5):
        ids.append((await run(client))[1]["task_id"])
        clock.advance(timedelta(seconds=1))
    page = await (await client.get("/workflows/wf/runs", params={"limit": "2"})).json()
    assert [r["id"] for r in page["runs"]] == ids[::-1][:2]
    assert page["total"] == 5 and page["next_offset"] == 2
    page = await (await client.get("/workflows/wf/runs", params={"limit": "2", "offset": "4"})).json()
    assert [r["id"] for r in page["runs"]] == [ids[0]] and page["next_offset"] is None
    assert (await client.get("/workflows/wf/runs", params={"limit": "0"})).status == 400
    assert (await client.get("/workflows/wf/runs", params={"offset": "x"})).status == 400
    assert (await client.get("/workflows/nope/runs")).status == 404


async def test_unknown_workflow_and_task(core_client: CoreClientFactory) -> None:
    client = await core_client()
    response = await client.post("/workflows/nope/run")
    assert response.status == 404
    assert await response.json() == {"error": "unknown workflow 'nope'"}
    assert (await client.get("/tasks/nope")).status == 404
    response = await client.get("/no/such/path")
    assert response.status == 404 and "error" in await response.json()


async def test_metrics_and_system_endpoints(core_client: CoreClientFactory) -> None:
    client = await core_client(workflows=one_step())
    ws = await subscribe(client, "w", "work")
    await run(client)
    await answer(ws, await receive_json(ws))
    await settle(core_of(client))
    assert await (await client.get("/system/ping")).text() == "pong"
    assert (await client.get("/system/ready")).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'resotocore_runs_started_total{workflow="wf"} 1.0' in text
    assert 'resotocore_runs_finished_total{status="succeeded",workflow="wf"} 1.0' in text
    assert 'resotocore_step_duration_seconds_count{step="work",workflow="wf"} 1.0' in text
    assert "resotocore_subscribers_connected 1.0" in text


async def test_step_durations_are_those_of_the_steps_that_ended(
    core_client: CoreClientFactory, clock: FakeClock
) -> None:
    # Steps may share a name; the step nobody subscribed to ends in the same transition as the one before it.
    steps = (
        Step(name="a", message_type="work"),
        Step(name="b", message_type="more"),
        Step(name="a", message_type="work"),
        Step(name="a", message_type="nobody"),
    )
    client = await core_client(workflows=[Workflow(id="wf", name="wf", steps=steps)])
    ws = await subscribe(client, "w", "work", "more")
    await run(client)
    for seconds in (1, 2, 4):
        action = await receive_json(ws)
        clock.advance(timedelta(seconds=seconds))
        await answer(ws, action)
    await settle(core_of(client))
    text = await (await client.get("/metrics")).text()
    assert 'resotocore_step_duration_seconds_count{step="a",workflow="wf"} 3.0' in text
    assert 'resotocore_step_duration_seconds_sum{step="a",workflow="wf"} 5.0' in text  # 1 + 4 + 0
    assert 'resotocore_step_duration_seconds_sum{step="b",workflow="wf"} 2.0' in text


def test_first_changed_step_is_found_wherever_the_change_is() -> None:
    def step(name: str) -> m.StepRun:
        return m.StepRun(name=name, message_type=name, started_at=START, deadline=START)

    steps = (step("a"), step("b"), step("c"))
    run = m.Run(id=TaskId("t"), workflow_id="w", trigger="x", created_at=START, steps=steps)
    assert _first_changed(run, run) == 3
    assert _first_changed(run, replace(run, steps=(*steps[:2], step("c2")))) == 2
    assert _first_changed(run, replace(run, steps=(*steps, step("d")))) == 3
    assert _first_changed(run, replace(run, steps=(steps[0], step("b2"), steps[2]))) == 1  # info on an old step
    assert _first_changed(run, replace(run, status=m.RunStatus.failed)) == 3
    assert _first_changed(replace(run, steps=()), run) == 0


def done(task_id: str, step: str = "work") -> ActionDone:
    frame = f'{{"kind":"action_done","message_type":"{step}","data":{{"task":"{task_id}","step":"{step}"}}}}'
    message = parse_message(frame)
    assert isinstance(message, ActionDone)
    return message


async def test_answers_arriving_together_are_applied_and_committed_in_one_go(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await core_client(workflows=one_step())
    core = core_of(client)
    sockets = [await subscribe(client, f"w{i}", "work") for i in range(20)]
    _, body = await run(client)
    for ws in sockets:
        await receive_json(ws)
    commits: list[Changes] = []
    store_commit = core.store.commit

    async def counted(changes: Changes) -> None:
        commits.append(changes)
        await store_commit(changes)

    monkeypatch.setattr(core.store, "commit", counted)
    for i in range(20):  # none of these waits: they are queued
        await core.engine.receive(SubscriberId(f"w{i}"), done(body["task_id"]))
    assert not commits
    await settle(core)
    state = await task(client, body["task_id"])
    assert state["status"] == "succeeded" and len(state["steps"][0]["subscribers"]) == 20
    assert len(commits) == 1  # twenty answers, the end of the step and of the run: one commit


async def test_the_answer_that_completes_a_step_is_applied_before_receive_returns(
    core_client: CoreClientFactory,
) -> None:
    client = await core_client(workflows=one_step())
    ws = await subscribe(client, "w", "work")
    _, body = await run(client)
    await receive_json(ws)
    engine = core_of(client).engine
    await engine.receive(SubscriberId("w"), done(body["task_id"]))
    assert engine.get(TaskId(body["task_id"])) is None  # the run ended: its last step is complete
    assert (await task(client, body["task_id"]))["status"] == "succeeded"


async def test_a_full_answer_queue_makes_the_sender_wait(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "INBOX_LIMIT", 3)
    client = await core_client(workflows=one_step())
    core = core_of(client)
    sockets = {sid: await subscribe(client, sid, "work") for sid in ("a", "b")}
    _, body = await run(client)
    for ws in sockets.values():
        await receive_json(ws)
    entered, gate = asyncio.Event(), asyncio.Event()
    store_commit = core.store.commit

    async def stuck(changes: Changes) -> None:
        entered.set()
        await gate.wait()
        await store_commit(changes)

    monkeypatch.setattr(core.store, "commit", stuck)
    a = SubscriberId("a")
    try:
        await asyncio.wait_for(core.engine.receive(a, done(body["task_id"])), 1)  # queued; applying it waits
        await asyncio.wait_for(entered.wait(), 1)  # the engine holds its lock in the commit
        await asyncio.wait_for(core.engine.receive(a, done(body["task_id"])), 1)  # duplicates fill the queue
        await asyncio.wait_for(core.engine.receive(a, done(body["task_id"])), 1)
        third = asyncio.create_task(core.engine.receive(a, done(body["task_id"])))
        for _ in range(3):  # a receive that does not wait is done after its first step
            await asyncio.sleep(0)
        assert not third.done()  # the queue is full: the sender waits, its socket is not read meanwhile
    finally:
        gate.set()
    await asyncio.wait_for(third, 5)
    await settle(core)
    state = await task(client, body["task_id"])
    assert state["waiting_for"] == ["b"] and state["steps"][0]["subscribers"]["a"]["outcome"] == "done"


async def test_answers_queued_when_the_core_stops_are_stored(core_client: CoreClientFactory) -> None:
    client = await core_client(workflows=one_step())
    core = core_of(client)
    sockets = [await subscribe(client, sid, "work") for sid in ("a", "b")]
    _, body = await run(client)
    for ws in sockets:
        await receive_json(ws)
    await core.engine.receive(SubscriberId("a"), done(body["task_id"]))  # queued: b is still awaited
    await core.engine.stop()
    stored = await core.store.run(TaskId(body["task_id"]))
    assert stored is not None and stored.current is not None
    assert stored.current.subscribers[SubscriberId("a")].outcome is m.Outcome.done


async def test_an_answer_received_before_a_removal_or_a_cancel_is_applied_before_it(
    core_client: CoreClientFactory,
) -> None:
    client = await core_client(workflows=one_step(on_error=OnError.stop))
    core = core_of(client)
    sockets = [await subscribe(client, sid, "work") for sid in ("a", "b", "c")]
    _, body = await run(client)
    for ws in sockets:
        await receive_json(ws)
    task_id = TaskId(body["task_id"])
    # a answers (queued: b and c are still awaited), then leaves at once: a hook answering and unsubscribing
    await core.engine.receive(SubscriberId("a"), done(task_id))
    await core.registry.remove_subscription(SubscriberId("a"), "work", core.clock.now())
    await core.engine.receive(SubscriberId("b"), done(task_id))  # queued as well: c is still awaited
    await core.engine.cancel(task_id, "stopped by hand")
    await settle(core)
    outcomes = (await task(client, task_id))["steps"][0]["subscribers"]
    assert {sid: o["outcome"] for sid, o in outcomes.items()} == {"a": "done", "b": "done", "c": "cancelled"}


async def test_a_trigger_after_the_last_answers_sees_the_run_ended(core_client: CoreClientFactory) -> None:
    client = await core_client(workflows=one_step(OnSurpass.skip))
    core = core_of(client)
    sockets = [await subscribe(client, sid, "work") for sid in ("a", "b")]
    _, body = await run(client)
    for ws in sockets:
        await receive_json(ws)
    for sid in ("a", "b"):  # both queued (b behind a): the run ends when they are applied
        await core.engine.receive(SubscriberId(sid), done(body["task_id"]))
    result = await core.engine.trigger("wf", "event:go")  # e.g. an event sent right after the answers
    assert result.status == "started", result
