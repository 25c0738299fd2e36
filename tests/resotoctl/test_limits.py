"""The bounds on what a hooked command sends, and the answer its end turns into: pure functions."""

from __future__ import annotations

from resotoctl.child import ChildResult, Ended, error_text
from resotoctl.limits import ELLIPSIS, LineSplitter, OutputBudget, Tail
from resotoctl.runner import SubscribeOptions, command_env, subscription_timeout
from resotolib.protocol import Action, ActionData, TaskId


def test_line_splitter_joins_chunks_and_keeps_the_last_line() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree") == ["two"]
    assert splitter.feed("\xfc\n".encode("latin-1")) == ["three\ufffd"]
    assert splitter.feed(b"last") == []
    assert splitter.flush() == ["last"]
    assert splitter.flush() == []


def test_line_splitter_cuts_long_lines_without_buffering_them() -> None:
    splitter = LineSplitter(max_chars=10)
    assert splitter.feed(b"x" * 15 + b"\n") == ["x" * 9 + ELLIPSIS]
    first = splitter.feed(b"y" * 100)  # no newline yet: more than 4 * max_chars bytes are not kept
    assert first == ["y" * 9 + ELLIPSIS]
    assert splitter.feed(b"y" * 100 + b"\nnext\n") == ["next"]  # the rest of the long line is skipped
    assert splitter.flush() == []


def test_budget_sends_the_head_then_keeps_the_tail_in_order() -> None:
    budget = OutputBudget(max_lines=6, rate=1000, burst=1000)
    sent = [n for n in range(20) if budget.offer(f"line {n}", "info", now=0.0)]
    assert sent == [0, 1, 2]
    rest = budget.rest()
    assert rest[0] == (
        "warning",
        "14 of 20 output lines left out here (at most 6 per action, 1000 per second as they come)",
    )
    assert rest[1:] == [("info", "line 17"), ("info", "line 18"), ("info", "line 19")]
    assert budget.sent == 6 and budget.dropped == 14


def test_budget_rate_holds_back_a_fast_command_and_lets_a_slow_one_through() -> None:
    fast = OutputBudget(max_lines=50, rate=5, burst=10)
    assert sum(fast.offer("x", "info", now=0.0) for _ in range(30)) == 10
    slow = OutputBudget(max_lines=50, rate=5, burst=10)
    assert sum(slow.offer("x", "info", now=n * 0.5) for n in range(30)) == 25  # the head is half of max_lines
    assert slow.rest() == [("info", "x")] * 5  # nothing left out: no note


def test_budget_without_overflow_sends_everything_and_no_note() -> None:
    budget = OutputBudget(max_lines=10, rate=1000, burst=1000)
    assert all(budget.offer(f"{n}", "warning", now=0.0) for n in range(5))
    assert budget.rest() == []
    assert OutputBudget(max_lines=0).rest() == []


def test_tail_keeps_the_newest_lines_within_both_bounds() -> None:
    tail = Tail(max_lines=3, max_chars=8)
    for line in ("a", "b", "c", "dddd", "eeee"):
        tail.add(line)
    assert tail.text() == ELLIPSIS + "dd\neeee"
    assert Tail().text() == ""


def result(ended: Ended, code: int | None = None, tail: str = "") -> ChildResult:
    return ChildResult(ended, code, tail, seconds=1.0, timeout=600)


def test_error_text_of_every_way_a_command_ends() -> None:
    assert error_text(result(Ended.exited, 0, "noise")) is None
    assert error_text(result(Ended.exited, 3, "boom")) == "exit code 3: boom"
    assert error_text(result(Ended.exited, 1)) == "exit code 1 (nothing on stderr)"
    assert error_text(result(Ended.exited, -9)) == "killed by SIGKILL (nothing on stderr)"
    assert error_text(result(Ended.timed_out)) == "timed out after 600 s"
    assert error_text(result(Ended.timed_out, None, "stuck")) == "timed out after 600 s; last stderr: stuck"
    assert error_text(result(Ended.interrupted), "resotoctl got SIGINT") == "interrupted (resotoctl got SIGINT)"
    failed = ChildResult(Ended.not_started, None, "", 0.0, 1, reason="./x: No such file or directory")
    assert error_text(failed) == "could not start the command: ./x: No such file or directory"


def test_the_core_waits_longer_than_the_command_may_run() -> None:
    assert subscription_timeout(600, 5) == 611  # limit, grace, output drain (1 s), margin (5 s)
    options = SubscribeOptions(
        ("post_collect", "pre_cleanup"), "report", ("true",), timeout=1, kill_grace=0.5, wait=False
    )
    assert [(s.message_type, s.timeout, s.wait_for_completion) for s in options.subscriptions()] == [
        ("post_collect", 8, False),
        ("pre_cleanup", 8, False),
    ]


def test_command_env_names_the_action() -> None:
    action = Action(message_type="post_collect", data=ActionData(task=TaskId("t1"), step="post_collect"))
    env = command_env({"PATH": "/bin", "RESOTO_STEP": "old"}, action, "report", "http://core:8900")
    assert env == {
        "PATH": "/bin",
        "RESOTO_TASK_ID": "t1",
        "RESOTO_STEP": "post_collect",
        "RESOTO_ACTION": "post_collect",
        "RESOTO_SUBSCRIBER_ID": "report",
        "RESOTOCTL_RESOTOCORE_URI": "http://core:8900",
    }
