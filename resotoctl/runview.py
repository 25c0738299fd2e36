"""What ``workflows run --wait`` shows, as pure state: messages of the event stream and snapshots of
the task go in (with the time passed in), a rich renderable comes out.

Events make the view quick (``step_started``, ``step_end``, ``task_end``, answers, ``action_info``);
snapshots (``GET /tasks/{id}``) make it right, whatever events were missed. Progress comes from the
snapshots only: the core merges the parts a subscriber reports (one per account or region) into one
tree, where a single ``action_progress`` message holds one part. A run that
was queued is picked up by its ``task_started`` event (trigger ``queued:...``) or by a snapshot of the
workflow listing a running task that was not running before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.text import Text

from resotoctl.render import (
    NONE,
    PlainTable,
    cut,
    duration,
    parse_time,
    progress_counts,
    progress_line,
    status_text,
    step_result,
)
from resotolib.protocol import ActionDone, ActionError, ActionInfo, Authorization, Event, Message

ENDED = frozenset({"succeeded", "failed", "cancelled"})
NOTES = 5
STATE_STYLES = {"pending": "dim", "running": "cyan", "done": "green", "failed": "red"}


@dataclass
class StepView:
    name: str
    state: str = "pending"
    started: datetime | None = None
    ended: datetime | None = None
    waiting_for: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)


@dataclass
class RunView:
    workflow: str
    steps: dict[str, StepView]
    task_id: str | None = None
    status: str = "running"
    error: str | None = None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=NOTES))
    running_before: frozenset[str] = frozenset()
    """Tasks of the workflow that ran before a queued run was asked for: not the one to watch."""

    @classmethod
    def of(cls, workflow: Mapping[str, Any], task_id: str | None = None) -> RunView:
        """A view of a run of ``workflow`` (its JSON from GET /workflows) with every step pending."""
        names = [str(s.get("name")) for s in workflow.get("steps") or []]
        before = frozenset(str(t) for t in workflow.get("running") or [])
        return cls(str(workflow.get("id")), {n: StepView(n) for n in names}, task_id, running_before=before)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def concerns(self, message: Message) -> bool:
        """True when the message is about the watched run (always False before the run is known)."""
        return self.task_id is not None and _task_of(message) == self.task_id

    def adopt_from(self, running: Iterable[str]) -> bool:
        """Pick up a queued run from the workflow's running tasks; True once the run is known."""
        if self.task_id is None:
            started = sorted(set(running) - self.running_before)
            if started:
                self.task_id = started[0]
        return self.task_id is not None

    def apply(self, message: Message, now: datetime) -> bool:
        """Apply one message of the event stream; True when the view changed."""
        if self.task_id is None and isinstance(message, Event) and message.message_type == "task_started":
            data = message.data
            queued = str(data.get("trigger", "")).startswith("queued")
            if data.get("workflow") == self.workflow and queued and data.get("task") not in self.running_before:
                self.task_id = str(data.get("task"))
                return True
        if not self.concerns(message):
            return False
        match message:
            case Event(message_type="step_started", data=data) if str(data.get("step")) in self.steps:
                step = self.steps[str(data["step"])]
                step.state, step.started = "running", step.started or now
            case Event(message_type="step_end", data=data) if str(data.get("step")) in self.steps:
                step = self.steps[str(data["step"])]
                step.state, step.ended, step.waiting_for = ("done" if data.get("success") else "failed"), now, []
            case Event(message_type="task_end", data=data):
                self.status = str(data.get("status") or ("succeeded" if data.get("success") else "failed"))
                self.error = str(data["error"]) if data.get("error") else None
            case ActionDone() | ActionError() if message.data.step in self.steps and message.data.subscriber_id:
                step, sid = self.steps[message.data.step], str(message.data.subscriber_id)
                error = message.data.error if isinstance(message, ActionError) else None
                step.outcomes[sid] = "done" if error is None else f"error: {error}"
                step.waiting_for = [s for s in step.waiting_for if s != sid]
            case ActionInfo(data=info):
                self.notes.append(f"{info.subscriber_id or '?'} {info.step} {info.level}: {cut(info.message)}")
            case _:
                return False
        return True

    def merge(self, task: Mapping[str, Any]) -> None:
        """Take the state of the run from a snapshot (GET /tasks/{id}): it is always right."""
        self.task_id = str(task.get("id") or self.task_id)
        self.status = str(task.get("status") or self.status)
        self.error = str(task["error"]) if task.get("error") else None
        for step in task.get("steps") or []:
            view = self.steps.setdefault(str(step.get("name")), StepView(str(step.get("name"))))
            view.state = step_result(step)
            view.started, view.ended = parse_time(step.get("started_at")), parse_time(step.get("ended_at"))
            subscribers = step.get("subscribers") or {}
            view.waiting_for = [sid for sid, o in subscribers.items() if o.get("outcome") == "waiting"]
            for sid, o in subscribers.items():
                if o.get("outcome") != "waiting":
                    view.outcomes[sid] = str(o.get("outcome")) + (f": {o['error']}" if o.get("error") else "")
        self.progress = {str(sid): dict(data) for sid, data in (task.get("progress") or {}).items()}


def render(view: RunView, now: datetime) -> RenderableType:
    """The live view: one line per step, a bar per subscriber reporting progress, the latest notes."""
    header = Text(f"{view.workflow} {view.task_id or '(queued, not started yet)'}: ")
    header.append_text(status_text(view.status))
    if view.error:
        header.append(f" — {cut(view.error)}")
    steps = PlainTable("Step", "State", "Duration", "Waiting for / answers", box=None, pad_edge=False)
    for step in view.steps.values():
        seconds = (step.ended or now) - step.started if step.started else None
        answers = ", ".join(step.waiting_for) or "; ".join(f"{s} {cut(o, 60)}" for s, o in step.outcomes.items())
        steps.add_row(
            step.name,
            Text(step.state, style=STATE_STYLES.get(step.state, "")),
            duration(seconds.total_seconds()) if seconds is not None else NONE,
            answers or "",
        )
    parts: list[RenderableType] = [header, steps]
    running = {s.name for s in view.steps.values() if s.state == "running"}
    bars = PlainTable(box=None, show_header=False, pad_edge=False)
    for sid, data in sorted(view.progress.items()):
        if data.get("step") in running:
            current, total = progress_counts(data.get("progress") or {})
            bars.add_row(ProgressBar(total=total or None, completed=current, width=30), progress_line(sid, data))
    if bars.row_count:
        parts.append(bars)
    parts.extend(Text(note, style="dim") for note in view.notes)
    return Group(*parts)


def _task_of(message: Message) -> str | None:
    if isinstance(message, Authorization):
        return None
    if isinstance(message, Event):
        task = message.data.get("task")
        return str(task) if task is not None else None
    return str(message.data.task)
