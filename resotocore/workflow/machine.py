"""The pure workflow state machine: ``advance(run, workflow, input, now, subscribers) -> Transition``.

No I/O and no clock reads: the handler feeds inputs and the current time, persists the new run state,
and then carries out the returned commands (send actions, emit events, arm a deadline timer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from resotocore.workflow.model import OnError, Workflow
from resotolib.protocol import SubscriberId, Subscription, TaskId

MAX_INFO_PER_STEP = 100

SubscriberLookup = Callable[[str], Sequence[tuple[SubscriberId, Subscription]]]
"""Given a message type, the subscribers subscribed to it right now."""


class RunStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Outcome(StrEnum):
    waiting = "waiting"
    done = "done"
    error = "error"
    timeout = "timeout"
    gone = "gone"
    cancelled = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberOutcome:
    outcome: Outcome = Outcome.waiting
    error: str | None = None
    at: datetime | None = None


WAITING = SubscriberOutcome()
"""The outcome of every subscriber when a step starts (outcomes are immutable, so one is shared)."""


def _still_waiting(outcomes: dict[SubscriberId, SubscriberOutcome]) -> bool:
    # Answers arrive roughly in the order the actions went out (the order of this dict), so the last
    # entries are the likely waiting ones: looking from the end keeps a step of N answers O(N).
    for o in reversed(outcomes.values()):
        if o.outcome is Outcome.waiting:
            return True
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoEntry:
    subscriber_id: SubscriberId
    level: str
    message: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRun:
    name: str
    message_type: str
    started_at: datetime
    deadline: datetime
    ended_at: datetime | None = None
    success: bool | None = None
    subscribers: dict[SubscriberId, SubscriberOutcome] = field(default_factory=dict)
    notified: tuple[SubscriberId, ...] = ()
    info: tuple[InfoEntry, ...] = ()

    @property
    def waiting_for(self) -> list[SubscriberId]:
        return [sid for sid, o in self.subscribers.items() if o.outcome is Outcome.waiting]

    @property
    def still_waiting(self) -> bool:
        return _still_waiting(self.subscribers)

    @property
    def errors(self) -> list[str]:
        return [f"{sid}: {o.outcome.value}: {o.error}" for sid, o in self.subscribers.items() if o.error]


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: TaskId
    workflow_id: str
    trigger: str
    status: RunStatus = RunStatus.running
    created_at: datetime
    ended_at: datetime | None = None
    steps: tuple[StepRun, ...] = ()
    error: str | None = None

    @property
    def current(self) -> StepRun | None:
        return self.steps[-1] if self.steps and self.status is RunStatus.running else None

    @property
    def success(self) -> bool:
        return self.status is RunStatus.succeeded


# ---- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Answer:
    subscriber_id: SubscriberId
    step: str
    error: str | None = None


@dataclass(frozen=True)
class Info:
    subscriber_id: SubscriberId
    step: str
    level: str
    message: str


@dataclass(frozen=True)
class Deadline:
    """The step deadline timer fired; a no-op if the deadline is not reached or belongs to another step."""


@dataclass(frozen=True)
class SubscriberGone:
    subscriber_id: SubscriberId


@dataclass(frozen=True)
class Cancel:
    reason: str


Input = Start | Answer | Info | Deadline | SubscriberGone | Cancel


# ---- commands ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendAction:
    task: TaskId
    step: str
    message_type: str
    to: tuple[SubscriberId, ...]


@dataclass(frozen=True)
class EmitEvent:
    message_type: str
    data: dict[str, Any]
    step: int | None = None
    """For step_end: the index of the step in the run (the engine observes its duration; not sent)."""


@dataclass(frozen=True)
class ArmDeadline:
    task: TaskId
    at: datetime


@dataclass(frozen=True)
class RunEnded:
    run: Run


Command = SendAction | EmitEvent | ArmDeadline | RunEnded


@dataclass(frozen=True)
class Transition:
    run: Run
    commands: list[Command] = field(default_factory=list)
    ignored: str | None = None

    @property
    def changed(self) -> bool:
        return self.ignored is None


class IllegalTransition(RuntimeError):
    def __init__(self, run: Run, event: Input) -> None:
        super().__init__(f"run {run.id} in status {run.status} cannot take {type(event).__name__}")


# ---- the machine ------------------------------------------------------------------------------------


def advance(run: Run, workflow: Workflow, event: Input, now: datetime, subscribers: SubscriberLookup) -> Transition:
    """Apply one input to a run. Inputs that do not apply yield ``Transition(run, ignored=reason)``."""
    if run.status is not RunStatus.running:
        if isinstance(event, Start | Cancel):
            raise IllegalTransition(run, event)
        return Transition(run, ignored=f"run is {run.status}")
    match event:
        case Start():
            if run.steps:
                raise IllegalTransition(run, event)
            return _enter(run, (), workflow, now, subscribers, [])
        case Answer():
            return advance_many(run, workflow, [event], now, subscribers)[0]
        case Info():
            return _record_info(run, event, now)
        case Deadline():
            return _deadline(run, workflow, now, subscribers)
        case SubscriberGone():
            return _subscriber_gone(run, workflow, event, now, subscribers)
        case Cancel():
            return _cancel(run, event, now)


def _enter(
    run: Run,
    steps: tuple[StepRun, ...],
    workflow: Workflow,
    now: datetime,
    subscribers: SubscriberLookup,
    commands: list[Command],
) -> Transition:
    """The run with `steps` (its steps so far, the last one ended) enters the next step, or ends when there
    is none; steps nobody waits for complete at once. The run is copied once, at the end."""
    while len(steps) < len(workflow.steps):
        step = workflow.steps[len(steps)]
        subs = subscribers(step.message_type)
        waiting = [sid for sid, s in subs if s.wait_for_completion]
        longest = max((s.timeout for _, s in subs if s.wait_for_completion), default=0)
        deadline = now + max(step.timeout, timedelta(seconds=longest))
        notified = tuple(sid for sid, _ in subs)
        commands.append(EmitEvent("step_started", _step_data(run, step.name)))
        if subs:
            commands.append(SendAction(run.id, step.name, step.message_type, notified))
        if waiting:
            step_run = StepRun(
                name=step.name,
                message_type=step.message_type,
                started_at=now,
                deadline=deadline,
                subscribers=dict.fromkeys(waiting, WAITING),
                notified=notified,
            )
            commands.append(ArmDeadline(run.id, deadline))
            return Transition(_with_steps(run, (*steps, step_run)), commands)
        step_run = StepRun(
            name=step.name,
            message_type=step.message_type,
            started_at=now,
            deadline=deadline,
            ended_at=now,
            success=True,
            notified=notified,
        )
        steps = (*steps, step_run)
        commands.append(EmitEvent("step_end", _step_data(run, step.name, True), len(steps) - 1))
    return _finish(_with_steps(run, steps), now, commands)


def advance_many(
    run: Run, workflow: Workflow, inputs: Sequence[Answer | Info], now: datetime, subscribers: SubscriberLookup
) -> tuple[Transition, list[tuple[Answer | Info, str]]]:
    """Apply answers and info messages in order, exactly as `advance` would one after the other, but copy
    the run once per step instead of once per answer. Returns the transition (ignored when no input
    applied) and every input ignored, with the reason."""
    ignored: list[tuple[Answer | Info, str]] = []
    commands: list[Command] = []
    changed = False
    index = 0
    while index < len(inputs):
        if run.status is not RunStatus.running:
            ignored.extend((item, f"run is {run.status}") for item in inputs[index:])
            break
        item = inputs[index]
        if isinstance(item, Info):
            transition, index = _record_info(run, item, now), index + 1
            if transition.ignored:
                ignored.append((item, transition.ignored))
        else:
            transition, index = _answer_step(run, workflow, inputs, index, now, subscribers, ignored)
        if transition.changed:
            run, changed = transition.run, True
            commands.extend(transition.commands)
    if not changed:
        return Transition(run, ignored=ignored[-1][1] if ignored else "nothing to apply"), ignored
    return Transition(run, commands), ignored


def may_complete(run: Run, sid: SubscriberId) -> bool:
    """Whether an answer of `sid` could complete the current step: nobody else is waited for."""
    current = run.current
    if current is None:
        return True
    for other, o in reversed(current.subscribers.items()):  # the likely waiting ones are last (see _still_waiting)
        if o.outcome is Outcome.waiting and other != sid:
            return False
    return True


def _answer_step(
    run: Run,
    workflow: Workflow,
    inputs: Sequence[Answer | Info],
    start: int,
    now: datetime,
    subscribers: SubscriberLookup,
    ignored: list[tuple[Answer | Info, str]],
) -> tuple[Transition, int]:
    """Apply the answers from `start` on to the current step until it completes or an info message comes;
    return the transition and the index of the first input not applied."""
    current = run.current
    assert current is not None
    outcomes: dict[SubscriberId, SubscriberOutcome] | None = None  # copied on the first answer that applies
    index = start
    while index < len(inputs) and isinstance(answer := inputs[index], Answer):
        index += 1
        if answer.step != current.name:
            ignored.append((answer, f"answer for step {answer.step!r}, current step is {current.name!r}"))
            continue
        previous = (current.subscribers if outcomes is None else outcomes).get(answer.subscriber_id)
        if previous is None:
            ignored.append((answer, "subscriber is not waited for in this step"))
            continue
        if previous.outcome is not Outcome.waiting:
            ignored.append((answer, f"subscriber already answered: {previous.outcome}"))
            continue
        if outcomes is None:
            outcomes = dict(current.subscribers)
            done = SubscriberOutcome(outcome=Outcome.done, at=now)  # outcomes are immutable: one for the batch
        if answer.error is None:
            outcomes[answer.subscriber_id] = done
        else:
            outcomes[answer.subscriber_id] = SubscriberOutcome(outcome=Outcome.error, error=answer.error, at=now)
        stop = answer.error is not None and workflow.step(len(run.steps) - 1).on_error is OnError.stop
        if stop or not _still_waiting(outcomes):
            return _complete_step(run, workflow, outcomes, now, subscribers), index
    if outcomes is None:
        return Transition(run, ignored="no answer applies"), index
    return Transition(_replace_current(run, _with_outcomes(current, outcomes)), []), index


def _deadline(run: Run, workflow: Workflow, now: datetime, subscribers: SubscriberLookup) -> Transition:
    current = run.current
    assert current is not None
    if now < current.deadline:  # the timer ran early (the wall clock was set back): wait again
        return Transition(run, [ArmDeadline(run.id, current.deadline)])
    timed_out = SubscriberOutcome(outcome=Outcome.timeout, error="no answer before the step timeout", at=now)
    outcomes = {sid: timed_out if o.outcome is Outcome.waiting else o for sid, o in current.subscribers.items()}
    return _complete_step(run, workflow, outcomes, now, subscribers)


def _subscriber_gone(
    run: Run, workflow: Workflow, event: SubscriberGone, now: datetime, subscribers: SubscriberLookup
) -> Transition:
    current = run.current
    assert current is not None
    previous = current.subscribers.get(event.subscriber_id)
    if previous is None or previous.outcome is not Outcome.waiting:
        return Transition(run, ignored="subscriber is not waited for")
    gone = SubscriberOutcome(outcome=Outcome.gone, error="subscriber was removed", at=now)
    outcomes = {**current.subscribers, event.subscriber_id: gone}
    if _still_waiting(outcomes):
        return Transition(_replace_current(run, _with_outcomes(current, outcomes)), [])
    return _complete_step(run, workflow, outcomes, now, subscribers)


def _complete_step(
    run: Run,
    workflow: Workflow,
    outcomes: dict[SubscriberId, SubscriberOutcome],
    now: datetime,
    subscribers: SubscriberLookup,
) -> Transition:
    """End the current step with these outcomes (whoever is still waiting is cancelled), then go on."""
    current = run.current
    assert current is not None
    success = all(o.outcome is Outcome.done for o in outcomes.values())
    if not success:  # only then may somebody still be waiting (the step stopped at an error)
        stopped = SubscriberOutcome(outcome=Outcome.cancelled, at=now)
        outcomes = {sid: stopped if o.outcome is Outcome.waiting else o for sid, o in outcomes.items()}
    ended = _with_outcomes(current, outcomes, ended_at=now, success=success)
    steps = (*run.steps[:-1], ended)
    commands: list[Command] = [EmitEvent("step_end", _step_data(run, ended.name, success), len(steps) - 1)]
    if not success and workflow.steps[len(steps) - 1].on_error is OnError.stop:
        error = f"step {ended.name} failed: " + ("; ".join(ended.errors) or "unknown error")
        return _end(_with_steps(run, steps), RunStatus.failed, now, commands, error)
    return _enter(run, steps, workflow, now, subscribers, commands)


def _finish(run: Run, now: datetime, commands: list[Command]) -> Transition:
    failed = [s.name for s in run.steps if not s.success]
    if failed:
        return _end(run, RunStatus.failed, now, commands, f"steps failed: {', '.join(failed)}")
    return _end(run, RunStatus.succeeded, now, commands, None)


def _cancel(run: Run, event: Cancel, now: datetime) -> Transition:
    current = run.current
    if current is not None and current.ended_at is None:
        cancelled = SubscriberOutcome(outcome=Outcome.cancelled, at=now)
        outcomes = {sid: cancelled if o.outcome is Outcome.waiting else o for sid, o in current.subscribers.items()}
        run = _replace_current(run, replace(current, subscribers=outcomes, ended_at=now))
    return _end(run, RunStatus.cancelled, now, [], event.reason)


def _end(run: Run, status: RunStatus, now: datetime, commands: list[Command], error: str | None) -> Transition:
    run = replace(run, status=status, ended_at=now, error=error)
    data = {"task": run.id, "workflow": run.workflow_id, "success": run.success, "status": status.value}
    if error:
        data["error"] = error
    return Transition(run, [*commands, EmitEvent("task_end", data), RunEnded(run)])


def _record_info(run: Run, event: Info, now: datetime) -> Transition:
    for index, step_run in enumerate(run.steps):
        if step_run.name == event.step:
            if len(step_run.info) >= MAX_INFO_PER_STEP:
                return Transition(run, ignored="too many info messages for this step")
            entry = InfoEntry(subscriber_id=event.subscriber_id, level=event.level, message=event.message, at=now)
            updated = replace(step_run, info=(*step_run.info, entry))
            steps = (*run.steps[:index], updated, *run.steps[index + 1 :])
            return Transition(replace(run, steps=steps), [])
    return Transition(run, ignored=f"run has no step {event.step!r}")


# The copies made for every answer and every step are spelled out: dataclasses.replace costs three
# times as much. test_machine checks that they carry every other field over.


def _with_outcomes(
    step: StepRun,
    outcomes: dict[SubscriberId, SubscriberOutcome],
    ended_at: datetime | None = None,
    success: bool | None = None,
) -> StepRun:
    """`step` with these subscriber outcomes; with `ended_at`, ended with `success`."""
    return StepRun(
        name=step.name,
        message_type=step.message_type,
        started_at=step.started_at,
        deadline=step.deadline,
        ended_at=step.ended_at if ended_at is None else ended_at,
        success=step.success if ended_at is None else success,
        subscribers=outcomes,
        notified=step.notified,
        info=step.info,
    )


def _replace_current(run: Run, step_run: StepRun) -> Run:
    return _with_steps(run, (*run.steps[:-1], step_run))


def _with_steps(run: Run, steps: tuple[StepRun, ...]) -> Run:
    return Run(
        id=run.id,
        workflow_id=run.workflow_id,
        trigger=run.trigger,
        status=run.status,
        created_at=run.created_at,
        ended_at=run.ended_at,
        steps=steps,
        error=run.error,
    )


def _step_data(run: Run, step: str, success: bool | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"task": run.id, "workflow": run.workflow_id, "step": step}
    if success is not None:
        data["success"] = success
    return data


def new_run(task_id: TaskId, workflow: Workflow, trigger: str, now: datetime) -> tuple[Run, list[Command]]:
    """A fresh run that has not entered its first step yet, and the event announcing it."""
    run = Run(id=task_id, workflow_id=workflow.id, trigger=trigger, created_at=now)
    data = {"task": task_id, "workflow": workflow.id, "trigger": trigger}
    return run, [EmitEvent("task_started", data)]
