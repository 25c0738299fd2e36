"""Tables for people, built from the JSON the core answers with: pure functions, ``now`` passed in.

Workflows (next fire time, running tasks), running tasks (current step, whom it waits for, progress),
run history and per-step durations, subscribers. Graph tables live in ``graph``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from rich.console import RenderableType
from rich.style import StyleType
from rich.table import Table
from rich.text import Text

NONE = "-"
STATUS_STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
OUTCOME_STYLES = {"done": "green", "error": "red", "timeout": "red", "gone": "yellow", "cancelled": "yellow"}
ERROR_CHARS = 120


# ---- values --------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def duration(seconds: float | None) -> str:
    """``0.35s``, ``12.3s``, ``4m 05s``, ``2h 03m``, ``3d 04h``; a dash when unknown."""
    if seconds is None:
        return NONE
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def when(value: Any, now: datetime, tz: tzinfo | None = None) -> str:
    """A point in time in the local (or given) zone with its distance from now: ``... (in 4m 05s)``."""
    at = parse_time(value)
    if at is None:
        return NONE
    delta = (at - now).total_seconds()
    relative = f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} ago"
    return f"{at.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}".strip() + f" ({relative})"


def timestamp(value: Any, tz: tzinfo | None = None) -> str:
    """A point in time in the local (or given) zone, without the distance from now."""
    at = parse_time(value)
    return NONE if at is None else f"{at.astimezone(tz):%Y-%m-%d %H:%M:%S}"


def elapsed(start: Any, end: Any, now: datetime) -> float | None:
    """Seconds from ``start`` to ``end`` (or to now while it goes on)."""
    began = parse_time(start)
    if began is None:
        return None
    return ((parse_time(end) or now) - began).total_seconds()


def cut(text: str, limit: int = ERROR_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def two_lines(main: str, detail: str) -> Text:
    """A cell with a second, dimmed line."""
    return Text(main) + Text(f"\n{detail}", style="dim")


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def step_result(step: Mapping[str, Any]) -> str:
    if step.get("ended_at") is None:
        return "running"
    return "done" if step.get("success") else "failed"


def outcomes(step: Mapping[str, Any]) -> Text:
    """One line per waited-for subscriber: ``id outcome: error``."""
    text = Text()
    for sid, outcome in (step.get("subscribers") or {}).items():
        if text:
            text.append("\n")
        name = str(outcome.get("outcome", "?"))
        text.append(f"{sid} ")
        text.append(name, style=OUTCOME_STYLES.get(name, "cyan"))
        if outcome.get("error"):
            text.append(f": {cut(str(outcome['error']))}")
    return text


def progress_counts(progress: Mapping[str, Any]) -> tuple[float, float]:
    """``(current, total)`` of a progress object; a tree sums its parts."""
    if progress.get("kind") == "tree":
        parts = [progress_counts(p) for p in progress.get("parts") or []]
        return sum(c for c, _ in parts), sum(t for _, t in parts)
    return float(progress.get("current") or 0), float(progress.get("total") or 0)


def progress_line(subscriber: str, data: Mapping[str, Any]) -> str:
    """``worker-1 collect: aws 3/10 (30%)`` from the data of an action_progress message."""
    progress = data.get("progress") or {}
    current, total = progress_counts(progress)
    share = f" ({current / total:.0%})" if total else ""
    context = "/".join(str(c) for c in data.get("context") or [])
    where = f" [{context}]" if context else ""
    return f"{subscriber} {data.get('step', '?')}: {progress.get('name', '?')} {current:g}/{total:g}{share}{where}"


def triggers(workflow: Mapping[str, Any]) -> str:
    parts = []
    for trigger in workflow.get("triggers") or []:
        if trigger.get("kind") == "time":
            parts.append(f"cron {trigger.get('cron')} ({trigger.get('timezone', 'UTC')})")
        else:
            parts.append(f"event {trigger.get('message_type')}")
    return "\n".join(parts) or NONE


# ---- tables --------------------------------------------------------------------------------------


class PlainTable(Table):
    """A table whose string cells are shown as they are: names like ``web[1]`` are not rich markup."""

    def add_row(self, *cells: RenderableType | None, style: StyleType | None = None, end_section: bool = False) -> None:
        plain = [Text(cell) if isinstance(cell, str) else cell for cell in cells]
        super().add_row(*plain, style=style, end_section=end_section)


def table(title: str, *headers: str) -> Table:
    """A table with a left-aligned title; id columns fold instead of being cut, so ids stay whole."""
    result = PlainTable(*headers, title=title, title_justify="left")
    for column in result.columns:
        if column.header in ("Task", "Subscriber", "Running"):
            column.overflow = "fold"
    return result


def workflows_table(workflows: Iterable[Mapping[str, Any]], now: datetime, tz: tzinfo | None = None) -> Table:
    result = table("Workflows", "Workflow", "Steps", "Triggers", "Next run", "Running")
    for w in workflows:
        running = "\n".join(w.get("running") or []) or NONE
        if w.get("queued"):
            running += "\n+ 1 queued"
        result.add_row(
            two_lines(str(w.get("id")), str(w.get("name", ""))),
            str(len(w.get("steps") or [])),
            triggers(w),
            when(w.get("next_run"), now, tz),
            running,
        )
    return result


def tasks_table(tasks: Iterable[Mapping[str, Any]], now: datetime, tz: tzinfo | None = None) -> Table:
    result = table("Running", "Task", "Workflow", "Started", "Step", "In step", "Waiting for", "Progress")
    for task in tasks:
        progress = task.get("progress") or {}
        result.add_row(
            str(task.get("id")),
            two_lines(str(task.get("workflow")), str(task.get("trigger", ""))),
            timestamp(task.get("created_at"), tz),
            str(task.get("step") or NONE),
            duration(elapsed(task.get("step_started_at"), None, now)),
            "\n".join(task.get("waiting_for") or []) or NONE,
            "\n".join(progress_line(sid, data) for sid, data in progress.items()) or NONE,
        )
    return result


def runs_table(runs: Iterable[Mapping[str, Any]], now: datetime, title: str, tz: tzinfo | None = None) -> Table:
    result = table(title, "Task", "Status", "Started", "Duration", "Slowest step", "Error")
    for run in runs:
        slowest = max(run.get("steps") or [], key=lambda s: s.get("duration") or 0, default=None)
        status = status_text(str(run.get("status")))
        status.append(f"\n{run.get('trigger', '')}", style="dim")
        result.add_row(
            str(run.get("id")),
            status,
            timestamp(run.get("created_at"), tz),
            duration(elapsed(run.get("created_at"), run.get("ended_at"), now)),
            f"{slowest['name']} {duration(slowest.get('duration'))}" if slowest else NONE,
            cut(str(run.get("error") or "")),
        )
    return result


def steps_table(run: Mapping[str, Any], now: datetime) -> Table:
    """Every step of one run: result, duration, each waited-for subscriber's outcome."""
    title = f"{run.get('workflow')} {run.get('id')}: {run.get('status')}"
    result = table(title, "Step", "Result", "Duration", "Subscribers")
    for step in run.get("steps") or []:
        state = step_result(step)
        result.add_row(
            str(step.get("name")),
            Text(state, style={"done": "green", "failed": "red"}.get(state, "cyan")),
            duration(step.get("duration") or elapsed(step.get("started_at"), step.get("ended_at"), now)),
            outcomes(step),
        )
    return result


def subscribers_table(subscribers: Iterable[Mapping[str, Any]]) -> Table:
    result = table("Subscribers", "Subscriber", "Action", "Waited for", "Timeout")
    for subscriber in subscribers:
        for subscription in (subscriber.get("subscriptions") or {}).values():
            result.add_row(
                str(subscriber.get("id")),
                str(subscription.get("message_type")),
                "yes" if subscription.get("wait_for_completion") else "no",
                f"{subscription.get('timeout')}s",
            )
    return result
