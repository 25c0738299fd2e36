"""The workflow handler: feeds inputs to the pure machine, persists, then carries out the commands.

Every state change follows one path: compute the transition, commit it to the store, only then send
actions and events. A lock keeps transitions of concurrent inputs in order. Answers that cannot
complete their step are queued and applied in batches (``receive``): a step awaited by a hundred
subscribers is copied and committed a few times instead of a hundred. A commit
the store refuses (disk full, files made read-only, server unreachable) is retried with a capped
backoff, holding the lock, until the store takes it or the core stops: nothing leaves the core before
its state change is stored, and no input (an answer, a deadline) is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Literal

import structlog

from resotocore.bus.message_bus import MessageBus
from resotocore.bus.subscribers import SubscriberRegistry
from resotocore.clock import Clock, Timer
from resotocore.db.store import Changes, QueuedRun, Store, StoreError
from resotocore.metrics import CoreMetrics
from resotocore.workflow import machine as m
from resotocore.workflow.model import Workflow
from resotocore.workflow.progress import StepProgress
from resotocore.workflow.surpass import decide
from resotolib.protocol import (
    ActionDone,
    ActionError,
    ActionInfo,
    ActionProgress,
    ActionProgressData,
    Event,
    SubscriberId,
    TaskId,
    action_frame,
    serialize,
)

log = structlog.get_logger(__name__)

INBOX_LIMIT = 1000
"""Answers queued but not applied yet beyond which a subscriber's socket waits (and stops reading)."""

RECOVERY_GRACE = timedelta(seconds=60)
"""After a restart, subscribers get at least this long to reconnect and answer a pending action."""


@dataclass(frozen=True)
class Backoff:
    """Seconds between attempts to commit to a failing store: doubling from `first`, at most `longest`."""

    first: float = 0.05
    longest: float = 5.0


class UnknownWorkflow(KeyError):
    def __str__(self) -> str:
        return f"unknown workflow {self.args[0]!r}"


@dataclass(frozen=True)
class StartResult:
    status: Literal["started", "queued", "skipped"]
    reason: str
    task_id: TaskId | None = None
    workflow_id: str = ""


@dataclass
class _Pending:
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class Engine:
    def __init__(
        self,
        workflows: Iterable[Workflow],
        store: Store,
        registry: SubscriberRegistry,
        bus: MessageBus,
        clock: Clock,
        metrics: CoreMetrics,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        retry: Backoff = Backoff(),
    ) -> None:
        self.workflows = {w.id: w for w in workflows}
        self._store = store
        self._registry = registry
        self._bus = bus
        self._clock = clock
        self._metrics = metrics
        self._new_id = new_id
        self._retry = retry
        self._stopping = asyncio.Event()
        self.store_error: str | None = None
        """Why the last commit failed, while the store refuses commits (None when it takes them)."""
        self._runs: dict[TaskId, m.Run] = {}
        self._queued: dict[str, QueuedRun] = {}
        self._timers: dict[TaskId, Timer] = {}
        self._progress: dict[TaskId, dict[SubscriberId, StepProgress]] = {}
        self._pending = _Pending()
        self._lock = asyncio.Lock()
        self._dirty = Changes()
        self._flush_scheduled = False
        self._inbox: list[tuple[TaskId, m.Answer | m.Info]] = []
        self._inbox_applied: asyncio.Future[None] | None = None
        self._event_types = {t.message_type for w in self.workflows.values() for t in w.event_triggers}

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the runs that were going on when the core stopped, and the queue of waiting runs."""
        now = self._clock.now()
        self._queued = {q.workflow_id: q for q in await self._store.queue()}
        for run in await self._store.running():
            if run.workflow_id not in self.workflows:
                error = "workflow is no longer defined"
                ended = replace(run, status=m.RunStatus.cancelled, ended_at=now, error=error)
                changes = Changes()
                changes.add_run(ended, len(ended.steps))
                await self._store.commit(changes)
                continue
            self._runs[run.id] = run
            log.info("run_resumed", task=run.id, workflow=run.workflow_id, step=run.current and run.current.name)
            if run.current:
                self._arm(run.id, max(run.current.deadline, now + RECOVERY_GRACE))
                for sid in run.current.waiting_for:
                    if self._registry.get(sid) is None:
                        await self._apply(run.id, m.SubscriberGone(sid))
        for workflow_id in list(self._queued):
            if not self._running_of(workflow_id):
                await self._start_queued(workflow_id)

    async def stop(self) -> None:
        self._stopping.set()
        try:
            await self._flush()  # answers received are applied first
        except StoreError as e:
            log.error("store_flush_failed", error=str(e), reason="core stopping")
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._pending.tasks)
        for task in tasks:
            task.cancel("core is shutting down")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every task the engine spawned has finished (used by tests and shutdown)."""
        while self._pending.tasks:
            await asyncio.gather(*list(self._pending.tasks), return_exceptions=True)

    # ---- queries ------------------------------------------------------------------------------------

    def running(self) -> list[m.Run]:
        return sorted(self._runs.values(), key=lambda r: r.created_at)

    def get(self, task_id: TaskId) -> m.Run | None:
        return self._runs.get(task_id)

    def progress(self, task_id: TaskId) -> dict[SubscriberId, ActionProgressData]:
        """Each subscriber's progress in the run's current step, its parts merged (see resotocore.workflow.progress)."""
        run, reported = self._runs.get(task_id), self._progress.get(task_id, {})
        step = run.current.name if run is not None and run.current is not None else None
        return {sid: merged for sid, p in reported.items() if p.step == step and (merged := p.merged()) is not None}

    def queued(self) -> list[QueuedRun]:
        return list(self._queued.values())

    def pending_actions(self, sid: SubscriberId) -> list[str]:
        """Frames of every action this subscriber still owes an answer for (re-sent on connect)."""
        frames = []
        for run in self.running():
            current = run.current
            if current and sid in current.waiting_for:
                frames.append(action_frame(current.message_type, run.id, current.name))
        return frames

    # ---- inputs -------------------------------------------------------------------------------------

    async def trigger(self, workflow_id: str, trigger: str, fired: dict[str, datetime] | None = None) -> StartResult:
        """Start a run of the workflow as its on_surpass policy allows; `fired` records trigger times."""
        workflow = self.workflows.get(workflow_id)
        if workflow is None:
            raise UnknownWorkflow(workflow_id)
        async with self._lock:
            await self._apply_queued()
            running = tuple(r.id for r in self._running_of(workflow_id))
            decision = decide(workflow.on_surpass, running, workflow_id in self._queued)
            changes = Changes(trigger_times=dict(fired or {}))
            if decision.enqueue:
                queued = QueuedRun(workflow_id, trigger, self._clock.now())
                changes.queued.append(queued)
                await self._commit(changes)
                self._queued[workflow_id] = queued
                log.info("run_queued", workflow=workflow_id, trigger=trigger, reason=decision.reason)
                return StartResult("queued", decision.reason, workflow_id=workflow_id)
            if not decision.start:
                await self._commit(changes)
                log.info("run_skipped", workflow=workflow_id, trigger=trigger, reason=decision.reason)
                return StartResult("skipped", decision.reason, workflow_id=workflow_id)
            replaced = m.Cancel(f"replaced by a new run ({trigger})")
            cancelled = [(self._runs[t], self._transition(self._runs[t], replaced)) for t in decision.cancel]
            task_id = await self._start(workflow, trigger, changes, cancelled)
            return StartResult("started", decision.reason, task_id, workflow_id)

    async def on_event(self, message_type: str, data: dict[str, Any]) -> list[StartResult]:
        """Start every workflow with an event trigger matching this event."""
        results = []
        for workflow in self.workflows.values():
            if any(t.matches(message_type, data) for t in workflow.event_triggers):
                results.append(await self.trigger(workflow.id, f"event:{message_type}"))
        return results

    async def receive(self, sid: SubscriberId, message: ActionDone | ActionError | ActionInfo) -> None:
        """A subscriber's answer or info message. The answer that may complete its step is applied at once;
        the others are queued and applied together with whatever else arrives meanwhile (typically the
        answers of one loop iteration): each run is copied once and the batch committed once. Queueing
        costs them no time, since nothing leaves the core before the last answer. Waits only while the
        queue is full."""
        task_id, item = message.data.task, _input(sid, message)
        if isinstance(item, m.Answer) and not self._inbox and not self._lock.locked():
            run = self._runs.get(task_id)
            if run is None or m.may_complete(run, sid):
                await self._apply(task_id, item)
                return
        self._inbox.append((task_id, item))
        if self._inbox_applied is None:
            self._inbox_applied = asyncio.get_running_loop().create_future()
            # one loop iteration later than a task would: answers of the next iteration join the batch too
            asyncio.get_running_loop().call_soon(self._start_applying)
        if len(self._inbox) >= INBOX_LIMIT:
            await asyncio.shield(self._inbox_applied)

    def progress_update(self, sid: SubscriberId, message: ActionProgress) -> None:
        """Keep progress of the current step; a late message of an earlier step is dropped."""
        run = self._runs.get(message.data.task)
        if run is None or run.current is None or run.current.name != message.data.step:
            return
        reported = self._progress.setdefault(run.id, {})
        reported.setdefault(sid, StepProgress()).add(message.data)

    async def cancel(self, task_id: TaskId, reason: str = "cancelled by request") -> m.Run | None:
        if task_id not in self._runs:
            return None
        await self._apply(task_id, m.Cancel(reason))
        return await self._store.run(task_id)

    async def unsubscribed(self, sid: SubscriberId, message_types: frozenset[str]) -> None:
        for run in self.running():
            current = run.current
            if current and current.message_type in message_types and sid in current.waiting_for:
                await self._apply(run.id, m.SubscriberGone(sid))

    # ---- the one path of every change ---------------------------------------------------------------

    async def _apply(self, task_id: TaskId, event: m.Input) -> None:
        async with self._lock:
            await self._apply_queued()
            run = self._runs.get(task_id)
            if run is None:
                _ignored(task_id, event, "no such running task")
                return
            await self._apply_to(run, event)

    def _start_applying(self) -> None:
        self.spawn(self._apply_inbox())

    async def _apply_inbox(self) -> None:
        async with self._lock:
            await self._apply_queued()

    async def _apply_queued(self) -> None:
        """Apply the queued answers and info messages in order, each run's in one transition, and commit
        them once. The caller holds the lock; every holder calls this first, so inputs take effect in the
        order they came in (an answer queued before a cancel, a removal or an event is applied before it)."""
        if not self._inbox:
            return
        inbox, applied = self._inbox, self._inbox_applied
        self._inbox, self._inbox_applied = [], None
        try:
            transitions, changes, runs = [], Changes(), dict(self._runs)
            for task_id, group in itertools.groupby(inbox, key=itemgetter(0)):  # in order, per run
                inputs = [item for _, item in group]
                run = runs.get(task_id)
                if run is None or run.status is not m.RunStatus.running:
                    for item in inputs:
                        _ignored(task_id, item, "no such running task")
                    continue
                try:
                    workflow = self.workflows[run.workflow_id]
                    now = self._clock.now()
                    transition, ignored = m.advance_many(run, workflow, inputs, now, self._registry.lookup)
                except Exception:  # a bug applying one run's answers must not lose the other runs' answers
                    log.exception("answers_failed", task=task_id, answers=len(inputs))
                    continue
                for item, reason in ignored:
                    _ignored(task_id, item, reason)
                if transition.changed:
                    runs[task_id] = transition.run
                    changes.add_run(transition.run, _first_changed(run, transition.run))
                    transitions.append(transition)
            if transitions:
                await self._commit(changes)
                self._execute(transitions)
        finally:
            if applied is not None and not applied.done():
                applied.set_result(None)

    async def _apply_to(self, run: m.Run, event: m.Input) -> None:
        transition = self._transition(run, event)
        if not transition.changed:
            return
        first_changed = _first_changed(run, transition.run)
        if not transition.commands:
            # Nothing leaves the core (e.g. one answer of many): committed with the next flush.
            self._mark_dirty(transition.run, first_changed)
            return
        changes = Changes()
        changes.add_run(transition.run, first_changed)
        await self._commit(changes)
        self._execute([transition])

    async def _commit(self, changes: Changes) -> None:
        """Commit `changes` together with every change waiting for a flush: all or nothing."""
        dirty, self._dirty = self._dirty, Changes()
        for run in dirty.runs:
            first = dirty.steps_from[run.id]
            if any(r.id == run.id for r in changes.runs):
                changes.steps_from[run.id] = min(changes.steps_from.get(run.id, 0), first)
            else:
                changes.add_run(run, first)
        try:
            await self._store_commit(changes)
        except BaseException:
            for run in dirty.runs:
                if all(r.id != run.id for r in self._dirty.runs):
                    self._dirty.add_run(run, dirty.steps_from[run.id])
            raise

    async def _store_commit(self, changes: Changes) -> None:
        """Commit; while the store fails, report it (log, metric, /system/ready) and retry with backoff.
        Gives up (raises) only once the core is stopping."""
        delay, failures = self._retry.first, 0
        while True:
            try:
                await self._store.commit(changes)
            except StoreError as e:
                failures += 1
                self.store_error = str(e)
                self._metrics.store_errors.inc()
                if self._stopping.is_set():
                    raise
                log.error("store_commit_failed", error=str(e), attempt=failures, retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, self._retry.longest)
                continue
            if self.store_error is not None:
                log.warning("store_commit_recovered", attempts=failures + 1)
                self.store_error = None
            return

    def _mark_dirty(self, run: m.Run, first_changed: int) -> None:
        self._runs[run.id] = run
        self._dirty.add_run(run, first_changed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._schedule_flush)

    def _schedule_flush(self) -> None:
        # A commit with effects in this loop iteration may have taken the dirty changes along already.
        if self._dirty.runs:
            self.spawn(self._flush())
        else:
            self._flush_scheduled = False

    async def _flush(self) -> None:
        """Commit the changes of this loop iteration that have no effects of their own."""
        self._flush_scheduled = False
        async with self._lock:
            await self._apply_queued()
            if self._dirty.runs:
                await self._commit(Changes())

    def _transition(self, run: m.Run, event: m.Input) -> m.Transition:
        workflow = self.workflows[run.workflow_id]
        transition = m.advance(run, workflow, event, self._clock.now(), self._registry.lookup)
        if transition.ignored:
            _ignored(run.id, event, transition.ignored)
        return transition

    async def _start(
        self, workflow: Workflow, trigger: str, changes: Changes, cancelled: list[tuple[m.Run, m.Transition]]
    ) -> TaskId:
        now = self._clock.now()
        run, commands = m.new_run(TaskId(self._new_id()), workflow, trigger, now)
        started = m.advance(run, workflow, m.Start(), now, self._registry.lookup)
        first = m.Transition(started.run, [*commands, *started.commands])
        transitions = [t for _, t in cancelled] + [first]
        for before, t in cancelled:
            changes.add_run(t.run, _first_changed(before, t.run))
        changes.add_run(first.run, 0)
        await self._commit(changes)
        self._metrics.runs_started.labels(workflow.id).inc()
        log.info("run_started", task=run.id, workflow=workflow.id, trigger=trigger)
        self._execute(transitions)
        return run.id

    async def _start_queued(self, workflow_id: str) -> None:
        queued = self._queued.get(workflow_id)
        if queued is None or workflow_id not in self.workflows:
            return
        trigger = f"queued:{queued.trigger}"
        await self._start(self.workflows[workflow_id], trigger, Changes(dequeued=[workflow_id]), [])
        self._queued.pop(workflow_id, None)

    def _execute(self, transitions: list[m.Transition]) -> None:
        for transition in transitions:
            run = transition.run
            if run.status is m.RunStatus.running:
                self._runs[run.id] = run
            for command in transition.commands:
                self._carry_out(run, command)

    def _carry_out(self, run: m.Run, command: m.Command) -> None:
        match command:
            case m.SendAction(task, step, message_type, to):
                frame = action_frame(message_type, task, step)
                for sid in to:
                    self._registry.send(sid, frame)
                self._bus.emit(message_type, lambda: frame)
            case m.EmitEvent(message_type, data, step):
                self.emit_event(message_type, data)
                if step is not None:
                    self._observe_step(run, step)
            case m.ArmDeadline(task, at):
                self._arm(task, at)
            case m.RunEnded(ended):
                self._ended(ended)

    def emit_event(
        self,
        message_type: str,
        data: dict[str, Any],
        trigger: bool = True,
        retain_until: datetime | None = None,
        key: str = "",
    ) -> None:
        """Put an event on the bus; with `trigger`, start the workflows it triggers in the background.
        With `retain_until`, observers connecting until then receive it too (see the bus)."""
        self._bus.emit(message_type, lambda: serialize(Event(message_type=message_type, data=data)), retain_until, key)
        if trigger and message_type in self._event_types:
            self.spawn(self.on_event(message_type, data))

    def _ended(self, run: m.Run) -> None:
        self._runs.pop(run.id, None)
        self._progress.pop(run.id, None)
        timer = self._timers.pop(run.id, None)
        if timer:
            timer.cancel()
        self._metrics.runs_finished.labels(run.workflow_id, run.status.value).inc()
        log.info("run_ended", task=run.id, workflow=run.workflow_id, status=run.status.value, error=run.error)
        if run.workflow_id in self._queued and not self._running_of(run.workflow_id):
            self.spawn(self._locked(self._start_queued, run.workflow_id))

    async def _locked(self, fn: Callable[[str], Awaitable[None]], arg: str) -> None:
        async with self._lock:
            await self._apply_queued()
            if not self._running_of(arg):
                await fn(arg)

    def _observe_step(self, run: m.Run, index: int) -> None:
        step_run = run.steps[index]
        if step_run.ended_at is not None:
            seconds = (step_run.ended_at - step_run.started_at).total_seconds()
            self._metrics.step_ended(run.workflow_id, step_run.name, seconds)

    def _arm(self, task_id: TaskId, at: datetime) -> None:
        previous = self._timers.pop(task_id, None)
        if previous:
            previous.cancel()
        self._timers[task_id] = self._clock.call_at(at, lambda: self.spawn(self._apply(task_id, m.Deadline())))

    def _running_of(self, workflow_id: str) -> list[m.Run]:
        return [r for r in self._runs.values() if r.workflow_id == workflow_id]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, tracked so shutdown can wait for or cancel it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background_task_failed", error=repr(error), exc_info=error)


def _input(sid: SubscriberId, message: ActionDone | ActionError | ActionInfo) -> m.Answer | m.Info:
    match message:
        case ActionInfo(data=data):
            return m.Info(sid, data.step, data.level, data.message)
        case ActionError(data=data):
            return m.Answer(sid, data.step, data.error)
        case ActionDone(data=data):
            return m.Answer(sid, data.step)


def _ignored(task_id: TaskId, event: m.Input, reason: str) -> None:
    """An answer that changes nothing (late, duplicate, unknown task or step) is a subscriber's mistake
    worth a warning; other inputs that no longer apply (a stale deadline) are routine."""
    if isinstance(event, m.Answer):
        log.warning("answer_ignored", task=task_id, subscriber_id=event.subscriber_id, step=event.step, reason=reason)
    else:
        log.debug("input_ignored", task=task_id, input=type(event).__name__, reason=reason)


def _first_changed(before: m.Run, after: m.Run) -> int:
    """Index of the first step that differs (the machine keeps unchanged steps as the same objects)."""
    last = min(len(before.steps), len(after.steps)) - 1
    if last > 0 and before.steps[:last] == after.steps[:last]:  # most inputs change only the last step
        return last if before.steps[last] is not after.steps[last] else last + 1
    for index, (old, new) in enumerate(zip(before.steps, after.steps, strict=False)):
        if old is not new:
            return index
    return min(len(before.steps), len(after.steps))
