"""Pure output pieces: values, tables, the live view of a run, and the graph flags."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pytest
from rich.console import Console, RenderableType

from resotoctl.graph import aggregate_table, build_filter, nodes_table, parse_function
from resotoctl.render import (
    duration,
    progress_line,
    runs_table,
    steps_table,
    subscribers_table,
    tasks_table,
    when,
    workflows_table,
)
from resotoctl.runview import RunView, render
from resotolib.graph import Comparison, Node
from resotolib.protocol import (
    ActionError,
    ActionErrorData,
    ActionInfo,
    ActionInfoData,
    ActionProgress,
    ActionProgressData,
    Event,
    ProgressDone,
    ProgressTree,
    SubscriberId,
    TaskId,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def test_durations_and_times_read_naturally() -> None:
    assert [duration(s) for s in (None, 0.354, 12.34, 245, 7380, 3 * 86400 + 4 * 3600)] == [
        "-", "0.35s", "12.3s", "4m 05s", "2h 03m", "3d 04h",
    ]  # fmt: skip
    assert when((NOW + timedelta(minutes=5)).isoformat(), NOW, UTC) == "2026-03-01 12:05:00 UTC (in 5m 00s)"
    assert when((NOW - timedelta(seconds=3)).isoformat(), NOW, UTC) == "2026-03-01 11:59:57 UTC (3.00s ago)"
    assert when(None, NOW) == "-"


def test_progress_line_sums_a_tree() -> None:
    tree = ProgressTree(
        name="aws", parts=[ProgressDone(name="a", current=1, total=4), ProgressDone(name="b", current=2, total=4)]
    )
    data = ActionProgressData(task=TaskId("t"), step="collect", context=["acc1"], progress=tree)
    assert progress_line("worker-1", data.model_dump(mode="json")) == "worker-1 collect: aws 3/8 (38%) [acc1]"


def run_json(status: str = "failed") -> dict[str, Any]:
    return {
        "id": "task-1", "workflow": "collect", "trigger": "manual", "status": status,
        "created_at": NOW.isoformat(), "ended_at": (NOW + timedelta(seconds=75)).isoformat(),
        "error": "steps failed: collect",
        "steps": [
            {"name": "pre_collect", "started_at": NOW.isoformat(), "ended_at": NOW.isoformat(), "success": True,
             "subscribers": {}, "duration": 0.0},
            {"name": "collect", "started_at": NOW.isoformat(), "ended_at": (NOW + timedelta(seconds=75)).isoformat(),
             "success": False, "duration": 75.0,
             "subscribers": {"w1": {"outcome": "done"}, "report": {"outcome": "error", "error": "exit code 3: boom"}}},
        ],
    }  # fmt: skip


def test_tables_show_what_operators_look_for() -> None:
    workflow = {
        "id": "collect_and_cleanup", "name": "Collect and cleanup", "steps": [{"name": "a"}] * 12,
        "triggers": [{"kind": "time", "cron": "0 * * * *", "timezone": "UTC"}, {"kind": "event", "message_type": "go"}],
        "next_run": (NOW + timedelta(minutes=30)).isoformat(), "running": ["task-1"], "queued": True,
    }  # fmt: skip
    shown = text(workflows_table([workflow], NOW, UTC))
    assert "collect_and_cleanup" in shown and "cron 0 * * * * (UTC)" in shown and "(in 30m 00s)" in shown
    assert "task-1" in shown and "+ 1 queued" in shown
    task = {**run_json("running"), "step": "collect", "step_started_at": NOW.isoformat(), "waiting_for": ["w2"]}
    task["progress"] = {
        "w2": {"step": "collect", "progress": {"kind": "progress", "name": "aws", "current": 1, "total": 2}}
    }
    shown = text(tasks_table([task], NOW + timedelta(seconds=30), UTC))
    assert "collect" in shown and "30.0s" in shown and "w2" in shown and "aws 1/2 (50%)" in shown
    shown = text(runs_table([run_json()], NOW, "history", UTC))
    assert "failed" in shown and "1m 15s" in shown and "collect 1m 15s" in shown and "steps failed: collect" in shown
    shown = text(steps_table(run_json(), NOW))
    assert "report error: exit code 3: boom" in shown and "w1 done" in shown
    subscriber = {
        "id": "w1",
        "subscriptions": {"collect": {"message_type": "collect", "wait_for_completion": False, "timeout": 60}},
    }
    assert "collect" in (shown := text(subscribers_table([subscriber]))) and "no" in shown and "60s" in shown


def test_run_view_follows_events_and_snapshots() -> None:
    workflow = {"id": "collect", "steps": [{"name": "pre_collect"}, {"name": "collect"}], "running": []}
    view = RunView.of(workflow, "t1")
    other = Event(message_type="step_started", data={"task": "t2", "workflow": "collect", "step": "collect"})
    assert not view.apply(other, NOW)
    assert view.apply(Event(message_type="step_started", data={"task": "t1", "step": "collect"}), NOW)
    parts = [{"kind": "progress", "name": n, "current": c, "total": 2} for n, c in (("a", 1), ("b", 2))]
    tree = {"kind": "tree", "name": "collect", "parts": parts}  # how the core merges a subscriber's parts
    view.merge({**run_json("running"), "id": "t1", "steps": [{"name": "collect", "started_at": NOW.isoformat(),
                "subscribers": {"w1": {"outcome": "waiting"}, "w2": {"outcome": "waiting"}}}],
                "progress": {"w2": {"step": "collect", "progress": tree}}})  # fmt: skip
    assert view.steps["collect"].waiting_for == ["w1", "w2"] and view.status == "running"
    error = ActionErrorData(task=TaskId("t1"), step="collect", error="boom", subscriber_id=SubscriberId("w1"))
    assert view.apply(ActionError(message_type="collect", data=error), NOW)
    progress = ActionProgressData(
        task=TaskId("t1"),
        step="collect",
        progress=ProgressDone(name="aws", current=1, total=2),
        subscriber_id=SubscriberId("w2"),
    )
    assert not view.apply(ActionProgress(message_type="collect", data=progress), NOW)  # one part: snapshots show it
    info = ActionInfoData(task=TaskId("t1"), step="collect", message="hello", subscriber_id=SubscriberId("w2"))
    assert view.apply(ActionInfo(message_type="collect", data=info), NOW)
    shown = text(render(view, NOW + timedelta(seconds=2)))
    assert "w2" in shown and "collect 3/4 (75%)" in shown and "w2 collect info: hello" in shown and "2.00s" in shown
    end = {"task": "t1", "workflow": "collect", "success": False, "status": "failed", "error": "steps failed: collect"}
    view.apply(Event(message_type="step_end", data={"task": "t1", "step": "collect", "success": False}), NOW)
    assert view.apply(Event(message_type="task_end", data=end), NOW)
    assert view.ended and not view.succeeded and view.steps["collect"].state == "failed"
    assert view.steps["collect"].outcomes == {"w1": "error: boom"}


def test_run_view_picks_up_a_queued_run() -> None:
    view = RunView.of({"id": "collect", "steps": [], "running": ["old"]})
    assert view.task_id is None and not view.concerns(Event(message_type="task_end", data={"task": "old"}))
    assert not view.apply(
        Event(message_type="task_started", data={"task": "x", "workflow": "collect", "trigger": "manual"}), NOW
    )
    started = {"task": "new", "workflow": "collect", "trigger": "queued:manual"}
    assert view.apply(Event(message_type="task_started", data=started), NOW) and view.task_id == "new"
    polled = RunView.of({"id": "collect", "steps": [], "running": ["old"]})
    assert not polled.adopt_from(["old"]) and polled.adopt_from(["old", "new"]) and polled.task_id == "new"
    assert polled.concerns(ActionError(message_type="c", data=ActionErrorData(task=TaskId("new"), step="c")))
    assert not polled.concerns(ActionError(message_type="c", data=ActionErrorData(task=TaskId("old"), step="c")))


def test_graph_flags_build_requests() -> None:
    assert parse_function("count:n").model_dump(by_alias=True) == {"function": "count", "path": None, "as": "n"}
    tagged = parse_function("max:reported.tags.resoto:expires:latest")
    assert (tagged.function, tagged.path, tagged.name) == ("max", "reported.tags.resoto:expires", "latest")
    for bad in ("count", "avg:n", "sum:not a path:x", "count:n-1"):
        with pytest.raises(click.BadParameter):
            parse_function(bad)
    combined = build_filter('{"kinds": ["a"], "fields": [{"path": "name", "value": "x"}]}', ["b", "c"], [], ["acc"], [])
    assert combined.kinds == ["b", "c"] and combined.account == ["acc"] and combined.cloud is None
    assert combined.fields == [Comparison(path="name", value="x")]
    with pytest.raises(click.BadParameter):
        build_filter('{"nope": 1}', [], [], [], [])


def test_graph_tables() -> None:
    node = Node(id="n1", reported={"kind": "example_instance", "id": "i-1", "name": "web[1] [bold]x[/bold]"},
                metadata={"ancestors": {"cloud": "example", "account": "acc1", "region": "eu-1"}})  # fmt: skip
    shown = text(nodes_table([node]))
    assert all(word in shown for word in ("example_instance", "i-1", "example", "acc1", "eu-1"))
    assert "web[1] [bold]x[/bold]" in shown  # names are shown as they are, not read as markup
    rows = [
        {"group": {"cloud": "example"}, "values": {"n": 1234, "cores": None}},
        {"group": {"cloud": None}, "values": {"n": 1, "cores": 2}},  # nodes without the field: their own group
    ]
    shown = text(aggregate_table(rows, ["cloud"], ["n", "cores"]))
    assert "1,234" in shown and "example" in shown and "None" not in shown
