"""The exporter process: subscribe to generate_metrics, update on every action, serve /metrics.

``serve(config)`` loads the metric definitions (a bad file stops it before anything starts), then
wires the HTTP session, the action subscriber and the web server on one exit stack, and runs until
SIGINT/SIGTERM or ``stop``. On stop it takes no new action, lets a running update finish for a short
while, then cancels it and answers its action with an error.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterable, Callable
from contextlib import AsyncExitStack, suppress
from typing import Protocol

import aiohttp
import structlog

from resotolib.client import CoreClient
from resotolib.protocol import Action
from resotolib.subscriber import ActionSubscriber
from resotometrics.config import MESSAGE_TYPE, MetricsConfig
from resotometrics.exporter import Exporter
from resotometrics.loader import load_definitions
from resotometrics.update import UpdateFailed, Updater
from resotometrics.web import create_app, web_server

log = structlog.get_logger(__name__)

STOP_GRACE = 5.0
"""Seconds a running update may take to finish once the exporter is asked to stop."""
ANSWER_WITHIN = 2.0
"""Seconds to send the answer of a cancelled update on shutdown."""


class Channel(Protocol):
    """Where answers go (implemented by resotolib.subscriber.ActionSubscriber)."""

    async def done(self, action: Action) -> None: ...

    async def error(self, action: Action, message: str) -> None: ...


class ActionHandler:
    """Answers each generate_metrics action with one update: done when it succeeded, error naming why not."""

    def __init__(self, channel: Channel, updater: Updater) -> None:
        self.channel = channel
        self.updater = updater
        self.current: Action | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    async def consume(self, actions: AsyncIterable[Action]) -> None:
        async for action in actions:
            await self.handle(action)

    async def handle(self, action: Action) -> None:
        task, step, mt = action.data.task, action.data.step, action.message_type
        with structlog.contextvars.bound_contextvars(task=task, step=step, message_type=mt):
            if mt != MESSAGE_TYPE:
                log.warning("action_not_handled")
                await self.channel.error(action, f"resotometrics does not handle {mt}")
                return
            self.current = action
            self.idle.clear()
            log.info("metrics_update_started")
            started = time.perf_counter()
            try:
                snapshot = await self.updater.update()
            except UpdateFailed as e:
                log.warning("metrics_update_failed", metric=e.metric, error=e.reason)
                await self.channel.error(action, str(e))
            except Exception as e:
                log.exception("metrics_update_crashed")
                await self.channel.error(action, f"metrics update failed: {type(e).__name__}: {e}")
            else:
                seconds = round(time.perf_counter() - started, 3)
                log.info("metrics_updated", series=snapshot.series, seconds=seconds)
                await self.channel.done(action)
            self.current = None
            self.idle.set()

    async def stop(self, consumer: asyncio.Task[None]) -> None:
        """Let a running update finish within STOP_GRACE, then cancel it and answer its action with an error."""
        with suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await self.idle.wait()
        consumer.cancel("resotometrics stopping")
        await asyncio.gather(consumer, return_exceptions=True)
        action, self.current = self.current, None
        if action is not None:
            log.warning("metrics_update_cancelled", task=action.data.task, step=action.data.step)
            try:
                async with asyncio.timeout(ANSWER_WITHIN):
                    await self.channel.error(action, "resotometrics stopped during the metrics update")
            except Exception as e:
                log.warning("answer_not_sent", task=action.data.task, step=action.data.step, error=repr(e))


async def serve(
    config: MetricsConfig, stop: asyncio.Event | None = None, listening: Callable[[list[str]], None] | None = None
) -> None:
    """Run the exporter until SIGINT/SIGTERM (or ``stop`` is set); raises DefinitionError for a bad file.

    ``listening`` is called with the URLs served once the web server is up (useful with port 0).
    """
    definitions = load_definitions(config.metrics_file)
    exporter = Exporter(definitions)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "metrics_starting", core=config.resotocore_uri, subscriber_id=config.subscriber_id, graph=config.graph,
        metrics=[d.name for d in definitions], metrics_file=str(config.metrics_file or ""),
    )  # fmt: skip
    try:
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            psk, ca_cert, uri = config.psk, config.ca_cert, config.resotocore_uri
            client = CoreClient(uri, session=session, request_timeout=config.timeout, psk=psk, ca_cert=ca_cert)
            subscriber = ActionSubscriber(
                uri, config.subscriber_id, config.subscriptions(), session=session, psk=psk, ca_cert=ca_cert
            )
            await stack.enter_async_context(subscriber)
            app = create_app(exporter, lambda: subscriber.connected)
            urls = await stack.enter_async_context(web_server(app, config.web_host, config.web_port))
            if listening is not None:
                listening(urls)
            handler = ActionHandler(subscriber, Updater(client, config.graph, exporter, config.timeout))
            consumer = loop.create_task(handler.consume(subscriber), name="consume-actions")
            stopped = loop.create_task(stop.wait(), name="wait-for-stop")
            await asyncio.wait({consumer, stopped}, return_when=asyncio.FIRST_COMPLETED)
            log.info("metrics_stopping", updating=handler.current is not None)
            stopped.cancel()
            await asyncio.gather(stopped, return_exceptions=True)
            await handler.stop(consumer)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("metrics_stopped")
