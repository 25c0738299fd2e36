"""``resotoctl subscribers list`` and ``resotoctl events``: who listens on the bus, and what goes by."""

from __future__ import annotations

import click

from resotoctl.config import Ctl
from resotoctl.errors import EXIT_FAILED, CtlError, execute
from resotoctl.output import Output, plain
from resotoctl.render import subscribers_table
from resotolib.protocol import serialize


def split_names(values: tuple[str, ...]) -> list[str]:
    """``("a,b", "c")`` → ``["a", "b", "c"]``: comma lists and repeated options alike."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@click.group()
def subscribers() -> None:
    """The subscribers of the core and the actions they answer.

    \b
    Examples:
      resotoctl subscribers list
      resotoctl --json subscribers list | jq -r '.[].id'
    """


@subscribers.command("list")
@click.pass_obj
def list_subscribers(ctl: Ctl) -> None:
    """Every subscriber with its subscriptions: action, whether runs wait for it, its answer timeout.

    \b
    Examples:
      resotoctl subscribers list
      resotoctl --json subscribers list | jq -r '.[] | select(.subscriptions.collect) | .id'
    """

    async def main() -> None:
        async with ctl.client() as client:
            found = await client.subscribers()
        Output(ctl.as_json).listing(found, lambda: subscribers_table(plain(found)), "no subscribers")

    execute(main())


@click.command()
@click.option("--show", multiple=True, metavar="TYPES", help="Only these message types (comma-separated, repeatable).")
@click.pass_obj
def events(ctl: Ctl, show: tuple[str, ...]) -> None:
    """Print every message on the core's bus as one JSON line, as it happens, until stopped.

    Lines are flushed one by one, so the output can be piped. Ctrl-C ends it (exit 130); the end of the
    stream (the core stopped) is an error naming the core's close code and reason (exit 1).

    \b
    Examples:
      resotoctl events
      resotoctl events --show task_started,task_end
      resotoctl events --show step_end | jq -r 'select(.data.success == false) | .data.step'
    """

    async def main() -> None:
        out = Output(as_json=True)
        async with ctl.client() as client:
            # A core with --psk accepts the event stream without a token and closes it only after waiting
            # 10 s for an authorization frame; a request is refused at once (401).
            await client.subscribers()
            stream = client.events(split_names(show) or None)
            async for message in stream:
                out.line(serialize(message))
        reason = f": {stream.close_reason}" if stream.close_reason else ""
        raise CtlError(f"the core closed the event stream (code {stream.close_code}{reason})", EXIT_FAILED)

    execute(main())
