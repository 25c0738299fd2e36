"""The storage protocol every backend implements, and the unit of work it commits atomically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from resotocore.workflow.machine import Run
from resotolib.protocol import Subscriber, SubscriberId, TaskId


class StoreError(RuntimeError):
    """The store could not read or write; nothing of the failed commit was applied."""


@dataclass(frozen=True)
class QueuedRun:
    workflow_id: str
    trigger: str
    queued_at: datetime


@dataclass
class Changes:
    """Everything one state change writes. A backend applies all of it in one transaction, or nothing."""

    runs: list[Run] = field(default_factory=list)
    steps_from: dict[TaskId, int] = field(default_factory=dict)
    """Per run, the first step that changed; steps before it are already stored (default: all)."""
    subscribers: list[Subscriber] = field(default_factory=list)
    deleted_subscribers: list[SubscriberId] = field(default_factory=list)
    queued: list[QueuedRun] = field(default_factory=list)
    dequeued: list[str] = field(default_factory=list)
    trigger_times: dict[str, datetime] = field(default_factory=dict)

    def add_run(self, run: Run, first_changed_step: int = 0) -> None:
        """Write `run`; steps before `first_changed_step` are unchanged since they were stored."""
        self.runs = [r for r in self.runs if r.id != run.id] + [run]
        previous = self.steps_from.get(run.id)
        self.steps_from[run.id] = first_changed_step if previous is None else min(previous, first_changed_step)


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total: int


class Store(Protocol):
    async def commit(self, changes: Changes) -> None: ...

    async def subscribers(self) -> list[Subscriber]: ...

    async def running(self) -> list[Run]: ...

    async def run(self, task_id: TaskId) -> Run | None: ...

    async def history(self, workflow_id: str, limit: int, offset: int) -> RunPage: ...

    async def queue(self) -> list[QueuedRun]: ...

    async def trigger_times(self) -> dict[str, datetime]: ...

    def every_run(self) -> AsyncIterator[list[Run]]:
        """Every stored run with its steps, in the order the runs were first stored (export)."""
        ...

    async def close(self) -> None: ...
