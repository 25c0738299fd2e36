"""Pre-shared-key authentication: a JWT on every request but the open ones.

Websockets may authenticate with their first frame instead of a header
(``{"kind": "authorization", "jwt": "Bearer <token>"}``), as Resoto's clients can. Failures are
answered with 401 and logged with the reason, never with the token.

Deriving the key of a salt not seen before costs tens of milliseconds of CPU (PBKDF2, by design).
It runs in a thread, one at a time, so the event loop never waits for it; requests presenting the
same new token share one derivation. When more new salts wait than MAX_WAITING_KEYS (a flood of
made-up tokens), further new ones are refused at once with 429 instead of queueing without bound;
clients whose token is known are not affected.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler, Middleware

from resotocore.web.errors import close_reason, error_json
from resotolib.auth import AuthError, Verifier, derive_key
from resotolib.protocol import Authorization, ProtocolError, parse_message

log = structlog.get_logger(__name__)

OPEN_PATHS = ("/system/", "/metrics", "/api-doc", "/ui")
WEBSOCKET_ROUTES = frozenset({"/subscriber/{id}/handle", "/events"})
"""The only routes that may authenticate with their first frame instead of a header."""
AUTH_PENDING = web.RequestKey("auth_pending", bool)
FIRST_FRAME_TIMEOUT = 10.0
MAX_WAITING_KEYS = 64
"""Resoto's clients sign every request with a new salt, so a worker starting many subscriptions, or every
client reconnecting after a restart, brings a burst of new salts: 64 wait at most ~2 s (at ~30 ms each)."""


class TooManyNewTokens(AuthError):
    """More new salts wait for their key than the core derives at once."""


class OffLoopVerifier:
    """A Verifier whose slow part (a new salt's key) runs in a thread, one derivation at a time."""

    def __init__(self, psk: str) -> None:
        self._verifier = Verifier(psk)
        self._waiting: dict[bytes, asyncio.Task[bytes]] = {}
        self._one_at_a_time = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """New salts whose key is being derived or waits for its turn."""
        return len(self._waiting)

    async def verify(self, authorization: str | None) -> dict[str, Any]:
        token, salt = self._verifier.parse(authorization)
        if self._verifier.knows(salt):
            return self._verifier.claims(token, salt)
        key = await self._key(salt)
        claims = self._verifier.check(token, key)
        self._verifier.remember(salt, key)  # only keys of valid tokens: a flood cannot evict the clients' keys
        return claims

    async def _key(self, salt: bytes) -> bytes:
        derivation = self._waiting.get(salt)
        if derivation is None:
            if self.waiting >= MAX_WAITING_KEYS:
                raise TooManyNewTokens("too many new tokens at once; retry in a moment")
            derivation = asyncio.get_running_loop().create_task(self._derive(salt))
            self._waiting[salt] = derivation
            derivation.add_done_callback(lambda _: self._waiting.pop(salt, None))
        return await asyncio.shield(derivation)  # a client that goes away does not cancel it for the others

    async def _derive(self, salt: bytes) -> bytes:
        async with self._one_at_a_time:
            return await asyncio.to_thread(derive_key, self._verifier.psk, salt)


VERIFIER: web.AppKey[OffLoopVerifier | None] = web.AppKey("verifier")


def auth_middleware(verifier: OffLoopVerifier) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None and _is_websocket_route(request):
            request[AUTH_PENDING] = True  # the first frame must authenticate
            return await handler(request)
        try:
            await verifier.verify(header)
        except AuthError as e:
            log.warning("auth_failed", method=request.method, path=request.path, peer=request.remote, reason=str(e))
            if isinstance(e, TooManyNewTokens):
                return error_json(429, str(e))
            return error_json(401, f"unauthorized: {e}")
        return await handler(request)

    return middleware


async def authenticate_first_frame(
    request: web.Request, ws: web.WebSocketResponse, verifier: OffLoopVerifier | None
) -> bool:
    """For a websocket without an Authorization header: the first frame must carry a valid token."""
    if verifier is None or not request.get(AUTH_PENDING):
        return True
    reason = "authorization required: send an authorization frame first"
    code = WSCloseCode.POLICY_VIOLATION
    try:
        msg = await asyncio.wait_for(ws.receive(), FIRST_FRAME_TIMEOUT)
        if msg.type is WSMsgType.TEXT:
            frame = parse_message(msg.data)
            if isinstance(frame, Authorization):
                await verifier.verify(frame.jwt)
                return True
    except TimeoutError:
        reason = "authorization required: no authorization frame in time"
    except TooManyNewTokens as e:
        reason, code = str(e), WSCloseCode.TRY_AGAIN_LATER
    except (AuthError, ProtocolError) as e:
        reason = f"unauthorized: {e}"
    log.warning("auth_failed", path=request.path, peer=request.remote, reason=reason)
    await ws.close(code=code, message=close_reason(reason))
    return False


def _is_websocket_route(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and resource is not None
        and resource.canonical in WEBSOCKET_ROUTES
    )
