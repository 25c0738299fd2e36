"""Subscribers: who listens to which action, who is connected, and who has been gone too long.

Subscriptions are persisted. A subscriber that stays disconnected for DISCONNECT_GRACE loses its
subscriptions (never within STARTUP_GRACE of the core's start, so workers can come back after a
restart), so the core stops waiting for it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

import structlog

from resotocore.bus.message_bus import Listener
from resotocore.db.store import Changes, Store
from resotolib import protocol
from resotolib.protocol import MAX_TIMEOUT_SECONDS, Subscriber, SubscriberId, Subscription

log = structlog.get_logger(__name__)

DISCONNECT_GRACE = timedelta(minutes=3)
STARTUP_GRACE = timedelta(minutes=5)
DIGITS = re.compile(r"[0-9]+")
MAX_DIGITS = 20

Unsubscribed = Callable[[SubscriberId, frozenset[str]], Awaitable[None]]


class InvalidSubscription(ValueError):
    pass


class AlreadyConnected(RuntimeError):
    pass


def check_name(kind: str, value: str) -> str:
    """``value`` when it is a valid ``kind`` (the rule of ``resotolib.protocol``), else InvalidSubscription."""
    try:
        return protocol.check_name(kind, value)
    except ValueError as e:
        raise InvalidSubscription(str(e)) from None


def make_subscription(message_type: str, timeout: str | None, wait_for_completion: str | None) -> Subscription:
    """Build a subscription from query values: timeout in whole seconds, wait is true unless 'false'."""
    check_name("message type", message_type)
    seconds = 60 if timeout is None else parse_timeout(timeout)
    wait = str(wait_for_completion).lower() != "false"
    return Subscription(message_type=message_type, wait_for_completion=wait, timeout=seconds)


def parse_timeout(text: str) -> int:
    """Seconds written as plain decimal digits (as Resoto's clients send them), within the core's limit.

    ``int()`` alone would also take "1_0", " 10", "+10" and digits of other scripts.
    """
    if not DIGITS.fullmatch(text):
        raise InvalidSubscription(f"invalid timeout {text!r}: expected whole seconds, digits 0-9 only")
    if len(text) > MAX_DIGITS:  # far beyond the limit, and int() refuses 4,300 digits and more
        raise InvalidSubscription(f"invalid timeout of {len(text)} digits: expected 1 to {MAX_TIMEOUT_SECONDS} seconds")
    try:
        return protocol.check_timeout(int(text))
    except ValueError as e:
        raise InvalidSubscription(str(e)) from None


class SubscriberRegistry:
    def __init__(self, store: Store, started_at: datetime) -> None:
        self._store = store
        self._started_at = started_at
        self._subscribers: dict[SubscriberId, Subscriber] = {}
        self._connections: dict[SubscriberId, Listener] = {}
        self._disconnected_since: dict[SubscriberId, datetime] = {}
        self.on_unsubscribed: Unsubscribed | None = None
        self._lock = asyncio.Lock()  # read-modify-write of one subscriber spans an awaited commit

    async def load(self) -> None:
        for subscriber in await self._store.subscribers():
            self._subscribers[subscriber.id] = subscriber
            self._disconnected_since[subscriber.id] = self._started_at

    # ---- queries ------------------------------------------------------------------------------------

    def get(self, sid: SubscriberId) -> Subscriber | None:
        return self._subscribers.get(sid)

    def all(self) -> list[Subscriber]:
        return sorted(self._subscribers.values(), key=lambda s: s.id)

    def for_message_type(self, message_type: str) -> list[Subscriber]:
        return [s for s in self.all() if message_type in s.subscriptions]

    def lookup(self, message_type: str) -> list[tuple[SubscriberId, Subscription]]:
        return [
            (sid, sub.subscriptions[message_type])
            for sid, sub in sorted(self._subscribers.items())
            if message_type in sub.subscriptions
        ]

    # ---- changes ------------------------------------------------------------------------------------

    async def add_subscription(self, sid: SubscriberId, subscription: Subscription, now: datetime) -> Subscriber:
        check_name("subscriber id", sid)
        async with self._lock:
            existing = self._subscribers.get(sid) or Subscriber(id=sid)
            subs = {**existing.subscriptions, subscription.message_type: subscription}
            return await self._save(Subscriber(id=sid, subscriptions=subs), now)

    async def remove_subscription(self, sid: SubscriberId, message_type: str, now: datetime) -> Subscriber:
        async with self._lock:
            existing = self._subscribers.get(sid) or Subscriber(id=sid)
            subs = {k: v for k, v in existing.subscriptions.items() if k != message_type}
            updated = await self._save(Subscriber(id=sid, subscriptions=subs), now)
        if message_type in existing.subscriptions:
            await self._notify(sid, frozenset({message_type}))
        return updated

    async def replace(
        self, sid: SubscriberId, subscriptions: Iterable[Subscription], now: datetime, *, unless_connected: bool = False
    ) -> Subscriber:
        """Make these the subscriber's whole set; with ``unless_connected``, AlreadyConnected (and nothing
        changes) while its action channel is open, so a second process with the same id cannot take over
        the subscriptions of the running one."""
        check_name("subscriber id", sid)
        async with self._lock:
            if unless_connected and sid in self._connections:
                raise AlreadyConnected(f"subscriber {sid} is already connected")
            existing = self._subscribers.get(sid) or Subscriber(id=sid)
            subs = {s.message_type: s for s in subscriptions}
            updated = await self._save(Subscriber(id=sid, subscriptions=subs), now)
        await self._notify(sid, frozenset(existing.subscriptions) - frozenset(subs))
        return updated

    async def remove(self, sid: SubscriberId) -> Subscriber | None:
        async with self._lock:
            existing = self._subscribers.get(sid)
            if existing is None:
                return None
            await self._store.commit(Changes(deleted_subscribers=[sid]))
            self._subscribers.pop(sid, None)
            self._disconnected_since.pop(sid, None)
        await self._notify(sid, frozenset(existing.subscriptions))
        return existing

    async def _save(self, subscriber: Subscriber, now: datetime) -> Subscriber:
        if not subscriber.subscriptions:
            # A subscriber without subscriptions is no subscriber: forget it, keep answering with its id.
            if subscriber.id in self._subscribers:
                await self._store.commit(Changes(deleted_subscribers=[subscriber.id]))
                self._subscribers.pop(subscriber.id, None)
                self._disconnected_since.pop(subscriber.id, None)
            return subscriber
        if self._subscribers.get(subscriber.id) != subscriber:
            await self._store.commit(Changes(subscribers=[subscriber]))
        if subscriber.id not in self._subscribers and subscriber.id not in self._connections:
            self._disconnected_since[subscriber.id] = now
        self._subscribers[subscriber.id] = subscriber
        return subscriber

    async def _notify(self, sid: SubscriberId, message_types: frozenset[str]) -> None:
        if message_types and self.on_unsubscribed:
            await self.on_unsubscribed(sid, message_types)

    # ---- connections --------------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        return len(self._connections)

    def is_connected(self, sid: SubscriberId) -> bool:
        return sid in self._connections

    def connect(self, sid: SubscriberId, listener: Listener) -> None:
        if sid in self._connections:
            raise AlreadyConnected(f"subscriber {sid} is already connected")
        self._connections[sid] = listener
        self._disconnected_since.pop(sid, None)

    def disconnect(self, sid: SubscriberId, listener: Listener, now: datetime) -> None:
        if self._connections.get(sid) is listener:
            del self._connections[sid]
            if sid in self._subscribers:
                self._disconnected_since[sid] = now

    def send(self, sid: SubscriberId, frame: str) -> bool:
        listener = self._connections.get(sid)
        return listener.offer(frame) if listener else False

    # ---- expiry -------------------------------------------------------------------------------------

    def expired(self, now: datetime) -> list[SubscriberId]:
        if now - self._started_at < STARTUP_GRACE:
            return []
        return sorted(sid for sid, since in self._disconnected_since.items() if now - since >= DISCONNECT_GRACE)

    async def expire(self, now: datetime) -> list[SubscriberId]:
        removed = self.expired(now)
        for sid in removed:
            log.warning("subscriber_expired", subscriber_id=sid, disconnected_since=str(self._disconnected_since[sid]))
            await self.remove(sid)
        return removed
