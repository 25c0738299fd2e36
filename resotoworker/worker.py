"""The worker process: subscribe to the core, run each action's handler as its own task, answer it.

``serve(config)`` wires the pieces (HTTP session, core client, action subscriber, collectors) and runs
until SIGINT/SIGTERM or ``stop``: then it stops taking actions, cancels the running handlers, answers
their actions with an error, and closes the socket.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

import aiohttp
import structlog

from resotolib.client import CoreClient
from resotolib.protocol import Action, TaskId
from resotolib.subscriber import ActionSubscriber
from resotoworker.cleanup import cleanup, cleanup_plan
from resotoworker.collect import collect
from resotoworker.collector import Collector, CollectorContext, load_collectors
from resotoworker.config import WorkerConfig
from resotoworker.handler import ActionFailed, GraphApi, Handler, Level, Reporter, describe_error

log = structlog.get_logger(__name__)

Key = tuple[TaskId, str]
ANSWER_WITHIN = 2.0
"""Seconds to send the answers of cancelled actions on shutdown."""


class Channel(Protocol):
    """Where answers and notices go (implemented by resotolib.subscriber.ActionSubscriber)."""

    async def done(self, action: Action) -> None: ...

    async def error(self, action: Action, message: str) -> None: ...

    async def info(self, action: Action, message: str, level: Literal["info", "warning", "error"] = "info") -> None: ...

    async def progress(
        self, action: Action, name: str, current: float, total: float, *, context: Sequence[str] = ()
    ) -> None: ...


class ActionReporter:
    """A Reporter bound to one action. Best effort: a notice that cannot be sent is logged, never raised."""

    def __init__(self, channel: Channel, action: Action) -> None:
        self.channel = channel
        self.action = action

    async def progress(self, name: str, current: int, total: int, context: Sequence[str] = ()) -> None:
        try:
            await self.channel.progress(self.action, name, current, total, context=context)
        except Exception as e:
            log.warning("progress_not_sent", error=describe_error(e))

    async def info(self, message: str, level: Level = "info") -> None:
        try:
            await self.channel.info(self.action, message, level)
        except Exception as e:
            log.warning("info_not_sent", error=describe_error(e))


class Worker:
    """Which handler serves which message type, with what."""

    def __init__(
        self,
        config: WorkerConfig,
        client: GraphApi,
        collectors: Sequence[Collector],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.client = client
        self.collectors = list(collectors)
        self.clock = clock

    @property
    def clouds(self) -> list[str]:
        return [c.cloud for c in self.collectors]

    def handler(self, message_type: str) -> Handler | None:
        """The handler of a message type; each is limited to the configured timeout (collect: per collector)."""
        cfg = self.config
        match message_type:
            case "collect":
                return lambda r: collect(self.collectors, self.client, cfg.graph, cfg.timeout, r)
            case "cleanup_plan" if cfg.cleanup_expired:
                return self._cleanup_plan
            case "cleanup" if cfg.cleanup:
                return self._cleanup
        return None

    async def _cleanup_plan(self, reporter: Reporter) -> None:
        async with asyncio.timeout(self.config.timeout):
            await cleanup_plan(self.clouds, self.client, self.config.graph, reporter, self.clock())

    async def _cleanup(self, reporter: Reporter) -> None:
        cfg = self.config
        async with asyncio.timeout(cfg.timeout):
            await cleanup(
                {c.cloud: c for c in self.collectors}, self.client, cfg.graph, reporter,
                parallel=cfg.parallel_deletes, dry_run=cfg.cleanup_dry_run, clock=self.clock, actor=cfg.subscriber_id,
            )  # fmt: skip


class Dispatcher:
    """Runs each action's handler as a task (one per task and step) and answers the action."""

    def __init__(self, channel: Channel, worker: Worker) -> None:
        self.channel = channel
        self.worker = worker
        self.running: dict[Key, tuple[Action, asyncio.Task[None]]] = {}

    def dispatch(self, action: Action) -> None:
        key = (action.data.task, action.data.step)
        if key in self.running:
            log.info("action_already_running", task=key[0], step=key[1], message_type=action.message_type)
            return
        name = f"{action.message_type}:{key[0]}:{key[1]}"
        task = asyncio.get_running_loop().create_task(self._handle(action), name=name)
        self.running[key] = (action, task)
        task.add_done_callback(lambda _: self.running.pop(key, None))

    async def consume(self, actions: ActionSubscriber) -> None:
        async for action in actions:
            self.dispatch(action)

    async def _handle(self, action: Action) -> None:
        mt, task, step = action.message_type, action.data.task, action.data.step
        with structlog.contextvars.bound_contextvars(task=task, step=step, message_type=mt):
            handler = self.worker.handler(mt)
            if handler is None:
                log.warning("action_not_handled")
                await self.channel.error(action, f"{self.worker.config.subscriber_id} does not handle {mt}")
                return
            log.info("action_started")
            try:
                await handler(ActionReporter(self.channel, action))
            except ActionFailed as e:
                log.warning("action_failed", error=str(e))
                await self.channel.error(action, str(e))
            except TimeoutError:
                log.error("action_timed_out", seconds=self.worker.config.timeout)
                await self.channel.error(action, f"{mt} timed out after {self.worker.config.timeout}s")
            except Exception as e:
                log.exception("action_crashed")
                await self.channel.error(action, f"{mt} failed: {describe_error(e)}")
            else:
                log.info("action_done")
                await self.channel.done(action)

    async def stop(self) -> None:
        """Cancel every running handler; answer its action with an error (best effort, briefly)."""
        running = list(self.running.values())
        for _, task in running:
            task.cancel("worker stopping")
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        message = f"{self.worker.config.subscriber_id} stopped while handling the action"
        for action, task in running:
            if task.cancelled():
                log.warning("action_cancelled", task=action.data.task, step=action.data.step)
                try:
                    async with asyncio.timeout(ANSWER_WITHIN):
                        await self.channel.error(action, message)
                except Exception as e:
                    log.warning("answer_not_sent", task=action.data.task, step=action.data.step, error=repr(e))


async def serve(config: WorkerConfig, stop: asyncio.Event | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM (or `stop` is set), then shut down cleanly."""
    stop = stop or asyncio.Event()
    options = config.model_dump(exclude={"psk"})  # collectors need no key to the core
    collectors = load_collectors(config.collector, CollectorContext(config.data_dir, options))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    subscriptions = config.subscriptions()
    log.info(
        "worker_starting", core=config.resotocore_uri, subscriber_id=config.subscriber_id,
        collectors=[c.cloud for c in collectors], subscriptions=[s.message_type for s in subscriptions],
    )  # fmt: skip
    try:
        async with (
            aiohttp.ClientSession() as session,
            CoreClient(config.resotocore_uri, session=session, psk=config.psk, ca_cert=config.ca_cert) as client,
            ActionSubscriber(
                config.resotocore_uri,
                config.subscriber_id,
                subscriptions,
                session=session,
                psk=config.psk,
                ca_cert=config.ca_cert,
            ) as actions,
        ):
            dispatcher = Dispatcher(actions, Worker(config, client, collectors))
            consumer = loop.create_task(dispatcher.consume(actions), name="consume-actions")
            stopped = loop.create_task(stop.wait(), name="wait-for-stop")
            await asyncio.wait({consumer, stopped}, return_when=asyncio.FIRST_COMPLETED)
            log.info("worker_stopping", running=len(dispatcher.running))
            consumer.cancel("worker stopping")
            stopped.cancel()
            await asyncio.gather(consumer, stopped, return_exceptions=True)
            await dispatcher.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("worker_stopped")
