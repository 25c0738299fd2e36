"""The ``resotoctl`` console script in subprocesses against a real core: workflows, subscribers, events,
graph, and the errors an operator meets."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
import pytest
from click.testing import CliRunner

from resotoctl.cli import main
from resotolib.client import CoreClient
from resotolib.protocol import Subscription
from resotolib.subscriber import ActionSubscriber
from resotoworker.collector import GraphBatch
from tests.resotoctl.support import CtlProcess, Result, ctl, until_async
from tests.support import CoreProcess

StartCtl = Callable[..., Awaitable[CtlProcess]]


def one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.code == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


@asynccontextmanager
async def answering(url: str, subscriber_id: str, error: str | None) -> AsyncIterator[None]:
    """A subscriber of generate_metrics that reports progress, then answers done or the error."""
    subscriptions = [Subscription(message_type="generate_metrics", timeout=10)]
    async with ActionSubscriber(url, subscriber_id, subscriptions) as subscriber:

        async def answer() -> None:
            async for action in subscriber:
                await subscriber.progress(action, "work", 1, 2)
                await (subscriber.error(action, error) if error else subscriber.done(action))

        task = asyncio.get_running_loop().create_task(answer())
        await subscriber.wait_connected()
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await subscriber.unsubscribe()


async def test_workflows_list_running_history_cancel(core: CoreProcess, client: CoreClient) -> None:
    listed, table = await asyncio.gather(
        ctl(core.url, "--json", "workflows", "list"), ctl(core.url, "workflows", "list")
    )
    workflows = {w["id"]: w for w in listed.json()}
    assert set(workflows) == {"collect_and_cleanup", "collect", "cleanup", "metrics"}
    booted = next(e for e in core.log if e.get("event") == "core_started")
    new_year = datetime(datetime.fromisoformat(booted["timestamp"]).year + 1, 1, 1, tzinfo=UTC)
    assert datetime.fromisoformat(workflows["collect_and_cleanup"]["next_run"]) == new_year  # the schedule: NEVER
    assert table.code == 0 and "collect_and_cleanup" in table.stdout and "cron 0 0 1 1 * (UTC)" in table.stdout

    await client.add_subscription("blocker", "generate_metrics", timeout=60)  # never connects: the step waits
    started = await ctl(core.url, "workflows", "run", "metrics")
    assert started.code == 0 and started.stdout.startswith("started metrics: task "), started
    task_id = started.stdout.split()[-1]

    running, running_table = await asyncio.gather(
        ctl(core.url, "--json", "workflows", "running"), ctl(core.url, "workflows", "running")
    )
    [task] = running.json()
    assert (task["id"], task["step"], task["waiting_for"]) == (task_id, "generate_metrics", ["blocker"])
    assert all(word in running_table.stdout for word in (task_id, "generate_metrics", "blocker"))

    cancelled = await ctl(core.url, "workflows", "cancel", task_id)
    assert cancelled.stdout.strip() == f"cancelled task {task_id} of metrics at step generate_metrics"
    again, history, history_json = await asyncio.gather(
        ctl(core.url, "workflows", "cancel", task_id),
        ctl(core.url, "workflows", "history", "metrics", "--steps"),
        ctl(core.url, "--json", "workflows", "history", "metrics", "--limit", "1"),
    )
    one_error_line(again, 1, "has already ended", "409")
    assert all(word in history.stdout for word in (task_id, "cancelled", "pre_generate_metrics", "blocker cancelled"))
    [run] = history_json.json()["runs"]
    assert run["status"] == "cancelled" and [s["name"] for s in run["steps"]] == [
        "pre_generate_metrics",
        "generate_metrics",
    ]
    assert run["steps"][0]["duration"] is not None


async def test_run_wait_exits_by_the_outcome(core: CoreProcess) -> None:
    succeeded = await ctl(core.url, "workflows", "run", "metrics", "--wait")
    assert succeeded.code == 0, succeeded
    assert "post_generate_metrics" in succeeded.stdout and "succeeded after" in succeeded.stdout

    async with answering(core.url, "failing", error="disk full"):
        failed = await ctl(core.url, "--json", "workflows", "run", "metrics", "--wait")
    assert failed.code == 1, failed
    lines = failed.lines()
    assert lines[0]["status"] == "started"
    task_id = lines[0]["task_id"]
    kinds = [(line.get("kind"), line.get("message_type")) for line in lines[1:-1]]
    assert ("event", "step_started") in kinds and ("event", "task_end") in kinds
    assert ("action_progress", "generate_metrics") in kinds and ("action_error", "generate_metrics") in kinds
    assert all(line["data"]["task"] == task_id for line in lines[1:-1])
    final = lines[-1]
    assert (final["id"], final["status"]) == (task_id, "failed")
    assert final["steps"][1]["subscribers"]["failing"] == {
        **final["steps"][1]["subscribers"]["failing"],
        "error": "disk full",
    }


async def test_run_wait_follows_a_queued_run(core: CoreProcess, client: CoreClient, ctl_process: StartCtl) -> None:
    await client.add_subscription("blocker", "generate_metrics", timeout=60)
    first = await client.run_workflow("metrics")
    watcher = await ctl_process(core.url, "--json", "workflows", "run", "metrics", "--wait")
    assert (await watcher.line())["status"] == "queued"
    await client.delete_subscriber("blocker")  # the first run stops waiting; the queued one starts
    assert await watcher.wait(within=15) == 0, watcher.stderr
    runs = (await client.runs("metrics"))["runs"]
    assert [r["trigger"] for r in runs] == ["queued:manual", "manual"] and runs[1]["id"] == first["task_id"]
    assert runs[0]["status"] == "succeeded"


async def test_subscribers_and_events(core: CoreProcess, client: CoreClient, ctl_process: StartCtl) -> None:
    await client.add_subscription("w1", "collect", timeout=30, wait_for_completion=False)
    listed, table = await asyncio.gather(
        ctl(core.url, "--json", "subscribers", "list"), ctl(core.url, "subscribers", "list")
    )
    assert listed.json() == [
        {
            "id": "w1",
            "subscriptions": {"collect": {"message_type": "collect", "wait_for_completion": False, "timeout": 30}},
        }
    ]
    assert all(word in table.stdout for word in ("w1", "collect", "no", "30s"))

    events = await ctl_process(core.url, "events", "--show", "task_started,task_end")
    await until_async(lambda: event_listeners(core.url))
    started = await client.run_workflow("metrics")
    first, second = await events.line(), await events.line()
    assert [(m["kind"], m["message_type"], m["data"]["task"]) for m in (first, second)] == [
        ("event", "task_started", started["task_id"]),
        ("event", "task_end", started["task_id"]),
    ]
    events.signal(signal.SIGINT)
    assert await events.wait() == 130
    assert not any("Traceback" in line for line in events.stderr)


async def test_events_names_why_the_core_closed_the_stream(
    core_process: Callable[..., Awaitable[CoreProcess]], ctl_process: StartCtl
) -> None:
    core = await core_process()
    events = await ctl_process(core.url, "events")
    await until_async(lambda: event_listeners(core.url))
    assert core.proc is not None
    core.proc.send_signal(signal.SIGTERM)
    assert await core.wait() == 0
    assert await events.wait() == 1
    assert events.stderr == ["Error: the core closed the event stream (code 1001: core is shutting down)"]


async def event_listeners(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    return any(line.startswith("resotocore_event_listeners 1") for line in text.splitlines())


async def test_graph_search_and_aggregate(core: CoreProcess, client: CoreClient) -> None:
    batch = GraphBatch("example", "acc1")
    for i in range(3):
        batch.resource("example_instance", "eu-1" if i else "us-1", f"i-{i}", instance_cores=2 * (i + 1))
    batch.resource("example_volume", "eu-1", "v-1")
    await client.merge("resoto", (line for line in batch.ndjson()))

    found, table, counted, counted_table = await asyncio.gather(
        ctl(core.url, "--json", "graph", "search", "--kind", "example_instance", "--region", "eu-1"),
        ctl(core.url, "graph", "search", "--cloud", "example", "--kind", "example_instance,example_volume",
            "--limit", "2"),
        ctl(core.url, "--json", "graph", "aggregate", "--group-by", "cloud,account", "--kind", "example_instance",
            "--function", "count:n", "--function", "sum:reported.instance_cores:cores"),
        ctl(core.url, "graph", "aggregate", "--group-by", "kind", "--function", "count:n",
            "--filter", '{"cloud": ["example"], "kinds": ["example_instance", "example_volume"]}'),
    )  # fmt: skip
    assert sorted(node["reported"]["id"] for node in found.lines()) == ["i-1", "i-2"]
    assert table.code == 0 and table.stdout.count("example_") == 2, table.stdout
    assert counted.json() == [{"group": {"cloud": "example", "account": "acc1"}, "values": {"n": 3, "cores": 12}}]
    assert "example_instance" in counted_table.stdout and "example_volume" in counted_table.stdout

    bad_filter, bad_function = await asyncio.gather(
        ctl(core.url, "graph", "search", "--filter", "{bad"),
        ctl(core.url, "graph", "aggregate", "--function", "median:n"),
    )
    assert bad_filter.code == 2 and "--filter" in bad_filter.stderr
    assert bad_function.code == 2 and "--function" in bad_function.stderr


async def test_errors_are_one_readable_line(
    core: CoreProcess, core_process: Callable[..., Awaitable[CoreProcess]]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    secured = await core_process("--psk", "sekrit", data_dir=core.data_dir.parent / "secured")
    results = await asyncio.gather(
        ctl(closed, "workflows", "list"),
        ctl(core.url, "workflows", "run", "nope"),
        ctl(core.url, "workflows", "run", "nope", "--wait"),
        ctl(core.url, "workflows", "history", "nope"),
        ctl(secured.url, "workflows", "list"),
        ctl(secured.url, "--psk", "wrong", "subscribers", "list"),
        ctl(secured.url, "--psk", "sekrit", "--json", "workflows", "running"),
        ctl(secured.url, "--json", "subscribers", "list", RESOTOCTL_PSK="sekrit"),
    )
    unreachable, unknown, unknown_wait, unknown_history, no_key, wrong_key, right_key, env_key = results
    # At once, not after the core's wait for an authorization frame (10 s); started on their own, since
    # ten interpreters starting together on two cores take most of those 5 s to start.
    events = await asyncio.gather(
        ctl(secured.url, "events", within=5), ctl(secured.url, "--psk", "wrong", "events", within=5)
    )
    one_error_line(unreachable, 3, f"core at {closed}", "unreachable")
    one_error_line(unknown, 1, "unknown workflow 'nope'", "404")
    one_error_line(unknown_wait, 1, "unknown workflow 'nope'")
    one_error_line(unknown_history, 1, "unknown workflow 'nope'", "404")
    one_error_line(no_key, 4, "401", "--psk")
    one_error_line(wrong_key, 4, "401")
    for refused in events:
        one_error_line(refused, 4, "401", "--psk")
    assert (right_key.code, right_key.json(), env_key.code, env_key.json()) == (0, [], 0, [])
    missing_command = await ctl(core.url, "subscribe", "post_collect", "--id", "x")
    assert missing_command.code == 2 and "after --" in missing_command.stderr


@pytest.mark.parametrize(
    "command",
    [
        [], ["workflows"], ["workflows", "list"], ["workflows", "run"], ["workflows", "running"],
        ["workflows", "history"], ["workflows", "cancel"], ["subscribe"], ["subscribers"], ["subscribers", "list"],
        ["events"], ["graph"], ["graph", "search"], ["graph", "aggregate"],
    ],
)  # fmt: skip
def test_every_command_has_help_with_examples(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # in this process: configuring (and caching) the loggers would hide later tests' logs from capture_logs
    monkeypatch.setattr("resotoctl.cli.setup_logging", lambda *args: None)
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
