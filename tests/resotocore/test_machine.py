"""The pure state machine, without any I/O: inputs and a clock in, state and commands out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resotocore.workflow import machine as m
from resotocore.workflow.codec import load_run_json, run_json
from resotocore.workflow.model import OnError, OnSurpass, Step, Workflow, default_workflows
from resotocore.workflow.surpass import decide
from resotolib.protocol import SubscriberId, Subscription, TaskId

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = SubscriberId("worker")
M = SubscriberId("metrics")


def workflow(on_error: OnError = OnError.continue_) -> Workflow:
    steps = (
        Step(name="collect", message_type="collect", on_error=on_error),
        Step(name="post_collect", message_type="post_collect"),
        Step(name="generate_metrics", message_type="generate_metrics"),
    )
    return Workflow(id="wf", name="wf", steps=steps)


def lookup(table: dict[str, list[tuple[str, Subscription]]]) -> m.SubscriberLookup:
    def find(message_type: str) -> Sequence[tuple[SubscriberId, Subscription]]:
        return [(SubscriberId(s), sub) for s, sub in table.get(message_type, [])]

    return find


def sub(message_type: str, timeout: int = 60, wait: bool = True) -> Subscription:
    return Subscription(message_type=message_type, timeout=timeout, wait_for_completion=wait)


SUBS = lookup(
    {
        "collect": [("worker", sub("collect", timeout=120))],
        "generate_metrics": [("metrics", sub("generate_metrics")), ("observer", sub("generate_metrics", wait=False))],
    }
)


def start(wf: Workflow, subs: m.SubscriberLookup = SUBS) -> m.Transition:
    run, events = m.new_run(TaskId("t1"), wf, "manual", T0)
    assert events == [m.EmitEvent("task_started", {"task": "t1", "workflow": "wf", "trigger": "manual"})]
    return m.advance(run, wf, m.Start(), T0, subs)


def commands_of(t: m.Transition, kind: type) -> list[object]:
    return [c for c in t.commands if isinstance(c, kind)]


def test_start_sends_the_first_action_and_arms_the_extended_deadline() -> None:
    t = start(workflow())
    assert t.run.current is not None and t.run.current.name == "collect"
    assert commands_of(t, m.SendAction) == [m.SendAction(TaskId("t1"), "collect", "collect", (W,))]
    # step timeout 10 s extended to the subscriber's 120 s
    assert commands_of(t, m.ArmDeadline) == [m.ArmDeadline(TaskId("t1"), T0 + timedelta(seconds=120))]
    assert t.run.current.waiting_for == [W]


def test_answers_advance_through_steps_without_subscribers_to_the_end() -> None:
    wf = workflow()
    t = start(wf)
    now = T0 + timedelta(seconds=5)
    t = m.advance(t.run, wf, m.Answer(W, "collect"), now, SUBS)
    # post_collect has no subscribers: completed at once; generate_metrics sent to both, waited for one
    assert [s.name for s in t.run.steps] == ["collect", "post_collect", "generate_metrics"]
    assert t.run.steps[1].success is True and t.run.steps[1].ended_at == now
    assert commands_of(t, m.SendAction) == [
        m.SendAction(TaskId("t1"), "generate_metrics", "generate_metrics", (M, SubscriberId("observer")))
    ]
    assert t.run.current is not None and t.run.current.waiting_for == [M]
    t = m.advance(t.run, wf, m.Answer(M, "generate_metrics"), now, SUBS)
    assert t.run.status is m.RunStatus.succeeded
    assert t.run.ended_at == now
    ends = [c for c in t.commands if isinstance(c, m.EmitEvent) and c.message_type == "task_end"]
    assert ends == [m.EmitEvent("task_end", {"task": "t1", "workflow": "wf", "success": True, "status": "succeeded"})]
    assert isinstance(t.commands[-1], m.RunEnded)


def test_a_run_without_any_subscriber_completes_at_once() -> None:
    t = start(workflow(), lookup({}))
    assert t.run.status is m.RunStatus.succeeded
    assert len(t.run.steps) == 3
    assert not commands_of(t, m.SendAction)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (m.Answer(W, "generate_metrics"), "current step is 'collect'"),
        (m.Answer(M, "collect"), "not waited for"),
        (m.Answer(SubscriberId("stranger"), "collect"), "not waited for"),
    ],
)
def test_answers_that_do_not_apply_are_ignored(answer: m.Answer, reason: str) -> None:
    wf = workflow()
    t = start(wf)
    ignored = m.advance(t.run, wf, answer, T0, SUBS)
    assert ignored.run is t.run and not ignored.commands
    assert ignored.ignored is not None and reason in ignored.ignored


def test_duplicate_and_late_answers_are_ignored() -> None:
    wf = workflow()
    subs = lookup({"collect": [("worker", sub("collect")), ("other", sub("collect"))]})
    t = start(wf, subs)
    t = m.advance(t.run, wf, m.Answer(W, "collect"), T0, subs)
    again = m.advance(t.run, wf, m.Answer(W, "collect", error="late error"), T0, subs)
    assert again.ignored == "subscriber already answered: done"
    t = m.advance(t.run, wf, m.Answer(SubscriberId("other"), "collect"), T0, subs)
    assert t.run.status is m.RunStatus.succeeded
    late = m.advance(t.run, wf, m.Answer(W, "collect"), T0, subs)
    assert late.ignored == "run is succeeded"


def test_deadline_times_out_waiting_subscribers_and_continues() -> None:
    wf = workflow()
    t = start(wf)
    early = m.advance(t.run, wf, m.Deadline(), T0 + timedelta(seconds=119), SUBS)
    assert early.run is t.run and early.commands == [m.ArmDeadline(TaskId("t1"), T0 + timedelta(seconds=120))]
    t = m.advance(t.run, wf, m.Deadline(), T0 + timedelta(seconds=120), SUBS)
    collect = t.run.steps[0]
    assert collect.success is False
    assert collect.subscribers[W].outcome is m.Outcome.timeout
    assert t.run.current is not None and t.run.current.name == "generate_metrics"  # on_error continue


def test_error_with_on_error_stop_fails_the_run_at_once() -> None:
    wf = workflow(OnError.stop)
    subs = lookup({"collect": [("worker", sub("collect")), ("other", sub("collect"))]})
    t = start(wf, subs)
    t = m.advance(t.run, wf, m.Answer(W, "collect", error="AccessDenied"), T0, subs)
    assert t.run.status is m.RunStatus.failed
    assert t.run.error is not None and "AccessDenied" in t.run.error
    assert t.run.steps[0].subscribers[SubscriberId("other")].outcome is m.Outcome.cancelled
    assert len(t.run.steps) == 1


def test_error_with_on_error_continue_waits_for_all_then_goes_on_and_the_run_fails() -> None:
    wf = workflow()
    t = start(wf)
    t = m.advance(t.run, wf, m.Answer(W, "collect", error="boom"), T0, SUBS)
    assert t.run.steps[0].success is False
    t = m.advance(t.run, wf, m.Answer(M, "generate_metrics"), T0, SUBS)
    assert t.run.status is m.RunStatus.failed
    assert t.run.error == "steps failed: collect"


def test_subscriber_gone_stops_waiting_for_it() -> None:
    wf = workflow()
    t = start(wf)
    t = m.advance(t.run, wf, m.SubscriberGone(W), T0, SUBS)
    assert t.run.steps[0].subscribers[W].outcome is m.Outcome.gone
    assert t.run.current is not None and t.run.current.name == "generate_metrics"


def test_cancel() -> None:
    wf = workflow()
    t = start(wf)
    t = m.advance(t.run, wf, m.Cancel("by request"), T0, SUBS)
    assert t.run.status is m.RunStatus.cancelled
    assert t.run.steps[0].subscribers[W].outcome is m.Outcome.cancelled
    with pytest.raises(m.IllegalTransition, match="cannot take Cancel"):
        m.advance(t.run, wf, m.Cancel("again"), T0, SUBS)


def test_info_is_recorded_on_its_step_and_bounded() -> None:
    wf = workflow()
    t = start(wf)
    t = m.advance(t.run, wf, m.Info(W, "collect", "warning", "slow region"), T0, SUBS)
    assert [(i.level, i.message) for i in t.run.steps[0].info] == [("warning", "slow region")]
    for _ in range(m.MAX_INFO_PER_STEP):
        t = m.advance(t.run, wf, m.Info(W, "collect", "info", "x"), T0, SUBS) if not t.ignored else t
    assert len(t.run.steps[0].info) == m.MAX_INFO_PER_STEP
    assert m.advance(t.run, wf, m.Info(W, "nope", "info", "x"), T0, SUBS).ignored == "run has no step 'nope'"


def test_run_state_round_trips_through_json() -> None:
    wf = workflow()
    t = start(wf)
    t = m.advance(t.run, wf, m.Answer(W, "collect", error="x"), T0, SUBS)
    assert load_run_json(run_json(t.run)) == t.run


def test_default_workflows() -> None:
    workflows = {w.id: w for w in default_workflows()}
    assert [s.name for s in workflows["collect_and_cleanup"].steps] == [
        "pre_collect", "collect", "post_collect",
        "pre_cleanup_plan", "cleanup_plan", "post_cleanup_plan",
        "pre_cleanup", "cleanup", "post_cleanup",
        "pre_generate_metrics", "generate_metrics", "post_generate_metrics",
    ]  # fmt: skip
    assert [s.name for s in workflows["metrics"].steps] == [
        "pre_generate_metrics",
        "generate_metrics",
        "post_generate_metrics",
    ]
    assert len(workflows["collect"].steps) == 6 and len(workflows["cleanup"].steps) == 9
    for wid, wf in workflows.items():
        assert wf.on_surpass is OnSurpass.wait
        assert any(t.matches(f"start_{wid}_workflow", {}) for t in wf.event_triggers)
    assert [t.cron for t in workflows["collect_and_cleanup"].time_triggers] == ["0 * * * *"]


@pytest.mark.parametrize(
    ("policy", "running", "queued", "expected"),
    [
        (OnSurpass.skip, (), False, (True, (), False)),
        (OnSurpass.skip, ("a",), False, (False, (), False)),
        (OnSurpass.parallel, ("a",), False, (True, (), False)),
        (OnSurpass.replace_, ("a",), False, (True, ("a",), False)),
        (OnSurpass.wait, ("a",), False, (False, (), True)),
        (OnSurpass.wait, ("a",), True, (False, (), False)),
    ],
)
def test_on_surpass_decisions(
    policy: OnSurpass, running: tuple[TaskId, ...], queued: bool, expected: tuple[bool, tuple[str, ...], bool]
) -> None:
    decision = decide(policy, running, queued)
    assert (decision.start, decision.cancel, decision.enqueue) == expected
    assert decision.reason


def test_the_copies_made_per_answer_carry_every_other_field_over() -> None:
    # A new field must be added to _with_outcomes / _with_steps (and to _header_fields of the SQLite
    # store, for Run) too; this list is the reminder.
    step_fields = ["name", "message_type", "started_at", "deadline", "ended_at", "success", "subscribers", "notified"]
    assert [f.name for f in fields(m.StepRun)] == [*step_fields, "info"]
    run_fields = ["id", "workflow_id", "trigger", "status", "created_at", "ended_at", "steps", "error"]
    assert [f.name for f in fields(m.Run)] == run_fields
    at = T0 + timedelta(minutes=1)
    info = (m.InfoEntry(subscriber_id=W, level="warn", message="m", at=at),)
    step = m.StepRun(
        name="s", message_type="t", started_at=T0, deadline=at, ended_at=at, success=False,
        subscribers={M: m.SubscriberOutcome()}, notified=(W, M), info=info,
    )  # fmt: skip
    outcome = m.SubscriberOutcome(outcome=m.Outcome.done, at=at)
    outcomes = {M: m.SubscriberOutcome(), W: outcome}
    assert m._with_outcomes(step, outcomes) == replace(step, subscribers=outcomes)
    later = at + timedelta(minutes=1)
    ended = replace(step, subscribers=outcomes, ended_at=later, success=True)
    assert m._with_outcomes(step, outcomes, ended_at=later, success=True) == ended
    run = m.Run(
        id=TaskId("t"), workflow_id="w", trigger="x", status=m.RunStatus.failed, created_at=T0, ended_at=at,
        steps=(step, step), error="e",
    )  # fmt: skip
    other = replace(step, name="other")
    assert m._replace_current(run, other) == replace(run, steps=(step, other))


A, B, C = SubscriberId("a"), SubscriberId("b"), SubscriberId("c")
THREE_STEPS = Workflow(
    id="wf",
    name="wf",
    steps=(
        Step(name="s0", message_type="t0", on_error=OnError.stop),
        Step(name="s1", message_type="t1"),
        Step(name="s2", message_type="t2"),
    ),
)
THREE_SUBS = lookup(
    {
        "t0": [("a", sub("t0")), ("b", sub("t0")), ("c", sub("t0"))],
        "t1": [("a", sub("t1")), ("c", sub("t1", wait=False))],
        "t2": [("b", sub("t2")), ("c", sub("t2"))],
    }
)
SIDS = st.sampled_from([A, B, C, SubscriberId("stranger")])
STEP_NAMES = st.sampled_from(["s0", "s1", "s2", "nope"])
INPUTS = st.one_of(
    st.builds(m.Answer, SIDS, STEP_NAMES, st.sampled_from([None, None, None, "boom"])),
    st.builds(m.Info, SIDS, STEP_NAMES, st.just("info"), st.just("note")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(INPUTS, max_size=14))
def test_a_batch_of_answers_is_the_same_as_one_answer_after_the_other(inputs: list[m.Answer | m.Info]) -> None:
    started = m.advance(m.new_run(TaskId("t1"), THREE_STEPS, "manual", T0)[0], THREE_STEPS, m.Start(), T0, THREE_SUBS)
    run, commands, ignored = started.run, list[m.Command](), list[tuple[m.Answer | m.Info, str]]()
    for item in inputs:
        one = m.advance(run, THREE_STEPS, item, T0, THREE_SUBS)
        if one.ignored:
            ignored.append((item, one.ignored))
        else:
            run, commands = one.run, commands + one.commands
    batch, batch_ignored = m.advance_many(started.run, THREE_STEPS, inputs, T0, THREE_SUBS)
    assert batch.run == run
    assert batch.commands == commands
    assert batch_ignored == ignored
    assert batch.changed == (len(ignored) < len(inputs))


def test_only_the_last_awaited_answer_may_complete_a_step() -> None:
    started = m.advance(m.new_run(TaskId("t1"), THREE_STEPS, "manual", T0)[0], THREE_STEPS, m.Start(), T0, THREE_SUBS)
    assert not m.may_complete(started.run, A)
    after_a, _ = m.advance_many(started.run, THREE_STEPS, [m.Answer(A, "s0"), m.Answer(C, "s0")], T0, THREE_SUBS)
    assert m.may_complete(after_a.run, B)
    assert not m.may_complete(after_a.run, A)  # answered already: B is still awaited
    failed = m.advance(started.run, THREE_STEPS, m.Answer(A, "s0", error="boom"), T0, THREE_SUBS).run
    assert failed.status is m.RunStatus.failed and m.may_complete(failed, B)  # nothing to wait for
