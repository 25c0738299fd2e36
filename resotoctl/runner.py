"""One action, one run of the hooked command, one answer.

``ActionRunner`` takes the actions one at a time: the command never runs twice at once, and actions
that arrive meanwhile wait in order (their time limit in the core runs while they wait). Each run gets
the action JSON on stdin and ``RESOTO_TASK_ID``, ``RESOTO_STEP``, ``RESOTO_ACTION``,
``RESOTO_SUBSCRIBER_ID`` and ``RESOTOCTL_RESOTOCORE_URI`` in its environment. Exit 0 answers
``action_done``; anything else answers ``action_error`` with the end of stderr. Output lines go to the
core as ``action_info`` within an ``OutputBudget``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections.abc import AsyncIterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog

from resotoctl.child import DRAIN_SECONDS, error_text, run_child
from resotoctl.limits import OutputBudget
from resotoctl.signals import exit_code, stop_signals
from resotolib.protocol import MAX_TIMEOUT_SECONDS, Action, Subscription, serialize

log = structlog.get_logger(__name__)

ANSWER_MARGIN = 5
"""Seconds the core waits beyond the command's limit and kill grace, for the answer to arrive."""
DEFAULT_KILL_GRACE = 5.0
"""Seconds between SIGTERM and SIGKILL when a command's process group is stopped (--kill-grace)."""
Level = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class SubscribeOptions:
    actions: tuple[str, ...]
    subscriber_id: str
    command: tuple[str, ...]
    timeout: int
    kill_grace: float = DEFAULT_KILL_GRACE
    wait: bool = True
    max_lines: int = 50
    lines_per_second: float = 5.0

    def subscriptions(self) -> list[Subscription]:
        within = subscription_timeout(self.timeout, self.kill_grace)
        return [Subscription(message_type=a, wait_for_completion=self.wait, timeout=within) for a in self.actions]


def subscription_timeout(timeout: float, kill_grace: float) -> int:
    """Whole seconds the core waits for an answer: the command's limit, its kill grace, a margin."""
    return math.ceil(timeout + kill_grace + DRAIN_SECONDS) + ANSWER_MARGIN


WAIT_BEYOND = ANSWER_MARGIN + math.ceil(DRAIN_SECONDS)
"""Whole seconds the core waits beyond --timeout and --kill-grace (for a whole --kill-grace)."""


def max_timeout(kill_grace: float) -> int:
    """The longest ``--timeout`` whose subscription timeout stays within the core's limit."""
    return MAX_TIMEOUT_SECONDS - ANSWER_MARGIN - math.ceil(kill_grace + DRAIN_SECONDS)


def command_env(base: Mapping[str, str], action: Action, subscriber_id: str, core_uri: str) -> dict[str, str]:
    return {
        **base,
        "RESOTO_TASK_ID": action.data.task,
        "RESOTO_STEP": action.data.step,
        "RESOTO_ACTION": action.message_type,
        "RESOTO_SUBSCRIBER_ID": subscriber_id,
        "RESOTOCTL_RESOTOCORE_URI": core_uri,
    }


class Answers(Protocol):
    """Where answers and output go (implemented by resotolib.subscriber.ActionSubscriber)."""

    async def done(self, action: Action) -> None: ...

    async def error(self, action: Action, message: str) -> None: ...

    async def info(self, action: Action, message: str, level: Level = "info") -> None: ...


class Stop:
    """Set by the first SIGINT, SIGTERM or SIGHUP; remembers which one for the exit code."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: signal.Signals | None = None

    def __call__(self, sig: signal.Signals) -> None:
        if self.signal is None:
            self.signal = sig
            log.info("stopping", signal=sig.name)
        self.event.set()

    @property
    def reason(self) -> str:
        return f"resotoctl got {self.signal.name}" if self.signal else ""

    @property
    def exit_code(self) -> int:
        return exit_code(self.signal or signal.SIGINT)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        with stop_signals(self):
            yield


class ActionRunner:
    """Runs the command for each action, one at a time, and answers the action."""

    def __init__(self, answers: Answers, options: SubscribeOptions, core_uri: str, stop: Stop) -> None:
        self.answers = answers
        self.options = options
        self.core_uri = core_uri
        self.stop = stop
        self.busy = False

    async def consume(self, actions: AsyncIterable[Action]) -> None:
        """Handle actions until stopped or until they end. The stop is seen right after the action it
        interrupted (the caller ends the wait for the next one); an action taken after the stop is left
        to the unsubscribe."""
        async for action in actions:
            if self.stop.event.is_set():
                return
            await self.handle(action)
            if self.stop.event.is_set():
                return

    async def handle(self, action: Action) -> None:
        self.busy = True
        task, step = action.data.task, action.data.step
        with structlog.contextvars.bound_contextvars(task=task, step=step, action=action.message_type):
            log.info("action_received")
            try:
                await self._run(action)
            except Exception as e:  # one broken action must not end the subscription
                log.exception("action_crashed")
                await self.answers.error(action, f"resotoctl failed to run the command: {type(e).__name__}: {e}")
            finally:
                self.busy = False

    async def _run(self, action: Action) -> None:
        opts = self.options
        budget = OutputBudget(opts.max_lines, opts.lines_per_second)

        async def on_line(stream: str, line: str) -> None:
            level: Level = "info" if stream == "stdout" else "warning"
            if budget.offer(line, level, time.monotonic()):
                await self.answers.info(action, line, level)

        result = await run_child(
            opts.command,
            env=command_env(os.environ, action, opts.subscriber_id, self.core_uri),
            stdin=(serialize(action) + "\n").encode(),
            timeout=opts.timeout,
            kill_grace=opts.kill_grace,
            on_line=on_line,
            stop=self.stop.event,
        )
        for level, line in budget.rest():
            await self.answers.info(action, line, "warning" if level == "warning" else "info")
        error = error_text(result, self.stop.reason)
        if error is None:
            log.info("action_done", seconds=round(result.seconds, 3))
            await self.answers.done(action)
        else:
            log.warning("action_failed", seconds=round(result.seconds, 3), error=error)
            await self.answers.error(action, error)
