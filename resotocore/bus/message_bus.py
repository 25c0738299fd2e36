"""The in-process bus: every message for observers goes through here to bounded per-listener queues.

Overflow rule: a listener whose queue is full is closed (and counted). Its websocket is then closed
with a clear reason; a subscriber that reconnects gets its pending actions again, an observer knows
it lost messages. Emitting never awaits, so a slow socket never blocks the engine.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

import structlog

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
        while not self._frames:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None if self.closed else self._frames.popleft()


class MessageBus:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE, on_overflow: Callable[[str], None] | None = None) -> None:
        self.queue_size = queue_size
        self._listeners: set[Listener] = set()
        self._on_overflow = on_overflow

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def listener(self, name: str, channels: Collection[str] | None = None) -> Listener:
        listener = Listener(name, channels, self.queue_size)
        listener.on_overflow = self._overflowed
        return listener

    @asynccontextmanager
    async def subscribe(self, name: str, channels: Collection[str] | None = None) -> AsyncIterator[Listener]:
        """Receive every message (or those of `channels`) until the block ends; always deregisters."""
        listener = self.listener(name, channels)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)
            listener.close("unsubscribed")

    def emit(self, message_type: str, frame: Callable[[], str]) -> None:
        """Offer a message to every interested listener; the frame is serialised once, only if needed."""
        text: str | None = None
        for listener in list(self._listeners):
            if listener.accepts(message_type):
                text = text if text is not None else frame()
                listener.offer(text)

    def _overflowed(self, listener: Listener) -> None:
        log.warning("listener_overflow", listener=listener.name, reason=listener.close_reason)
        if self._on_overflow:
            self._on_overflow(listener.name)
