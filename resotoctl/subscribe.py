"""``resotoctl subscribe``: run a command for every action of the given types and answer it.

Registration happens first, in one request that makes the given action types the subscriber's whole
set (those of an earlier run under the same id are removed), so a wrong URI, a refused key, a bad name
or an id connected already (another hook runs) fails at once and changes nothing; then the library's
``ActionSubscriber`` keeps the channel (and reconnects), and an ``ActionRunner`` handles the actions one
at a time. A hook that finds its id taken before it ever connected (two started at once, the other
connected first) fails the same way and leaves the subscriptions to the hook that has the id.

The core is told to wait ``--timeout`` plus the kill grace plus a margin, so the answer "timed out"
arrives before the core gives up; a sum beyond the core's limit is a usage error before anything is
registered. SIGINT, SIGTERM or SIGHUP: the running command's group is stopped, its
action answered "interrupted", every subscription removed; the exit code is 130, 143 or 129.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import click
import structlog

from resotoctl.config import Ctl
from resotoctl.errors import CtlError, execute
from resotoctl.runner import DEFAULT_KILL_GRACE, WAIT_BEYOND, ActionRunner, Stop, SubscribeOptions, max_timeout
from resotolib.client import CoreClient, CoreError, already_connected
from resotolib.protocol import MAX_TIMEOUT_SECONDS, Subscription
from resotolib.subscriber import ActionSubscriber

log = structlog.get_logger(__name__)

STOP_MARGIN = 5.0
"""Seconds beyond the kill grace that stopping may take before the running action is abandoned."""
COMMAND = "command"


async def register(client: CoreClient, subscriber_id: str, subscriptions: Sequence[Subscription]) -> None:
    """Make these the subscriber's subscriptions, all or none: a refused list changes nothing.

    An id that is connected already belongs to a running hook: its subscriptions stay as they are, and
    this one fails (exit 1) instead of waiting for the channel (and removing them when it is stopped).
    """
    try:
        await client.set_subscriptions(subscriber_id, subscriptions, unless_connected=True)
    except CoreError as e:
        if already_connected(e):
            raise CtlError(f"subscriber id {subscriber_id!r} is already connected (another hook running?)") from None
        raise


async def serve(ctl: Ctl, options: SubscribeOptions) -> int:
    """Subscribe, handle actions until SIGINT/SIGTERM, unsubscribe; returns the exit code."""
    stop = Stop()
    subscriptions = options.subscriptions()
    with stop.installed():
        subscriber = ctl.subscriber(options.subscriber_id, subscriptions)
        async with ctl.client() as client:
            await register(client, options.subscriber_id, subscriptions)
        log.info("subscribed", subscriber_id=options.subscriber_id, actions=list(options.actions), core=ctl.url)
        async with subscriber:
            try:
                await _handle_until_stopped(subscriber, ActionRunner(subscriber, options, ctl.url, stop), stop)
            finally:
                if subscriber.refused is None:  # refused: the subscriptions belong to the hook that has the id
                    await _unsubscribe(subscriber)
    return stop.exit_code


async def _handle_until_stopped(subscriber: ActionSubscriber, runner: ActionRunner, stop: Stop) -> None:
    loop = asyncio.get_running_loop()
    consumer = loop.create_task(runner.consume(subscriber), name="handle-actions")
    stopped = loop.create_task(stop.event.wait(), name="wait-for-stop")
    try:
        await asyncio.wait({consumer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if consumer.done() and not stop.event.is_set():
            consumer.result()
            if subscriber.refused is not None:  # another hook took the id between registering and connecting
                raise CtlError(f"{subscriber.refused} (another hook running?)")
            raise CtlError("the action channel closed unexpectedly")
        if not runner.busy:
            consumer.cancel("stopping")
        # a running command sees the stop itself: its group is ended and its action answered
        await asyncio.wait({consumer}, timeout=runner.options.kill_grace + STOP_MARGIN)
    finally:
        for task in (consumer, stopped):
            task.cancel()
        await asyncio.gather(consumer, stopped, return_exceptions=True)


async def _unsubscribe(subscriber: ActionSubscriber) -> None:
    try:
        await subscriber.unsubscribe()
    except CoreError as e:
        log.error("unsubscribe_failed", error=str(e), hint="the core drops subscribers that stay away for 3 minutes")


def check_timeout_with_grace(ctx: click.Context, timeout: int, kill_grace: float) -> None:
    """A usage error when the core would refuse the subscription timeout made of --timeout and --kill-grace."""
    limit = max_timeout(kill_grace)
    if timeout > limit:
        raise click.UsageError(
            f"--timeout {timeout} with --kill-grace {kill_grace:g} is too long: the core waits at most "
            f"{MAX_TIMEOUT_SECONDS} s for an answer, which must cover --timeout + --kill-grace + {WAIT_BEYOND} s; "
            f"with --kill-grace {kill_grace:g}, --timeout is at most {limit}",
            ctx,
        )


class _CommandAfterDashes(click.Command):
    """Everything after the first ``--`` is the command to run, kept apart from the action names."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        command: tuple[str, ...] = ()
        if "--" in args:
            at = args.index("--")
            args, command = args[:at], tuple(args[at + 1 :])
        ctx.meta[COMMAND] = command
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- COMMAND [ARGS]..."]


@click.command(cls=_CommandAfterDashes)
@click.argument("actions", nargs=-1, required=True, metavar="ACTION...")
@click.option("--id", "subscriber_id", required=True, help="Subscriber id to register with (one per hook).")
@click.option(
    "--timeout", default=600, show_default=True, type=click.IntRange(min=1),
    help="Seconds the command may run; then its process group is killed and the action answered with an error. "
    f"The core waits this long plus --kill-grace plus {WAIT_BEYOND} s, at most {MAX_TIMEOUT_SECONDS} s: "
    f"--timeout is at most {max_timeout(DEFAULT_KILL_GRACE)} with the default --kill-grace.",
)  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Register without wait_for_completion: runs do not wait for answers.")
@click.option(
    "--kill-grace", default=DEFAULT_KILL_GRACE, show_default=True, type=click.FloatRange(0, 300),
    help="Seconds between SIGTERM and SIGKILL when the command's process group is stopped.",
)  # fmt: skip
@click.option(
    "--max-lines", default=50, show_default=True, type=click.IntRange(0, 90),
    help="Output lines per action sent as action_info: the first half as they come, the last half at the end.",
)  # fmt: skip
@click.option(
    "--lines-per-second", default=5.0, show_default=True, type=click.FloatRange(0.1),
    help="Rate of the lines sent as they come (after a burst of 10); later lines wait for the end.",
)  # fmt: skip
@click.pass_context
def subscribe(ctx: click.Context, /, **values: Any) -> None:
    """Run COMMAND for every ACTION the core sends, and answer it.

    The command gets the action as JSON on stdin and RESOTO_TASK_ID, RESOTO_STEP, RESOTO_ACTION,
    RESOTO_SUBSCRIBER_ID, RESOTOCTL_RESOTOCORE_URI in its environment. Exit code 0 answers done; any
    other answers an error with the last lines of its stderr, which the run history shows. Its output
    lines are sent as info messages. One action is handled at a time. Ctrl-C (SIGTERM, SIGHUP) stops the
    running command, answers its action "interrupted", removes the subscriptions, exits 130 (143, 129).

    \b
    Examples:
      resotoctl subscribe post_collect --id my-report -- ./report.sh --to ops@example.com
      resotoctl subscribe pre_cleanup --id approval --timeout 3600 -- ./ask-for-approval.sh
      resotoctl subscribe post_collect post_cleanup --id audit --no-wait -- logger -t resoto
    """
    ctl: Ctl = ctx.obj
    command = ctx.meta.get(COMMAND, ())
    if not command:
        raise click.UsageError("give the command to run after --, e.g. `... --id my-report -- ./report.sh`", ctx)
    check_timeout_with_grace(ctx, values["timeout"], values["kill_grace"])
    options = SubscribeOptions(
        actions=tuple(dict.fromkeys(values["actions"])), subscriber_id=values["subscriber_id"], command=command,
        timeout=values["timeout"], kill_grace=values["kill_grace"], wait=not values["no_wait"],
        max_lines=values["max_lines"], lines_per_second=values["lines_per_second"],
    )  # fmt: skip
    execute(serve(ctl, options))
