"""The OpenAPI document: valid, complete, served at /api-doc, and true of a live core under fuzzing.

schemathesis generates requests for every documented operation (valid and invalid ones) and sends
them to a real ``resotocore`` process on loopback. Every answer must be below 500, have a documented
status code, content type and body, and every 4xx must be JSON ``{"error": "..."}``. The two
websocket routes are fuzzed as plain GETs (no upgrade: 400); the hand-written tests below add real
handshakes and hostile NDJSON that random generation is unlikely to produce.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from resotocore.app import create_app
from resotocore.config import CoreConfig
from resotocore.web.openapi import NDJSON, openapi_document
from tests.support import CoreClientFactory, core_of

MAX_EXAMPLES = 50  # per operation and phase; about 15 s for every operation on two cores


@schemathesis.serializer(NDJSON)
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """A generated array is sent one item per line; anything else (negative mode) as one line."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@schemathesis.deserializer(NDJSON)
def _ndjson_lines(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> list[Any]:
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


def json_error(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]) -> bool | None:
    """Every 4xx and 5xx answer is a JSON object with an "error" string."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} with {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), f"error body {body!r}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    json_error,
]
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"max-examples": MAX_EXAMPLES, "database": "none", "deterministic": True}}
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


# ---- the document -----------------------------------------------------------------------------------


@pytest.mark.parametrize("secured", [False, True])
def test_document_is_valid_openapi(secured: bool) -> None:
    validate(openapi_document(secured))


def test_every_route_is_documented(config: CoreConfig) -> None:
    app = create_app(config)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None  # aiohttp adds HEAD to every GET
    }
    documented = {(method, path) for path, item in openapi_document()["paths"].items() for method in item}
    assert routes - documented == set(), "routes without documentation"
    assert documented - routes == set(), "documented operations without a route"


def test_security_applies_only_with_psk() -> None:
    open_doc, secured = openapi_document(), openapi_document(secured=True)
    assert "security" not in open_doc and "psk" in open_doc["components"]["securitySchemes"]
    assert secured["security"] == [{"psk": []}]
    assert secured["paths"]["/system/ping"]["get"]["security"] == []
    assert secured["paths"]["/api-doc"]["get"]["security"] == []
    assert "security" not in secured["paths"]["/workflows"]["get"]  # the document's default: the token
    assert "401" in secured["paths"]["/workflows"]["get"]["responses"]
    assert "401" not in secured["paths"]["/metrics"]["get"]["responses"]


async def test_served_at_api_doc(core_client: CoreClientFactory) -> None:
    client = await core_client()
    for path in ("/api-doc", "/api-doc/openapi.json"):
        response = await client.get(path)
        assert response.status == 200 and response.content_type == "application/json"
        assert await response.json() == json.loads(json.dumps(openapi_document()))


async def test_served_without_token_with_psk(core_client: CoreClientFactory, config: CoreConfig) -> None:
    client = await core_client(config.model_copy(update={"psk": "secret"}))
    response = await client.get("/api-doc")
    assert response.status == 200
    assert (await response.json())["security"] == [{"psk": []}]
    assert (await client.get("/workflows")).status == 401


async def test_hand_built_answers_match_their_schemas(core_client: CoreClientFactory) -> None:
    """Runs, workflows and history are assembled by hand in the routes: their schemas must stay true."""
    client = await core_client()
    subscribed = await client.post("/subscriber/w1/collect", params={"timeout": "600"})
    assert subscribed.status == 200
    started = await client.post("/workflows/collect/run")
    task_id = (await started.json())["task_id"]
    queued = await client.post("/workflows/collect/run")
    assert queued.status == 202
    checks: list[tuple[str, str, int]] = [
        ("GET", "/workflows", 200),
        ("GET", "/tasks", 200),
        ("GET", f"/tasks/{task_id}", 200),
        ("DELETE", f"/tasks/{task_id}", 200),
        ("DELETE", f"/tasks/{task_id}", 409),
        ("GET", "/workflows/collect/runs?limit=1", 200),
    ]
    for method, path, status in checks:
        response = await client.request(method, path)
        assert response.status == status, await response.text()
        await _validate(response, path.split("?")[0].replace(task_id, "{id}").replace("/collect/", "/{id}/"))


async def _validate(response: aiohttp.ClientResponse, template: str) -> None:
    """Validate an aiohttp answer against the documented responses of its operation."""
    request = requests.Request(response.method, str(response.url)).prepare()
    headers = {name.lower(): response.headers.getall(name) for name in response.headers}
    answer = schemathesis.Response(response.status, headers, await response.read(), request, 0.0, verify=True)
    SCHEMA[template][response.method].validate_response(answer)


# ---- schemathesis against a live core ---------------------------------------------------------------


@dataclass
class LiveCore:
    """A `resotocore` process on a free loopback port; its log lines are collected by a thread."""

    proc: subprocess.Popen[str]
    url: str = ""
    log: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def problems(self) -> list[str]:
        """Log lines of errors: unexpected exceptions, failed requests, anything logged at error level."""
        return [line for line in self.log if '"level": "error"' in line or line.startswith(("ERROR", "CRITICAL"))]


@pytest.fixture(scope="module")
def live_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCore]:
    data_dir = tmp_path_factory.mktemp("fuzzed-core")
    proc = subprocess.Popen(
        [sys.executable, "-m", "resotocore", "--port", "0", "--data-dir", str(data_dir), "--log-format", "json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    core = LiveCore(proc)
    assert proc.stderr is not None
    for line in proc.stderr:
        core.log.append(line)
        if '"event": "listening"' in line:
            core.url = json.loads(line)["url"]
            break
    assert core.url, f"resotocore did not start: {core.log}"
    drain = threading.Thread(target=core.log.extend, args=(proc.stderr,), daemon=True)
    drain.start()
    yield core
    core.session.close()
    proc.terminate()
    proc.wait(timeout=10)
    drain.join(timeout=10)
    proc.stderr.close()
    assert core.problems() == []


def test_live_core_serves_the_fuzzed_document(live_core: LiveCore) -> None:
    assert live_core.session.get(f"{live_core.url}/api-doc").json() == SCHEMA.raw_schema


@SCHEMA.parametrize()
def test_fuzz_live_core(case: schemathesis.Case[Any], live_core: LiveCore) -> None:
    case.call_and_validate(base_url=live_core.url, session=live_core.session, checks=CHECKS)


# ---- what random generation rarely sends ------------------------------------------------------------


def _node(node_id: str = "n1", **reported: Any) -> dict[str, Any]:
    return {"id": node_id, "reported": {"kind": "instance", "id": "i-1", "name": "one", **reported}}


def _lines(*items: Any) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"\xff\xfe not utf-8\n", 400, id="invalid-utf8"),
        pytest.param(b"\x00" * 100, 400, id="nul-bytes"),
        pytest.param(b"[" * 5000 + b"]" * 5000 + b"\n", 400, id="deep-nesting"),
        pytest.param(_lines(_node()) + b"{not json\n", 400, id="bad-second-line"),
        pytest.param(b"[1, 2]\n", 400, id="array-line"),
        pytest.param(_lines(_node(kind=7)), 400, id="kind-number"),
        pytest.param(_lines({"from": "a", "to": "b", "edge_type": "owns"}), 400, id="bad-edge-type"),
        pytest.param(_lines({"from": "ghost", "to": "n1"}), 400, id="dangling-edge"),
        pytest.param(_lines(_node(tags={"resoto:expires": "not a time"})), 200, id="expiry-not-a-time"),
        pytest.param(_lines(_node(size=1 << 70, tags={"expiration": "1e9y"})), 200, id="huge-values"),
        pytest.param(
            _lines(_node(tags={"resoto:expires": "9999-12-31T23:59:59-23:00"})),
            200,
            id="expiry-beyond-year-9999-in-utc",
        ),
        pytest.param(
            _lines(_node(ctime="0001-01-01T00:00:00+05:00", tags={"expiration": "1d"})),
            200,
            id="ctime-before-year-1-in-utc",
        ),
    ],
)
async def test_hostile_merge(core_client: CoreClientFactory, body: bytes, status: int) -> None:
    """A bad line is a JSON 400 that merges nothing; odd values that are no error merge (without expiry)."""
    client = await core_client()
    response = await client.post("/graph/g/merge", data=body, headers={"Content-Type": NDJSON})
    assert response.status == status, await response.text()
    if status == 400:
        assert isinstance((await response.json())["error"], str)
        assert await (await client.get("/graph")).json() == []


BIG = 1 << 70
AGGREGATE_COUNT = {"functions": [{"function": "count", "as": "n"}]}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/graph/g/search", b"[" * 5000),
        ("POST", "/graph/g/search", {"limit": BIG}),
        ("POST", "/graph/g/search", {"offset": BIG}),
        ("POST", "/graph/g/search", {"filter": {"fields": [{"path": "reported.size", "op": "==", "value": BIG}]}}),
        ("POST", "/graph/g/search", {"filter": {"fields": [{"path": "kind", "op": "in", "value": [1, -BIG]}]}}),
        ("POST", "/graph/g/search", {"filter": {"expired_before": "9999-12-31T23:59:59-23:59"}}),
        ("POST", "/graph/g/search", {"filter": {"expired_before": "0001-01-01T00:00:00+01:00"}}),
        ("POST", "/graph/g/search", {"filter": {"tags": {"a\u0000b": None}}}),
        ("POST", "/graph/g/search", b'{"filter": {"kinds": ["\\ud800"]}}'),
        ("POST", "/graph/g/aggregate", {**AGGREGATE_COUNT, "filter": {"fields": [{"path": "id", "value": BIG}]}}),
        ("POST", "/graph/g/aggregate", {**AGGREGATE_COUNT, "group_by": ["reported.x"] * 3000}),
        ("POST", "/graph/g/aggregate", {"functions": [{"function": "sum", "path": "reported.x", "as": "1x"}]}),
        ("POST", "/graph/g/clean", {"filter": {"tags": {"a\u0000": "b"}}}),
        ("POST", "/graph/g/clean", {"filter": {"expired_before": "0001-01-01T00:00:00"}}),
        ("PATCH", "/graph/g/nodes", b'{"id": "n1"}\n\xff\n'),
        ("PATCH", "/graph/g/nodes", b'{"id": "n1", "event_log": "text"}\n'),
        ("PUT", "/subscriber/w", b'[{"message_type": "collect", "timeout": "soon"}]'),
        ("PUT", "/subscriber/w", [{"message_type": "collect", "timeout": BIG}]),
        ("POST", "/subscriber/w/collect?timeout=1e3", b""),
        ("GET", "/workflows/collect/runs?offset=-1", b""),
    ],
)
async def test_hostile_queries_are_json_400(
    core_client: CoreClientFactory, method: str, path: str, body: bytes | Any
) -> None:
    client = await core_client()
    assert (await client.post("/graph/g/merge", data=_lines(_node(size=3)))).status == 200
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = await client.request(method, path, data=data)
    assert response.status == 400, await response.text()
    assert isinstance((await response.json())["error"], str)


async def test_aggregate_answers_strict_json(core_client: CoreClientFactory) -> None:
    """A number too large for a float sums to infinity, which JSON cannot say: it is answered as null."""
    client = await core_client()
    merged = await client.post("/graph/g/merge", data=b'{"id": "n", "reported": {"kind": "k", "x": 1e400}}')
    assert merged.status == 200
    query = {"functions": [{"function": "sum", "path": "reported.x", "as": "s"}]}
    response = await client.post("/graph/g/aggregate", json=query)
    assert response.status == 200

    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    assert json.loads(await response.read(), parse_constant=no_constant) == [{"group": {}, "values": {"s": None}}]


async def test_aggregate_sum_beyond_64_bits(core_client: CoreClientFactory) -> None:
    client = await core_client()
    body = _lines(_node("a", size=(1 << 63) - 1), _node("b", size=1))
    assert (await client.post("/graph/g/merge", data=body)).status == 200
    query = {"functions": [{"function": "sum", "path": "reported.size", "as": "s"}]}
    response = await client.post("/graph/g/aggregate", json=query)
    assert response.status == 200, await response.text()


async def test_search_streams_documented_lines(core_client: CoreClientFactory) -> None:
    client = await core_client()
    body = _lines(_node("n1"), _node("n2"), {"from": "n1", "to": "n2"})
    assert (await client.post("/graph/g/merge", data=body)).status == 200
    response = await client.post("/graph/g/search", json={"with_edges": "default"})
    assert response.status == 200 and response.content_type == NDJSON
    await _validate(response, "/graph/{graph}/search")


async def test_search_failing_mid_answer_ends_with_an_error_line(
    core_client: CoreClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status line has gone out: an unexpected failure must still end the answer, never leave it hanging."""
    client = await core_client()
    assert (await client.post("/graph/g/merge", data=_lines(_node()))).status == 200

    async def failing(graph: str, request: Any) -> AsyncIterator[list[str]]:
        yield [json.dumps(_node())]
        raise ValueError("unexpected")

    monkeypatch.setattr(core_of(client).graph, "search", failing)
    response = await client.post("/graph/g/search", json={})
    assert response.status == 200
    lines = [json.loads(line) for line in (await response.read()).splitlines()]
    assert lines == [_node(), {"error": "internal error; see the core's log"}]


async def test_every_protected_operation_wants_a_token(core_client: CoreClientFactory, config: CoreConfig) -> None:
    """With --psk: 401 with a JSON error everywhere but the open paths, even for requests that are wrong."""
    client = await core_client(config.model_copy(update={"psk": "secret"}))
    for path, item in openapi_document(secured=True)["paths"].items():
        for method, operation in item.items():
            response = await client.request(method, path.replace("{", "x").replace("}", ""), data=b"\xff")
            if operation.get("security") == []:
                assert response.status == 200, (method, path)
            else:
                assert response.status == 401, (method, path)
                assert (await response.json())["error"].startswith("unauthorized"), (method, path)


async def test_websocket_handshakes(core_client: CoreClientFactory) -> None:
    """The documented 101, and refused handshakes answered with a JSON error."""
    client: TestClient[Any, Any] = await core_client()
    async with client.ws_connect("/events?show=collect") as ws:
        assert not ws.closed
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    bad_key = {**upgrade, "Sec-WebSocket-Key": "not base64!"}
    for path, headers, status in [
        ("/subscriber/nobody/handle", upgrade, 404),
        ("/events", bad_key, 400),
        ("/events", {**upgrade, "Sec-WebSocket-Version": "99"}, 400),
        ("/events", {}, 400),
    ]:
        response = await client.get(path, headers=headers)
        assert response.status == status, (path, headers)
        assert isinstance((await response.json())["error"], str)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/subscriber/nobody/handle")
    assert refused.value.status == 404
