"""An async client of the core's REST API and event stream, on aiohttp.

``CoreClient`` speaks to one core: the bus (subscribers), workflows and tasks, events, and the
resource graph. Every HTTP request and websocket handshake goes through one place that builds the
headers, so authentication can be added there. Failures surface as two exceptions only:

- ``CoreError(status, message)``: the core answered with a status that is not 2xx; ``message`` is the
  text of its JSON ``{"error": ...}`` body (or the raw body when it is not such JSON).
- ``CoreUnreachable``: no answer at all (connection refused or reset, name not resolved, timeout).
  It is a ``CoreError`` with ``status == 0``, so ``except CoreError`` catches every failure;
  catch ``CoreUnreachable`` first to tell "retry later" from "the request is wrong".
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import structlog
from pydantic import AfterValidator, BaseModel, TypeAdapter, ValidationError
from yarl import URL

from resotolib.auth import TokenSource
from resotolib.graph import (
    AggregateRequest,
    AggregateRow,
    CleanRequest,
    Edge,
    MergeResult,
    Node,
    NodePatch,
    SearchRequest,
)
from resotolib.protocol import Event, Message, ProtocolError, Subscriber, Subscription, parse_message, serialize

log = structlog.get_logger(__name__)

TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
"""What aiohttp raises when the core cannot be reached or the connection breaks."""

JSON = "application/json"
NDJSON = "application/x-ndjson"
CHUNK_SIZE = 64 * 1024
MAX_LINE = 64 * 1024 * 1024
MAX_FRAME = 4 * 1024 * 1024
EVENTS_HEARTBEAT = 20.0
EVENTS_NONE = "-"
"""A ``show`` filter of the event stream that matches no message type (for a socket that only sends)."""
AUTH_REASONS = ("authorization required", "unauthorized")
"""How the core's close reason begins when it closes a websocket for want of a valid token."""
RUN_ANSWERS = (202, 409)
"""POST /workflows/{id}/run: 202 queued and 409 skipped are answers, not failures."""


def check_core_uri(value: str) -> str:
    """``value`` when it can name a core: an http or https URL with a host and, if any, a valid port."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        raise ValueError(f"use http://HOST:PORT or https://HOST:PORT, not {value!r}") from None
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError:
        raise ValueError(f"invalid port in {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"use http://HOST:PORT or https://HOST:PORT, not {value!r}")
    return value


CoreUri = Annotated[str, AfterValidator(check_core_uri)]
"""A settings field holding the core's base URL, checked when the settings are read."""


T = TypeVar("T")
_adapters: dict[Any, TypeAdapter[Any]] = {}
"""One TypeAdapter per answer type, built on first use."""


class _Marked(BaseModel):
    marked: int


class _Deleted(BaseModel):
    deleted_nodes: int


class CoreError(Exception):
    """The core answered with an error status; ``message`` is its ``{"error": ...}`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class CoreUnreachable(CoreError):
    """The core did not answer at all; ``status`` is 0 and ``url`` names the core."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, f"core at {url} is unreachable: {reason}")
        self.url = url

    def __str__(self) -> str:
        return self.message


def already_connected(error: CoreError) -> bool:
    """The core refused a subscriber id because its action channel is connected already (429).

    The core answers 429 to a flood of new tokens as well; that answer says so.
    """
    return error.status == 429 and "too many new tokens" not in error.message


def graph_missing(error: CoreError) -> bool:
    """The core has no graph of the name asked for (404), e.g. before the first collect merged one.

    Told apart from a 404 of a wrong URI (a proxy's, or an unknown route) by the core's message.
    """
    return error.status == 404 and error.message.startswith("no graph ")


class CoreClient:
    """REST and event-stream client of one core. Pass a session to share it; otherwise one is created."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        request_timeout: float = 300,
        psk: str | None = None,
        ca_cert: str | Path | None = None,
    ) -> None:
        self._base = URL(url)
        self._tokens = TokenSource(psk) if psk else None
        self._ssl = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
        self._session = session
        self._owns_session = session is None
        self._request_timeout = request_timeout
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=request_timeout, sock_read=request_timeout
        )

    @property
    def url(self) -> str:
        return str(self._base)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it; a session passed in stays open."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---- bus ----------------------------------------------------------------------------------------

    async def add_subscription(
        self,
        sid: str,
        message_type: str,
        timeout: int = 60,  # noqa: ASYNC109 - the subscription's answer time, not this call's
        wait_for_completion: bool = True,
    ) -> Subscriber:
        """Add or update one subscription; ``timeout`` is how many seconds the core waits for an answer."""
        params = {"timeout": str(timeout), "wait_for_completion": "true" if wait_for_completion else "false"}
        async with self._request("POST", ("subscriber", sid, message_type), params=params) as response:
            return await _read(response, Subscriber)

    async def remove_subscription(self, sid: str, message_type: str) -> Subscriber:
        async with self._request("DELETE", ("subscriber", sid, message_type)) as response:
            return await _read(response, Subscriber)

    async def set_subscriptions(
        self, sid: str, subscriptions: Sequence[Subscription], *, unless_connected: bool = False
    ) -> Subscriber:
        """Make ``subscriptions`` the subscriber's whole set, in one request: every other one is removed.

        The core stops waiting for this subscriber on the message types removed. Nothing changes when the
        core refuses the list (CoreError 400: a bad name or timeout, too many subscriptions), nor, with
        ``unless_connected``, while the subscriber's action channel is connected (CoreError 429, see
        ``already_connected``): another process with the same id runs.
        """
        body = _adapter(list[Subscription]).dump_json(list(subscriptions))
        params = {"unless_connected": "true"} if unless_connected else None
        path = ("subscriber", sid)
        async with self._request("PUT", path, params=params, data=body, content_type=JSON) as response:
            return await _read(response, Subscriber)

    async def subscriber(self, sid: str) -> Subscriber | None:
        """The subscriber with this id, or None when the core does not know it."""
        async with self._request("GET", ("subscriber", sid), accept=(404,)) as response:
            return None if response.status == 404 else await _read(response, Subscriber)

    async def subscribers(self) -> list[Subscriber]:
        async with self._request("GET", ("subscribers",)) as response:
            return await _read(response, list[Subscriber])

    async def delete_subscriber(self, sid: str) -> None:
        """Remove the subscriber with all its subscriptions (nothing happens if the core does not know it)."""
        async with self._request("DELETE", ("subscriber", sid)):
            pass

    # ---- workflows and tasks ------------------------------------------------------------------------

    async def workflows(self) -> list[dict[str, Any]]:
        async with self._request("GET", ("workflows",)) as response:
            return await _read(response, list[dict[str, Any]])

    async def run_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Start a run; the answer's ``status`` is ``started`` (with ``task_id``), ``queued`` or ``skipped``."""
        async with self._request("POST", ("workflows", workflow_id, "run"), accept=RUN_ANSWERS) as response:
            return await _read(response, dict[str, Any])

    async def runs(self, workflow_id: str, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """One page of a workflow's history: ``runs``, ``total``, ``limit``, ``offset``, ``next_offset``."""
        params = {"limit": str(limit), "offset": str(offset)}
        async with self._request("GET", ("workflows", workflow_id, "runs"), params=params) as response:
            return await _read(response, dict[str, Any])

    async def tasks(self) -> list[dict[str, Any]]:
        """The running tasks."""
        async with self._request("GET", ("tasks",)) as response:
            return await _read(response, list[dict[str, Any]])

    async def task(self, task_id: str) -> dict[str, Any]:
        async with self._request("GET", ("tasks", task_id)) as response:
            return await _read(response, dict[str, Any])

    async def cancel_task(self, task_id: str) -> dict[str, Any]:
        async with self._request("DELETE", ("tasks", task_id)) as response:
            return await _read(response, dict[str, Any])

    async def ping(self) -> None:
        """Raise CoreUnreachable (or CoreError) unless the core answers its liveness check."""
        async with self._request("GET", ("system", "ping")):
            pass

    # ---- events -------------------------------------------------------------------------------------

    async def send_event(self, message_type: str, data: Mapping[str, Any] | None = None) -> None:
        """Put one event on the core's bus (it may trigger workflows).

        The socket is closed with the closing handshake, so the core has read the event when this
        returns; a core that refused it (no valid token for a core with ``--psk``) raises CoreError.
        """
        frame = serialize(Event(message_type=message_type, data=dict(data or {})))
        async with self.websocket("events", params={"show": EVENTS_NONE}) as ws:
            try:
                await ws.send_str(frame)
                await ws.close()
            except TRANSPORT_ERRORS as e:
                raise CoreUnreachable(self.url, _reason(e)) from e
        if refused := access_refused(ws.close_code, None):
            raise refused
        if ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER:
            raise CoreError(429, "the core is busy checking new tokens; try again later")

    def events(self, show: Sequence[str] | None = None) -> EventStream:
        """Every message on the bus (or those of the types in ``show``) until the core closes the stream.

        ``async for message in client.events()``; afterwards the stream's ``close_code`` and ``close_reason``
        tell why it ended. A core with ``--psk`` that closes the stream for want of a valid token raises
        CoreError 401, as a request would.
        """
        return EventStream(self, show)

    @asynccontextmanager
    async def websocket(
        self,
        *path: str,
        params: Mapping[str, str] | None = None,
        heartbeat: float | None = None,
        max_msg_size: int = MAX_FRAME,
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """Open a websocket of the core with this client's headers; closed when the block ends.

        A refused handshake raises CoreError with the core's status (404, 429, ...); no connection
        raises CoreUnreachable. Errors while the socket is in use are the caller's to handle.
        """
        url = self._url(*path)
        try:
            async with asyncio.timeout(self._request_timeout):
                ws = await self._http().ws_connect(
                    url,
                    params=params,
                    headers=self._headers(),
                    heartbeat=heartbeat,
                    max_msg_size=max_msg_size,
                    ssl=self._ssl if self._ssl is not None else True,
                )
        except aiohttp.WSServerHandshakeError as e:
            raise CoreError(e.status, f"websocket {url.path} refused: {e.message}") from e
        except TRANSPORT_ERRORS as e:
            raise CoreUnreachable(self.url, _reason(e)) from e
        try:
            yield ws
        finally:
            await ws.close()

    # ---- graph --------------------------------------------------------------------------------------

    async def graphs(self) -> list[str]:
        async with self._request("GET", ("graph",)) as response:
            return await _read(response, list[str])

    async def delete_graph(self, graph: str) -> int:
        """Delete a graph with all its nodes and edges; returns how many nodes were deleted."""
        async with self._request("DELETE", ("graph", graph)) as response:
            return (await _read(response, _Deleted)).deleted_nodes

    async def merge(self, graph: str, lines: Iterable[str] | AsyncIterable[str]) -> MergeResult:
        """Send a collect: NDJSON lines, nodes then edges, streamed without building the body in memory."""
        body = _ndjson_body(lines)
        async with self._request("POST", ("graph", graph, "merge"), data=body, content_type=NDJSON, stream=True) as r:
            return await _read(r, MergeResult)

    async def search(self, graph: str, request: SearchRequest) -> AsyncGenerator[Node | Edge, None]:
        """The matching nodes, then (with ``request.with_edges``) the edges among them, parsed as they arrive."""
        body = request.model_dump_json(by_alias=True)
        path = ("graph", graph, "search")
        async with self._request("POST", path, data=body, content_type="application/json", stream=True) as response:
            number = 0
            async for line in _lines(response):
                number += 1
                yield _graph_item(line, number, response.status)

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]:
        body = request.model_dump_json(by_alias=True)
        path = ("graph", graph, "aggregate")
        async with self._request("POST", path, data=body, content_type="application/json") as response:
            return await _read(response, list[AggregateRow])

    async def clean(self, graph: str, request: CleanRequest) -> int:
        """Mark the matching nodes for cleanup; returns how many were marked."""
        body = request.model_dump_json(by_alias=True)
        async with self._request("POST", ("graph", graph, "clean"), data=body, content_type="application/json") as r:
            return (await _read(r, _Marked)).marked

    async def patch_nodes(self, graph: str, patches: Iterable[NodePatch]) -> dict[str, Any]:
        """Change nodes (cleaned, clean, tags, event log); answers ``{"updated": n, "missing": [ids]}``."""
        body = _ndjson_body(patch.model_dump_json() for patch in patches)
        path = ("graph", graph, "nodes")
        async with self._request("PATCH", path, data=body, content_type=NDJSON, stream=True) as response:
            return await _read(response, dict[str, Any])

    # ---- the one path of every request --------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        """Headers of every request and websocket handshake: the JWT when the core has a PSK."""
        return {"Authorization": self._tokens.authorization()} if self._tokens else {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _url(self, *path: str) -> URL:
        return self._base.joinpath(*(quote(segment, safe="") for segment in path), encoded=True)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: Sequence[str],
        *,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        content_type: str | None = None,
        accept: Sequence[int] = (),
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; yield the response when its status is 2xx or in ``accept``, else raise CoreError."""
        headers = self._headers()
        if content_type:
            headers["Content-Type"] = content_type
        timeout = self._stream_timeout if stream else self._timeout
        url = self._url(*path)
        try:
            async with self._http().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=timeout,
                raise_for_status=False,
                ssl=self._ssl if self._ssl is not None else True,
            ) as response:
                if not (200 <= response.status < 300 or response.status in accept):
                    raise CoreError(response.status, await _error_text(response))
                yield response
        except TRANSPORT_ERRORS as e:
            raise CoreUnreachable(self.url, _reason(e)) from e


class EventStream:
    """The messages of the core's event stream, parsed as they arrive (see ``CoreClient.events``)."""

    def __init__(self, client: CoreClient, show: Sequence[str] | None) -> None:
        self.close_code: int | None = None
        """The code of the core's close frame once the stream has ended (1001: the core shut down)."""
        self.close_reason = ""
        self._messages = self._read(client, {"show": ",".join(show)} if show else None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        return await anext(self._messages)

    async def aclose(self) -> None:
        """Stop reading and close the socket."""
        await self._messages.aclose()

    async def _read(self, client: CoreClient, params: Mapping[str, str] | None) -> AsyncGenerator[Message, None]:
        async with client.websocket("events", params=params, heartbeat=EVENTS_HEARTBEAT) as ws:
            while True:
                frame = await ws.receive()
                if frame.type is aiohttp.WSMsgType.TEXT:
                    try:
                        message = parse_message(frame.data)
                    except ProtocolError as e:
                        log.warning("frame_invalid", socket="events", error=str(e))
                        continue
                    yield message
                elif frame.type is aiohttp.WSMsgType.ERROR:
                    raise CoreUnreachable(client.url, f"event stream failed: {ws.exception()!r}")
                elif frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
            self.close_code = ws.close_code
            if frame.type is aiohttp.WSMsgType.CLOSE and isinstance(frame.extra, str):
                self.close_reason = frame.extra
        if refused := access_refused(self.close_code, self.close_reason):
            raise refused


def access_refused(close_code: int | None, reason: str | None) -> CoreError | None:
    """The CoreError 401 a request would get, when a websocket was closed for want of a valid token.

    A core with ``--psk`` accepts a websocket without an Authorization header, waits for an
    authorization frame, and closes the socket with 1008 (policy violation) and the reason when none
    comes or the token is not valid. Without the reason (a socket closed by our closing handshake
    only keeps the code), 1008 on a socket that sent nothing invalid is taken as such a refusal.
    """
    if close_code != aiohttp.WSCloseCode.POLICY_VIOLATION:
        return None
    if reason is None:
        return CoreError(401, f"{AUTH_REASONS[0]}: the core closed the socket without taking the frame")
    return CoreError(401, reason) if reason.startswith(AUTH_REASONS) else None


# ---- bodies and answers -----------------------------------------------------------------------------


async def _ndjson_body(lines: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[bytes]:
    """NDJSON in chunks of about CHUNK_SIZE bytes: one line per item, each ending in a newline."""
    buffer = bytearray()
    async for line in _aiter(lines):
        buffer += line.encode()
        if not line.endswith("\n"):
            buffer += b"\n"
        if len(buffer) >= CHUNK_SIZE:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


async def _aiter(lines: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The non-empty lines of a streamed body, as they arrive; a line may be larger than any chunk."""
    buffer = bytearray()
    async for chunk in response.content.iter_any():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if line.strip():
                yield line
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            raise CoreError(response.status, f"answer has a line longer than {MAX_LINE} bytes")
    if buffer.strip():
        yield bytes(buffer)


def _graph_item(line: bytes, number: int, status: int) -> Node | Edge:
    """One line of a search answer: a node, an edge, or an error the core hit while streaming."""
    try:
        item = json.loads(line)
        if isinstance(item, dict) and "error" in item and "id" not in item and "from" not in item:
            raise CoreError(500, str(item["error"]))
        if isinstance(item, dict) and "from" in item:
            return Edge.model_validate(item)
        return Node.model_validate(item)
    except json.JSONDecodeError as e:
        raise CoreError(status, f"answer line {number} is not JSON: {e}") from None
    except ValidationError as e:
        raise CoreError(status, f"answer line {number} is neither a node nor an edge: {_first_error(e)}") from None


async def _read(response: aiohttp.ClientResponse, kind: type[T]) -> T:
    """The JSON answer as ``kind``; an answer of another shape is a CoreError, not a ValidationError."""
    body = await response.read()
    try:
        return _adapter(kind).validate_json(body)
    except ValidationError as e:
        raise CoreError(response.status, f"unexpected answer: {_first_error(e)}; body: {body[:200]!r}") from None


def _adapter(kind: type[T]) -> TypeAdapter[T]:
    adapter = _adapters.get(kind)
    if adapter is None:
        adapter = _adapters[kind] = TypeAdapter(kind)
    return adapter


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(p) for p in first["loc"])
    return f"{location}: {first['msg']}" if location else first["msg"]


async def _error_text(response: aiohttp.ClientResponse) -> str:
    text = await response.text(errors="replace")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip() or (response.reason or "no reason given")
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return text.strip()


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
