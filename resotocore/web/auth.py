"""Pre-shared-key authentication: a JWT on every request but the open ones.

Websockets may authenticate with their first frame instead of a header
(``{"kind": "authorization", "jwt": "Bearer <token>"}``), as Resoto's clients can. Failures are
answered with 401 and logged with the reason, never with the token.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler, Middleware

from resotocore.web.errors import close_reason, error_json
from resotolib.auth import AuthError, Verifier
from resotolib.protocol import Authorization, ProtocolError, parse_message

log = structlog.get_logger(__name__)

OPEN_PATHS = ("/system/", "/metrics", "/api-doc", "/ui")
WEBSOCKET_ROUTES = frozenset({"/subscriber/{id}/handle", "/events"})
"""The only routes that may authenticate with their first frame instead of a header."""
AUTH_PENDING = web.RequestKey("auth_pending", bool)
VERIFIER: web.AppKey[Verifier | None] = web.AppKey("verifier")
FIRST_FRAME_TIMEOUT = 10.0


def auth_middleware(verifier: Verifier) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None and _is_websocket_route(request):
            request[AUTH_PENDING] = True  # the first frame must authenticate
            return await handler(request)
        try:
            verifier.verify(header)
        except AuthError as e:
            log.warning("auth_failed", method=request.method, path=request.path, peer=request.remote, reason=str(e))
            return error_json(401, f"unauthorized: {e}")
        return await handler(request)

    return middleware


async def authenticate_first_frame(request: web.Request, ws: web.WebSocketResponse, verifier: Verifier | None) -> bool:
    """For a websocket without an Authorization header: the first frame must carry a valid token."""
    if verifier is None or not request.get(AUTH_PENDING):
        return True
    reason = "authorization required: send an authorization frame first"
    try:
        msg = await asyncio.wait_for(ws.receive(), FIRST_FRAME_TIMEOUT)
        if msg.type is WSMsgType.TEXT:
            frame = parse_message(msg.data)
            if isinstance(frame, Authorization):
                verifier.verify(frame.jwt)
                return True
    except TimeoutError:
        reason = "authorization required: no authorization frame in time"
    except (AuthError, ProtocolError) as e:
        reason = f"unauthorized: {e}"
    log.warning("auth_failed", path=request.path, peer=request.remote, reason=reason)
    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=close_reason(reason))
    return False


def _is_websocket_route(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and resource is not None
        and resource.canonical in WEBSOCKET_ROUTES
    )
