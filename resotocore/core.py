"""The services of one running core, built and torn down in one place, in reverse order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

from resotocore.bus.message_bus import MessageBus
from resotocore.bus.subscribers import SubscriberRegistry
from resotocore.clock import Clock, SystemClock, Timer
from resotocore.config import CoreConfig
from resotocore.db.backends import open_stores
from resotocore.db.graph_store import GraphStore
from resotocore.db.store import Store
from resotocore.metrics import CoreMetrics
from resotocore.scheduler.scheduler import Scheduler
from resotocore.workflow.engine import Engine
from resotocore.workflow.model import Workflow, default_workflows

log = structlog.get_logger(__name__)

EXPIRY_SWEEP = timedelta(seconds=30)
GOODBYE_WITHIN = 2.0
"""Seconds a websocket peer gets to take our last frames and the close frame before it is cut off."""

CutOff = Callable[[], None]
"""Drops a websocket's connection at once, without waiting for the peer to take what is still queued."""


@dataclass
class Core:
    config: CoreConfig
    clock: Clock
    store: Store
    bus: MessageBus
    registry: SubscriberRegistry
    engine: Engine
    scheduler: Scheduler
    metrics: CoreMetrics
    graph: GraphStore
    started_at: datetime
    websockets: dict[web.WebSocketResponse, CutOff] = field(default_factory=dict)
    """The open websockets, each with how to cut its connection off."""
    _expiry_timer: Timer | None = None

    def sweep_expired(self) -> None:
        """Drop subscribers gone too long, then schedule the next sweep."""
        self.engine.spawn(self.registry.expire(self.clock.now()))
        self._expiry_timer = self.clock.call_at(self.clock.now() + EXPIRY_SWEEP, self.sweep_expired)

    def stop_sweeping(self) -> None:
        if self._expiry_timer:
            self._expiry_timer.cancel()

    async def close_websockets(self) -> None:
        goodbye = WSCloseCode.GOING_AWAY, b"core is shutting down"
        sockets = list(self.websockets.items())
        closing = (close_websocket(ws, cut_off, *goodbye) for ws, cut_off in sockets)
        await asyncio.gather(*closing, return_exceptions=True)


async def close_websocket(ws: web.WebSocketResponse, cut_off: CutOff, code: int, message: bytes) -> None:
    """Close with `code`. A peer that does not take the close frame within GOODBYE_WITHIN seconds (it has
    stopped reading, and its socket buffer is full) is cut off, so nothing waits for it for ever."""
    try:
        async with asyncio.timeout(GOODBYE_WITHIN):
            await ws.close(code=code, message=message)
    except TimeoutError:
        log.warning("websocket_cut_off", reason="the peer did not take the close frame", code=code)
        cut_off()


@asynccontextmanager
async def running_core(
    config: CoreConfig, clock: Clock | None = None, workflows: Sequence[Workflow] | None = None
) -> AsyncIterator[Core]:
    """Open the store, resume runs, start the scheduler; on exit stop everything in reverse order."""
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        store, graph = await stack.enter_async_context(open_stores(config))
        metrics = CoreMetrics()
        bus = MessageBus(
            config.queue_size,
            on_overflow=lambda name: metrics.queue_overflows.labels(name.split(":")[0]).inc(),
            clock=clock,
        )
        started_at = clock.now()
        registry = SubscriberRegistry(store, started_at)
        await registry.load()
        wfs = workflows if workflows is not None else default_workflows(config.schedule, config.timezone)
        engine = Engine(wfs, store, registry, bus, clock, metrics)
        registry.on_unsubscribed = engine.unsubscribed
        stack.push_async_callback(engine.stop)
        await engine.start()
        scheduler = Scheduler(engine, store, clock, config.catch_up)
        stack.callback(scheduler.stop)
        await scheduler.start()
        core = Core(config, clock, store, bus, registry, engine, scheduler, metrics, graph, started_at)
        core.sweep_expired()
        stack.callback(core.stop_sweeping)
        stack.push_async_callback(core.close_websockets)
        log.info("core_started", data_dir=str(config.data_dir), workflows=sorted(engine.workflows))
        yield core


CORE = web.AppKey("core", Core)


def core_context(config: CoreConfig, clock: Clock | None = None, workflows: Sequence[Workflow] | None = None) -> Any:
    """An aiohttp cleanup_ctx running the core for the lifetime of the app."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with running_core(config, clock, workflows) as core:
            app[CORE] = core
            yield

    return context
