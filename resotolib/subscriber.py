"""The action channel of one subscriber: receive actions, answer them, and outlive the core going away.

``ActionSubscriber`` keeps one websocket to ``/subscriber/{id}/handle`` open in a background task.
Before every (re)connect it registers its subscriptions again as the whole set of its id (one
``PUT /subscriber/{id}``), so a core that lost them (restart, expiry) knows them once more, and
subscriptions an earlier run under the same id had but this one does not are removed: the core stops
sending those actions and stops waiting for this subscriber on them. While the id is connected elsewhere
the core refuses (429, logged as ``already_connected``) and keeps the subscriptions it has. Right after
connecting it registers once more, so the set of the process holding the id is the one that stays,
whatever another process registered in between. On any
failure it waits a capped exponential backoff with full jitter and tries again; the iteration over
actions never fails because the core went away.

The core re-sends every pending action on connect. An action whose (task, step) is still being
handled here is not yielded again; one that was answered gets the stored answer sent again instead.
Answers (done, error) given while disconnected wait in a bounded outbox, sent right after the next
connect; notices (info, progress) given while disconnected are dropped and counted.

    async with ActionSubscriber(url, "worker-1", [Subscription(message_type="collect")]) as subscriber:
        async for action in subscriber:
            try:
                await collect(action)
            except Exception as e:
                await subscriber.error(action, str(e))
            else:
                await subscriber.done(action)
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import aiohttp
import structlog

from resotolib.client import TRANSPORT_ERRORS, CoreClient, CoreError, CoreUnreachable, already_connected
from resotolib.protocol import (
    Action,
    ActionDone,
    ActionDoneData,
    ActionError,
    ActionErrorData,
    ActionInfo,
    ActionInfoData,
    ActionProgress,
    ActionProgressData,
    Answer,
    ProgressDone,
    ProtocolError,
    SubscriberId,
    Subscription,
    TaskId,
    parse_message,
    serialize,
)

log = structlog.get_logger(__name__)

Key = tuple[TaskId, str]
MAX_FRAME = 4 * 1024 * 1024
MAX_WAITING_ACTIONS = 1000
"""Actions received but not yet taken by the iteration; more are dropped (the core re-sends on reconnect)."""


def backoff(attempt: int, min_backoff: float, max_backoff: float, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter below a capped exponential."""
    cap = min(max_backoff, min_backoff * 2.0 ** min(attempt, 64))
    return rng.uniform(0, cap)


@dataclass
class SubscriberStats:
    """Counters of one subscriber, for logs, health checks and tests."""

    connections: int = 0
    """Successful connects of the action channel."""
    failures: int = 0
    """Failed connect attempts plus lost connections (each followed by a backoff)."""
    duplicates: int = 0
    """Actions received again (handled or answered already) and therefore not yielded."""
    answers_resent: int = 0
    """Stored answers sent again because the core asked again for an answered action."""
    dropped: int = 0
    """Info and progress notices dropped because the channel was down."""
    outbox_dropped: int = 0
    """Answers dropped from a full outbox (the core re-asks on reconnect; the answer memory covers it)."""
    actions_dropped: int = 0
    """Actions dropped because too many were received and not taken yet."""


class ActionSubscriber:
    """``async for action in subscriber`` yields the actions the core sends; answer each with done or error."""

    def __init__(
        self,
        url: str,
        subscriber_id: str,
        subscriptions: Sequence[Subscription],
        *,
        session: aiohttp.ClientSession | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        heartbeat: float = 20.0,
        max_msg_size: int = MAX_FRAME,
        request_timeout: float = 30.0,
        outbox_size: int = 1000,
        remember: int = 1000,
        rng: random.Random | None = None,
        psk: str | None = None,
        ca_cert: str | Path | None = None,
        exclusive: bool = False,
    ) -> None:
        """With `exclusive`, finding the id connected elsewhere before this subscriber ever connected ends it
        (``refused`` says why) instead of waiting for the id: another process owns it."""
        if not subscriptions:
            raise ValueError("a subscriber needs at least one subscription")
        self.subscriber_id = SubscriberId(subscriber_id)
        self.subscriptions = tuple(subscriptions)
        self.stats = SubscriberStats()
        self._client = CoreClient(url, session=session, request_timeout=request_timeout, psk=psk, ca_cert=ca_cert)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._max_msg_size = max_msg_size
        self._outbox_size = outbox_size
        self._remember = remember
        self._rng = rng or random.Random()
        self._log = log.bind(subscriber_id=self.subscriber_id, url=self._client.url)
        self._actions: asyncio.Queue[Action | None] = asyncio.Queue()
        self._handling: OrderedDict[Key, None] = OrderedDict()
        self._answered: OrderedDict[Key, Answer] = OrderedDict()
        self._outbox: deque[tuple[Key, str]] = deque()
        self._sent_since_connect: set[Key] = set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._registration = asyncio.Lock()
        self._subscribed = True
        self._runner: asyncio.Task[None] | None = None
        self._exclusive = exclusive
        self.refused: str | None = None
        """Why an exclusive subscriber ended without ever connecting (the id was connected elsewhere)."""

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (done by ``async with`` and by iterating)."""
        if self._runner is None:
            name = f"subscriber:{self.subscriber_id}"
            self._runner = asyncio.get_running_loop().create_task(self._run(), name=name)

    async def close(self) -> None:
        """Close the channel and end every iteration; subscriptions stay (see ``unsubscribe``)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel("subscriber closed")
            await asyncio.gather(runner, return_exceptions=True)
        self._actions.put_nowait(None)
        await self._client.close()

    async def unsubscribe(self) -> None:
        """Remove every subscription of this subscriber from the core and stop reconnecting.

        The core then stops waiting for this subscriber. The open channel stays until ``close()``.
        Raises CoreError (CoreUnreachable) when the core cannot be told.
        """
        async with self._registration:
            self._subscribed = False
            for subscription in self.subscriptions:
                await self._client.remove_subscription(self.subscriber_id, subscription.message_type)
        self._log.info("unsubscribed", message_types=[s.message_type for s in self.subscriptions])

    @property
    def pending_answers(self) -> int:
        """Answers given while disconnected, waiting for the next connect."""
        return len(self._outbox)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def __aiter__(self) -> AsyncIterator[Action]:
        self.start()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Action]:
        while (action := await self._actions.get()) is not None:
            yield action
        self._actions.put_nowait(None)  # end every other iteration too

    # ---- answers ------------------------------------------------------------------------------------

    async def done(self, action: Action) -> None:
        data = ActionDoneData(task=action.data.task, step=action.data.step)
        await self._answer(ActionDone(message_type=action.message_type, data=data))

    async def error(self, action: Action, message: str) -> None:
        data = ActionErrorData(task=action.data.task, step=action.data.step, error=message)
        await self._answer(ActionError(message_type=action.message_type, data=data))

    async def info(self, action: Action, message: str, level: Literal["info", "warning", "error"] = "info") -> None:
        data = ActionInfoData(task=action.data.task, step=action.data.step, level=level, message=message)
        await self._notice(ActionInfo(message_type=action.message_type, data=data))

    async def progress(
        self,
        action: Action,
        name: str,
        current: float,
        total: float,
        *,
        context: Sequence[str] = (),
        path: Sequence[str] | None = None,
    ) -> None:
        done = ProgressDone(name=name, current=current, total=total, path=list(path) if path is not None else None)
        data = ActionProgressData(task=action.data.task, step=action.data.step, context=list(context), progress=done)
        await self._notice(ActionProgress(message_type=action.message_type, data=data))

    async def _answer(self, answer: Answer) -> None:
        key = (answer.data.task, answer.data.step)
        self._handling.pop(key, None)
        self._answered[key] = answer
        self._answered.move_to_end(key)
        while len(self._answered) > self._remember:
            self._answered.popitem(last=False)
        frame = serialize(answer)
        if await self._send(frame):
            self._sent_since_connect.add(key)
        else:
            self._queue(key, frame)

    async def _notice(self, notice: ActionInfo | ActionProgress) -> None:
        if not await self._send(serialize(notice)):
            self.stats.dropped += 1
            self._log.debug("notice_dropped", kind=notice.kind, task=notice.data.task, step=notice.data.step)

    def _queue(self, key: Key, frame: str) -> None:
        if len(self._outbox) >= self._outbox_size:
            (task, step), _ = self._outbox.popleft()
            self.stats.outbox_dropped += 1
            self._log.warning("outbox_full", dropped_task=task, dropped_step=step, size=self._outbox_size)
        self._outbox.append((key, frame))

    async def _send(self, frame: str) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(frame)
        except (*TRANSPORT_ERRORS, RuntimeError):
            return False
        return True

    # ---- the connection -----------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while self._subscribed:
            try:
                reason = await self._connect_and_serve()
                event, attempt = "core_disconnected", 0
            except _IdTaken as e:
                self.refused = f"subscriber id {self.subscriber_id!r} is already connected: {e}"
                self._log.error("already_connected", reason=str(e), hint="another process uses this subscriber id")
                break
            except CoreError as e:
                reason, event = str(e), _refusal_event(e)
            except Exception as e:  # the channel must outlive every failure; the next attempt starts afresh
                self._log.exception("subscriber_failed")
                reason, event = repr(e), "core_unreachable"
            if not self._subscribed:
                break
            self.stats.failures += 1
            delay = backoff(attempt, self._min_backoff, self._max_backoff, self._rng)
            attempt += 1
            self._log.warning(event, reason=reason, retry_in=round(delay, 3))
            await asyncio.sleep(delay)
        self._log.info("subscriber_stopped")
        self._actions.put_nowait(None)

    async def _connect_and_serve(self) -> str:
        """Register, connect, serve until the socket closes; returns why it closed."""
        try:
            if not await self._register():
                return "unsubscribed"
        except CoreError as e:  # only the registration's answer tells a taken id from other refusals
            if self._exclusive and not self.stats.connections and already_connected(e):
                raise _IdTaken(str(e)) from e
            raise
        path = ("subscriber", self.subscriber_id, "handle")
        async with self._client.websocket(*path, heartbeat=self._heartbeat, max_msg_size=self._max_msg_size) as ws:
            try:
                await self._register(connected=True)
                self._connected_to(ws)
                await self._flush_outbox(ws)
                return await self._serve(ws)
            except TRANSPORT_ERRORS as e:
                return repr(e)
            finally:
                self._ws = None
                self._connected.clear()

    async def _register(self, connected: bool = False) -> bool:
        """Make the core's subscriptions of this id exactly ours (it may have lost them, or hold those of an
        earlier run with other message types); False once unsubscribed. While the id is connected (another
        process with the same id, or our previous connection the core has not seen go yet) the core refuses
        with 429 and keeps the subscriptions it has. Once `connected`, the id is ours and so is the set:
        again, since another process may have registered between our registration and our connect."""
        async with self._registration:
            if not self._subscribed:
                return False
            await self._client.set_subscriptions(self.subscriber_id, self.subscriptions, unless_connected=not connected)
            return True

    def _connected_to(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._sent_since_connect.clear()
        self.stats.connections += 1
        self._connected.set()
        self._log.info("subscriber_connected", connections=self.stats.connections)

    async def _flush_outbox(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while self._outbox:
            key, frame = self._outbox[0]
            await ws.send_str(frame)
            self._outbox.popleft()
            self._sent_since_connect.add(key)
            self._log.info("answer_delivered", task=key[0], step=key[1], late=True)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                await self._on_text(ws, frame.data)
            elif frame.type is aiohttp.WSMsgType.ERROR:
                return repr(ws.exception())
            else:
                self._log.warning("frame_invalid", error="binary frame")
        return f"closed by the core with code {ws.close_code}"

    async def _on_text(self, ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
        try:
            message = parse_message(text)
        except ProtocolError as e:
            self._log.warning("frame_invalid", error=str(e))
            return
        if isinstance(message, Action):
            await self._on_action(ws, message)
        else:
            self._log.debug("frame_ignored", kind=message.kind)

    async def _on_action(self, ws: aiohttp.ClientWebSocketResponse, action: Action) -> None:
        key = (action.data.task, action.data.step)
        answer = self._answered.get(key)
        if answer is not None:
            self.stats.duplicates += 1
            if key not in self._sent_since_connect:
                await ws.send_str(serialize(answer))
                self._sent_since_connect.add(key)
                self.stats.answers_resent += 1
                self._log.info("answer_resent", task=key[0], step=key[1])
        elif key in self._handling:
            self.stats.duplicates += 1
            self._log.debug("action_duplicate", task=key[0], step=key[1])
        elif self._actions.qsize() >= MAX_WAITING_ACTIONS:
            self.stats.actions_dropped += 1
            self._log.warning("action_dropped", task=key[0], step=key[1], reason="too many actions not taken yet")
        else:
            self._handle(key, action)

    def _handle(self, key: Key, action: Action) -> None:
        self._handling[key] = None
        while len(self._handling) > self._remember:  # never answered: the core has long given up on these
            self._handling.popitem(last=False)
        self._actions.put_nowait(action)


class _IdTaken(Exception):
    """An exclusive subscriber's registration found its id connected before it ever connected itself."""


def _refusal_event(error: CoreError) -> str:
    """How a failed attempt is logged: a core that cannot be reached, or one that answered no."""
    if isinstance(error, CoreUnreachable):
        return "core_unreachable"
    if already_connected(error):  # the id is connected: another process, or our old connection lingers
        return "already_connected"
    return "access_refused" if error.status in (401, 403) else "core_refused"
