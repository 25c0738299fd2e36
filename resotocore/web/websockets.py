"""The two websockets: a subscriber's action channel and the event stream.

Each socket has a reader and a writer. The writer drains the socket's bounded Listener; the reader
parses frames one by one. An invalid frame closes that socket (code 1008 with the reason) and changes
nothing; the core and every other socket carry on.

A peer that stops reading cannot hold anything up: its listener overflows (it is closed, code 1013)
or aiohttp's heartbeat finds it silent, which ends the reader; then the writer gets GOODBYE_WITHIN
seconds to hand over its last frames and the close frame, and the connection is cut off if it cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from resotocore.bus.message_bus import Listener
from resotocore.core import CORE, GOODBYE_WITHIN, Core, CutOff, close_websocket
from resotocore.web.auth import AUTH_PENDING, VERIFIER, authenticate_first_frame
from resotocore.web.errors import close_reason, error_json
from resotolib.protocol import (
    Action,
    ActionDone,
    ActionError,
    ActionInfo,
    ActionProgress,
    Authorization,
    Event,
    Message,
    ProtocolError,
    SubscriberId,
    parse_message,
    serialize,
)

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

FrameHandler = Callable[[Message], Awaitable[None]]
YIELD_EVERY = 16
"""Frames a socket's reader handles before it lets other tasks run."""


@routes.get("/subscriber/{id}/handle")
async def action_channel(request: web.Request) -> web.StreamResponse:
    core = request.app[CORE]
    sid = SubscriberId(request.match_info["id"])
    pending_auth = request.get(AUTH_PENDING, False)
    if not pending_auth:  # an unauthenticated client learns nothing about subscribers
        if (refusal := _refusal(core, sid)) is not None:
            return error_json(*refusal)
    async with _websocket(core, request) as (ws, cut_off):
        if pending_auth and not await authenticate_first_frame(request, ws, request.app[VERIFIER]):
            return ws
        listener = core.bus.listener(f"subscriber:{sid}")
        # Connect and queue the pending actions without yielding in between: a step starting now sends
        # its action either through this listener or as a pending action, never both.
        if (refusal := _refusal(core, sid)) is not None:
            await close_websocket(ws, cut_off, WSCloseCode.POLICY_VIOLATION, close_reason(refusal[1]))
            return ws
        core.registry.connect(sid, listener)
        try:
            for frame in core.engine.pending_actions(sid):
                listener.offer(frame)
            log.info("subscriber_connected", subscriber_id=sid)
            await _serve(core, ws, cut_off, listener, partial(_from_subscriber, core, sid), f"subscriber {sid}")
        finally:
            core.registry.disconnect(sid, listener, core.clock.now())
            log.info("subscriber_disconnected", subscriber_id=sid, reason=listener.close_reason or "closed")
    return ws


def _refusal(core: Core, sid: SubscriberId) -> tuple[int, str] | None:
    """Why this subscriber may not open its action channel now (429 is checked before 404)."""
    if core.registry.is_connected(sid):
        return 429, f"subscriber {sid} is already connected"
    subscriber = core.registry.get(sid)
    if subscriber is None or not subscriber.subscriptions:
        return 404, f"subscriber {sid} has no subscriptions; register one with POST /subscriber/{sid}/TYPE"
    return None


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    core = request.app[CORE]
    show = [s.strip() for s in request.query.get("show", "").split(",") if s.strip()]
    if "*" in show:  # Resoto's name for every message type
        show = []
    async with _websocket(core, request) as (ws, cut_off):
        if not await authenticate_first_frame(request, ws, request.app[VERIFIER]):
            return ws
        async with core.bus.subscribe("events", show or None) as listener:
            await _serve(core, ws, cut_off, listener, partial(_from_observer, core), "events")
    return ws


@asynccontextmanager
async def _websocket(core: Core, request: web.Request) -> AsyncIterator[tuple[web.WebSocketResponse, CutOff]]:
    """A prepared websocket, known to the core (which closes it at shutdown) while the block runs."""
    ws = web.WebSocketResponse(heartbeat=core.config.heartbeat, max_msg_size=core.config.max_frame_size)
    await ws.prepare(request)

    def cut_off() -> None:
        if request.transport is not None:
            request.transport.abort()

    core.websockets[ws] = cut_off
    try:
        yield ws, cut_off
    finally:
        core.websockets.pop(ws, None)


async def _serve(
    core: Core, ws: web.WebSocketResponse, cut_off: CutOff, listener: Listener, handle: FrameHandler, name: str
) -> None:
    """Read until the peer is gone or breaks the protocol; then the writer gets GOODBYE_WITHIN seconds."""
    writer = asyncio.create_task(_write(ws, cut_off, listener))
    try:
        await _read(core, ws, cut_off, handle, name)
        listener.close(listener.close_reason or "closed")
        done, _ = await asyncio.wait([writer], timeout=GOODBYE_WITHIN)
        if not done:  # stuck sending: the peer takes nothing from its socket any more
            log.warning("websocket_cut_off", socket=name, reason="the peer does not read")
            cut_off()
    finally:
        listener.close(listener.close_reason or "closed")
        writer.cancel()
        await asyncio.wait([writer])
    if writer.cancelled() or (error := writer.exception()) is None:
        return
    if isinstance(error, ConnectionError):  # the peer vanished while we wrote
        log.warning("websocket_failed", socket=name, error=repr(error))
    else:
        log.error("websocket_writer_failed", socket=name, error=repr(error), exc_info=error)


async def _write(ws: web.WebSocketResponse, cut_off: CutOff, listener: Listener) -> None:
    while (frame := await listener.next()) is not None:
        await ws.send_str(frame)
    if not ws.closed:
        code = WSCloseCode.TRY_AGAIN_LATER if listener.close_reason.startswith("too slow") else WSCloseCode.OK
        await close_websocket(ws, cut_off, code, close_reason(listener.close_reason))


async def _read(core: Core, ws: web.WebSocketResponse, cut_off: CutOff, handle: FrameHandler, name: str) -> None:
    handled = 0
    async for msg in ws:
        handled += 1
        if handled % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # a fast sender must not starve the writers of other sockets
        if msg.type is WSMsgType.TEXT:
            if not msg.data.strip():  # blank frames carry nothing; Resoto's core skips them too
                continue
            try:
                await handle(parse_message(msg.data))
            except ProtocolError as e:
                core.metrics.protocol_errors.inc()
                log.warning("protocol_error", socket=name, error=str(e))
                await close_websocket(ws, cut_off, WSCloseCode.POLICY_VIOLATION, close_reason(str(e)))
                return
            except Exception:  # a bug handling one frame must not take the socket down
                log.exception("frame_failed", socket=name)
        elif msg.type is WSMsgType.BINARY:
            core.metrics.protocol_errors.inc()
            log.warning("protocol_error", socket=name, error="binary frame")
            await close_websocket(ws, cut_off, WSCloseCode.UNSUPPORTED_DATA, b"binary frames are not supported")
            return
        elif msg.type is WSMsgType.ERROR:
            log.warning("websocket_error", socket=name, error=repr(ws.exception()))
            return


async def _from_subscriber(core: Core, sid: SubscriberId, msg: Message) -> None:
    match msg:
        case ActionDone() | ActionError() | ActionInfo():
            _observe(core, sid, msg)
            await core.engine.receive(sid, msg)
        case ActionProgress():
            _observe(core, sid, msg)
            core.engine.progress_update(sid, msg)
        case _:
            await _common(core, msg)


async def _from_observer(core: Core, msg: Message) -> None:
    match msg:
        case ActionDone() | ActionError() | ActionInfo() | ActionProgress():
            sid = msg.data.subscriber_id
            if sid is None:
                log.warning("answer_ignored", kind=msg.kind, reason="no subscriber_id in data on /events")
                return
            await _from_subscriber(core, sid, msg)
        case _:
            await _common(core, msg)


async def _common(core: Core, msg: Message) -> None:
    match msg:
        case Event():
            core.engine.emit_event(msg.message_type, dict(msg.data), trigger=False)
            results = await core.engine.on_event(msg.message_type, dict(msg.data))
            for result in results:
                log.info(
                    "event_trigger", message_type=msg.message_type, workflow=result.workflow_id, status=result.status
                )
        case Action():
            raise ProtocolError("clients must not send 'action' messages")
        case Authorization():
            pass  # only meaningful when the core requires authentication
        case _:  # pragma: no cover - every kind is handled above
            raise ProtocolError(f"unexpected message kind {msg.kind}")


def _observe(core: Core, sid: SubscriberId, msg: ActionDone | ActionError | ActionInfo | ActionProgress) -> None:
    """Show an answer to observers, with the subscriber id filled in from the connection."""

    def frame() -> str:
        data = msg.data.model_copy(update={"subscriber_id": sid})
        return serialize(msg.model_copy(update={"data": data}))

    core.bus.emit(msg.message_type, frame)
