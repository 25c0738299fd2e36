"""The in-process bus: every message for observers goes through here to bounded per-listener queues.

Overflow rule: a listener whose queue is full is closed (and counted). Its websocket is then closed
with a clear reason; a subscriber that reconnects gets its pending actions again, an observer knows
it lost messages. Emitting never awaits, so a slow socket never blocks the engine.

Retention rule: a message is offered to the listeners registered when it is emitted, and no others,
unless it is emitted with `retain_until`. Then the bus also keeps its frame, one per message type
and key (a newer frame replaces the older one), and replays it to every listener that subscribes
before that time and accepts its message type: once, on subscribing, before any live message. The
bus's clock decides expiry; an expired frame is dropped. This is how a message emitted while the
core starts, before anybody can connect, still reaches the observers that connect soon after.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import structlog

from resotocore.clock import Clock, SystemClock

log = structlog.get_logger(__name__)

DEFAULT_QUEUE_SIZE = 1000


class Listener:
    """A bounded outbox of serialised frames for one websocket."""

    def __init__(self, name: str, channels: Collection[str] | None, maxsize: int) -> None:
        self.name = name
        self.channels = frozenset(channels) if channels else None
        self.maxsize = maxsize
        self._frames: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting in next(), if any
        self.closed = False
        self.close_reason = ""
        self.on_overflow: Callable[[Listener], None] | None = None

    def accepts(self, message_type: str) -> bool:
        return self.channels is None or message_type in self.channels

    def offer(self, frame: str) -> bool:
        """Queue a frame without waiting; on overflow close the listener. False when not queued."""
        if self.closed:
            return False
        if len(self._frames) >= self.maxsize:
            self.close(f"too slow: more than {self.maxsize} messages not yet read")
            if self.on_overflow:
                self.on_overflow(self)
            return False
        self._frames.append(frame)
        self._wake()
        return True

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._frames.clear()
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> str | None:
        """The next frame, or None once the listener is closed. One reader at a time."""
        if self._waiter is not None:
            raise RuntimeError(f"listener {self.name} has a reader already")
        while not self._frames:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None if self.closed else self._frames.popleft()


@dataclass(frozen=True)
class Retained:
    """A frame kept for listeners that subscribe before `until`."""

    message_type: str
    frame: str
    until: datetime


class MessageBus:
    def __init__(
        self,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_overflow: Callable[[str], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.queue_size = queue_size
        self._listeners: set[Listener] = set()
        self._on_overflow = on_overflow
        self._clock = clock or SystemClock()
        self._retained: dict[tuple[str, str], Retained] = {}

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def listener(self, name: str, channels: Collection[str] | None = None) -> Listener:
        listener = Listener(name, channels, self.queue_size)
        listener.on_overflow = self._overflowed
        return listener

    @asynccontextmanager
    async def subscribe(self, name: str, channels: Collection[str] | None = None) -> AsyncIterator[Listener]:
        """Receive every message (or those of `channels`) until the block ends; always deregisters.
        The retained messages come first."""
        listener = self.listener(name, channels)
        for retained in self.retained():
            if listener.accepts(retained.message_type):
                listener.offer(retained.frame)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)
            listener.close("unsubscribed")

    def emit(
        self, message_type: str, frame: Callable[[], str], retain_until: datetime | None = None, key: str = ""
    ) -> None:
        """Offer a message to every interested listener; the frame is serialised once, only if needed.
        With `retain_until`, also replay it to listeners subscribing before then (one frame per type and key)."""
        text: str | None = None
        if retain_until is not None:
            text = frame()
            self._retained.pop((message_type, key), None)  # the newer frame goes last: replay keeps emit order
            self._retained[(message_type, key)] = Retained(message_type, text, retain_until)
        for listener in list(self._listeners):
            if listener.accepts(message_type):
                text = text if text is not None else frame()
                listener.offer(text)

    def retained(self) -> list[Retained]:
        """The retained messages not yet expired, oldest first; expired ones are dropped."""
        now = self._clock.now()
        self._retained = {k: r for k, r in self._retained.items() if now < r.until}
        return list(self._retained.values())

    def _overflowed(self, listener: Listener) -> None:
        log.warning("listener_overflow", listener=listener.name, reason=listener.close_reason)
        if self._on_overflow:
            self._on_overflow(listener.name)
