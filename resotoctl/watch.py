"""``workflows run --wait``: start a run and follow it until it ends.

The event stream is opened before the run is started, so no event of the run can be missed. Two
tasks feed the pure ``RunView``: one reads the event stream, one takes a snapshot of the task every
``POLL_SECONDS`` (the stream may drop messages or close; the snapshot is always right). On a terminal
the view is shown live; with ``--json`` every message about the run is one JSON line, then the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from rich.live import Live
from rich.text import Text

from resotoctl.errors import EXIT_FAILED, EXIT_OK, CtlError
from resotoctl.output import Output
from resotoctl.render import duration, elapsed, steps_table
from resotoctl.runview import RunView, render
from resotolib.client import CoreClient
from resotolib.protocol import Message, ProtocolError, parse_message, serialize

POLL_SECONDS = 1.0
EVENTS_HEARTBEAT = 20.0

OnMessage = Callable[[Message], None]


def now() -> datetime:
    return datetime.now(UTC)


async def run_and_watch(client: CoreClient, workflow_id: str, out: Output) -> int:
    """Start a run of the workflow, follow it to its end; 0 when it succeeded, 1 otherwise."""
    workflow = next((w for w in await client.workflows() if w.get("id") == workflow_id), None)
    if workflow is None:
        raise CtlError(f"unknown workflow {workflow_id!r}; `resotoctl workflows list` shows them")
    async with client.websocket("events", heartbeat=EVENTS_HEARTBEAT) as events:
        answer = await client.run_workflow(workflow_id)
        report_start(answer, out)
        if answer.get("status") == "skipped":
            return EXIT_FAILED
        view = RunView.of(workflow, answer.get("task_id"))
        on_message: OnMessage = (lambda m: out.line(serialize(m))) if out.as_json else (lambda m: None)
        if out.as_json or not out.console.is_terminal:
            await follow(client, events, view, on_message)
        else:
            with Live(get_renderable=lambda: render(view, now()), console=out.console, transient=True):
                await follow(client, events, view, on_message)
    assert view.task_id is not None
    final = await client.task(view.task_id)
    if out.as_json:
        out.line(final)
    else:
        out.show(steps_table(final, now()))
        out.show(summary(final))
    return EXIT_OK if final.get("status") == "succeeded" else EXIT_FAILED


def report_start(answer: Mapping[str, Any], out: Output) -> None:
    """What POST /workflows/{id}/run answered: started (task id), queued or skipped (reason)."""
    if out.as_json:
        out.line(dict(answer))
        return
    status = answer.get("status")
    if status == "started":
        out.show(f"started {answer.get('workflow')}: task {answer.get('task_id')}")
    else:
        out.show(f"{status} {answer.get('workflow')}: {answer.get('reason')}")


def summary(run: Mapping[str, Any]) -> Text:
    seconds = elapsed(run.get("created_at"), run.get("ended_at"), now())
    status = str(run.get("status"))
    text = Text(f"{run.get('workflow')} {run.get('id')} ")
    text.append(status, style="green" if status == "succeeded" else "red")
    text.append(f" after {duration(seconds)}")
    if run.get("error"):
        text.append(f": {run['error']}")
    return text


async def follow(
    client: CoreClient, events: aiohttp.ClientWebSocketResponse, view: RunView, on_message: OnMessage
) -> None:
    """Feed the view from the event stream and from snapshots until the run has ended."""
    loop = asyncio.get_running_loop()
    reader = loop.create_task(_read(events, view, on_message), name="watch-events")
    poller = loop.create_task(_poll(client, view), name="watch-snapshots")
    pending = {reader, poller}
    try:
        while not view.ended and pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failed snapshot ends the watch with its error; a closed stream does not
    finally:
        for task in (reader, poller):
            task.cancel()
        await asyncio.gather(reader, poller, return_exceptions=True)


async def _read(events: aiohttp.ClientWebSocketResponse, view: RunView, on_message: OnMessage) -> None:
    async for frame in events:
        if frame.type is not aiohttp.WSMsgType.TEXT:
            continue
        try:
            message = parse_message(frame.data)
        except ProtocolError:
            continue
        if view.apply(message, now()) or view.concerns(message):
            on_message(message)
        if view.ended:
            return


async def _poll(client: CoreClient, view: RunView) -> None:
    while not view.ended:
        await asyncio.sleep(POLL_SECONDS)
        if view.task_id is None:
            workflows = await client.workflows()
            running = next((w.get("running") or [] for w in workflows if w.get("id") == view.workflow), [])
            if not view.adopt_from(str(t) for t in running):
                continue
            assert view.task_id is not None
        view.merge(await client.task(view.task_id))
