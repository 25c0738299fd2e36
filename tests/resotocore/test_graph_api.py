"""The graph endpoints: merge semantics, validation, search, aggregate, clean, patch."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from resotolib.graph import ROOT_ID
from resotoworker.collector import GraphBatch
from tests.support import CoreClientFactory, StartCore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def account(name: str = "acc1", *, instances: int = 3, extra: bool = True) -> GraphBatch:
    batch = GraphBatch("example", name)
    for i in range(instances):
        tags = {"expiration": "1h"} if i == 0 else {"owner": f"team-{i}"}
        iid = batch.resource(
            "example_instance", "eu-1", f"i-{i}", tags=tags, ctime=NOW - timedelta(days=1),
            instance_cores=2 * (i + 1), instance_type="small" if i % 2 else "large",
        )  # fmt: skip
        vid = batch.resource("example_volume", "eu-1", f"v-{i}", volume_size=10 * (i + 1))
        batch.edge(iid, vid, "delete")
    if extra:
        batch.resource("example_bucket", "us-1", "b-1", protected=True, tags={"resoto:expires": "2020-01-01T00:00:00"})
    return batch


async def merge(client: TestClient[Any, Any], lines: list[str], graph: str = "resoto") -> tuple[int, dict[str, Any]]:
    response = await client.post(f"/graph/{graph}/merge", data="\n".join(lines) + "\n")
    return response.status, await response.json()


async def search(client: TestClient[Any, Any], body: dict[str, Any], graph: str = "resoto") -> list[dict[str, Any]]:
    response = await client.post(f"/graph/{graph}/search", json=body)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def ids(client: TestClient[Any, Any], **filter_: Any) -> set[str]:
    return {n["reported"]["id"] for n in await search(client, {"filter": filter_})}


async def test_merge_creates_updates_deletes_and_keeps_core_state(core_client: CoreClientFactory) -> None:
    client = await core_client()
    status, result = await merge(client, account().ndjson())
    assert (status, result) == (200, {"created": 12, "updated": 0, "deleted": 0, "unchanged": 0})
    assert (await client.post("/graph/resoto/clean", json={"filter": {"kinds": ["example_volume"]}})).status == 200
    patch = json.dumps({"id": account().nodes[3].id, "cleaned": True, "event_log": [{"kind": "note"}]})
    assert (await client.patch("/graph/resoto/nodes", data=patch)).status == 200
    # next collect: one instance fewer (its volume too), the bucket gone, one instance changed
    batch = account(instances=2, extra=False)
    batch.nodes[3] = batch.nodes[3].model_copy(update={"reported": {**batch.nodes[3].reported, "name": "renamed"}})
    status, result = await merge(client, batch.ndjson())
    assert result == {"created": 0, "updated": 1, "deleted": 4, "unchanged": 7}  # i-2, v-2, bucket, region us-1
    assert await ids(client, kinds=["example_instance", "example_volume", "example_bucket"]) == {
        "i-0", "i-1", "v-0", "v-1"
    }  # fmt: skip
    first = (await search(client, {"filter": {"ids": [batch.nodes[3].id]}}))[0]
    assert first["reported"]["name"] == "renamed"
    assert first["metadata"]["cleaned"] is True and first["metadata"]["event_log"] == [{"kind": "note"}]
    volumes = await search(client, {"filter": {"kinds": ["example_volume"]}})
    assert all(v["desired"] == {"clean": True} for v in volumes)
    assert all(v["metadata"]["clean_reason"] == "marked for cleanup" for v in volumes)


async def test_merging_one_account_leaves_the_others_alone(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account("acc1").ndjson())
    await merge(client, account("acc2").ndjson())
    _, result = await merge(client, GraphBatch("example", "acc1").ndjson())
    assert result["deleted"] == 9
    assert await ids(client, account=["acc2"], kinds=["example_bucket"]) == {"b-1"}
    assert await ids(client, account="acc1") == {"acc1"}
    assert {n["id"] for n in await search(client, {"filter": {"kinds": ["graph_root", "cloud"]}})} >= {ROOT_ID}


async def test_nodes_carry_ancestors_expiry_and_the_documented_shape(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    (node,) = await search(client, {"filter": {"ids": [account().nodes[3].id]}})
    assert set(node) == {"id", "reported", "metadata", "desired"}
    assert node["metadata"]["ancestors"] == {"cloud": "example", "account": "acc1", "region": "eu-1"}
    assert node["metadata"]["expires"] == "2026-02-28T01:00:00Z"
    (bucket,) = await search(client, {"filter": {"kinds": ["example_bucket"]}})
    assert bucket["metadata"]["protected"] is True and bucket["metadata"]["expires"] == "2020-01-01T00:00:00Z"
    assert bucket["metadata"]["ancestors"]["region"] == "us-1"


BAD_BATCHES = [
    (["{nope"], 1, "not valid JSON"),
    (["[1]"], 1, "not a JSON object"),
    (['{"hello": 1}'], 1, "neither a node"),
    (['{"id": "", "reported": {"kind": "x"}}'], 1, "node id must be a non-empty string"),
    (['{"id": "a", "reported": {"name": "x"}}'], 1, "reported.kind must be a string"),
    (['{"id": "a", "reported": {"kind": "x"}, "metadata": 3}'], 1, "metadata must be an object"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"from": "a", "to": 3}'], 2, "edge from and to must be strings"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"from": "a", "to": "a", "edge_type": "x"}'], 2, "edge_type"),
    (['{"id": "a", "reported": {"kind": "x"}}', "", '{"from": "a", "to": "nowhere"}'], 3, "unknown node 'nowhere'"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"id": "a", "reported": {"kind": "y"}}'], 2, "duplicate node id 'a'"),
]


@pytest.mark.parametrize(("lines", "line", "reason"), BAD_BATCHES)
async def test_a_bad_batch_changes_nothing_and_names_the_line(
    core_client: CoreClientFactory, lines: list[str], line: int, reason: str
) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    before = await search(client, {})
    # the bad lines come after a complete, valid account batch that would delete half the graph
    status, body = await merge(client, [*account(instances=1).ndjson(), *lines])
    assert status == 400
    offset = len(account(instances=1).ndjson())
    assert body["error"].startswith(f"nothing merged: line {offset + line}: ")
    assert reason in body["error"]
    assert await search(client, {}) == before


async def test_invalid_utf8_is_refused(core_client: CoreClientFactory) -> None:
    client = await core_client()
    response = await client.post("/graph/resoto/merge", data=b'{"id": "a", "reported": {"kind": "\xff"}}\n')
    assert response.status == 400 and "line 1: not valid UTF-8" in (await response.json())["error"]


async def test_search_filters_paging_and_edges(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    cores = {"path": "reported.instance_cores", "op": ">=", "value": 4}
    assert await ids(client, kinds=["example_instance"], fields=[cores]) == {"i-1", "i-2"}
    assert await ids(client, tags={"owner": "team-2"}) == {"i-2"}
    assert await ids(client, tags={"owner": None}) == {"i-1", "i-2"}
    assert await ids(client, expired_before="2026-03-01T00:00:00Z") == {"i-0", "b-1"}
    assert await ids(client, expired_before="2026-03-01T00:00:00Z", protected=False) == {"i-0"}
    assert await ids(client, region="us-1", kinds=["example_bucket"]) == {"b-1"}
    assert await ids(client, fields=[{"path": "desired.other", "op": "exists"}]) == set()
    assert await ids(
        client, fields=[{"path": "desired.clean", "value": False}, {"path": "kind", "value": "region"}]
    ) == {
        "eu-1",
        "us-1",
    }
    assert await ids(client, fields=[{"path": "reported.instance_type", "op": "in", "value": ["small"]}]) == {"i-1"}
    not_volume = {"path": "kind", "op": "!=", "value": "example_volume"}
    in_eu = {"path": "region", "value": "eu-1"}
    assert await ids(client, fields=[not_volume, in_eu]) == {"i-0", "i-1", "i-2", "eu-1"}
    everything = await search(client, {})
    assert len(everything) == 12
    page = await search(client, {"limit": 5, "offset": 10})
    assert [n["id"] for n in page] == sorted(n["id"] for n in everything)[10:]
    found = await search(client, {"filter": {"kinds": ["example_instance", "example_volume"]}, "with_edges": "delete"})
    edges = [line for line in found if "from" in line]
    assert len(edges) == 3 and all(e["edge_type"] == "delete" for e in edges)
    assert found[-3:] == edges  # nodes first, then edges


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"nonsense": 1}},
        {"filter": {"fields": [{"path": "reported.x; DROP TABLE nodes", "value": 1}]}},
        {"filter": {"fields": [{"path": "secret.x", "value": 1}]}},
        {"limit": 0},
        {"filter": {"expired_before": "yesterday"}},
        {"filter": {"fields": [{"path": "reported.owner", "val": "nobody"}]}},  # a misspelt key
        {"filter": {"fields": [{"path": "kind", "operator": "!=", "value": "zzz"}]}},
        {"filter": {"fields": [{"path": "reported.owner"}]}},  # no value: "== null" must be written out
        {"filter": {"fields": [{"path": "reported.owner", "op": "exists", "value": False}]}},  # not "missing"
        ["a list"],  # not an object: a problem of the whole body
    ],
)
async def test_bad_search_requests_are_400(core_client: CoreClientFactory, body: Any) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    response = await client.post("/graph/resoto/search", json=body)
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error and not error.startswith(":"), error


async def test_aggregate(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account("acc1").ndjson())
    await merge(client, account("acc2", instances=1).ndjson())
    body = {
        "filter": {"kinds": ["example_instance"]},
        "group_by": ["account", "reported.instance_type"],
        "functions": [
            {"function": "count", "as": "count"},
            {"function": "sum", "path": "reported.instance_cores", "as": "cores"},
            {"function": "max", "path": "reported.instance_cores", "as": "largest"},
        ],
    }
    response = await client.post("/graph/resoto/aggregate", json=body)
    assert response.status == 200
    rows = [(r["group"]["account"], r["group"]["reported.instance_type"], r["values"]) for r in await response.json()]
    assert rows == [
        ("acc1", "large", {"count": 2, "cores": 8, "largest": 6}),
        ("acc1", "small", {"count": 1, "cores": 4, "largest": 4}),
        ("acc2", "large", {"count": 1, "cores": 2, "largest": 2}),
    ]
    response = await client.post("/graph/resoto/aggregate", json={"functions": [{"function": "count", "as": "n"}]})
    assert await response.json() == [{"group": {}, "values": {"n": 18}}]  # root and cloud are shared
    response = await client.post("/graph/resoto/aggregate", json={"functions": []})
    assert response.status == 400
    response = await client.post("/graph/resoto/aggregate", json={"functions": [{"function": "sum", "as": "s"}]})
    assert response.status == 400 and "sum needs a path" in (await response.json())["error"]
    twice: dict[str, Any] = {
        "functions": [{"function": "count", "as": "n"}, {"function": "max", "path": "reported.id", "as": "n"}]
    }
    response = await client.post("/graph/resoto/aggregate", json=twice)
    assert response.status == 400 and "repeated: n" in (await response.json())["error"]
    twice = {"group_by": ["account", "account"], "functions": [{"function": "count", "as": "n"}]}
    response = await client.post("/graph/resoto/aggregate", json=twice)
    assert response.status == 400 and "repeated: account" in (await response.json())["error"]


async def test_a_misspelt_filter_marks_nothing_and_null_and_exists_are_asked_for_explicitly(
    core_client: CoreClientFactory,
) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    misspelt = {"filter": {"fields": [{"path": "reported.owner", "val": "nobody"}]}, "reason": "r"}
    response = await client.post("/graph/resoto/clean", json=misspelt)
    assert response.status == 400 and "val" in (await response.json())["error"]
    assert await search(client, {"filter": {"clean": True}}) == []
    unset = await search(client, {"filter": {"fields": [{"path": "reported.owner", "value": None}]}})
    assert len(unset) == 12  # explicitly "== null": every node without an owner
    assert await search(client, {"filter": {"fields": [{"path": "reported.owner", "op": "exists"}]}}) == []


async def test_clean_and_patch(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    body = {"filter": {"expired_before": "2026-03-01T00:00:00Z", "protected": False}, "reason": "expired"}
    assert await (await client.post("/graph/resoto/clean", json=body)).json() == {"marked": 1}
    assert await (await client.post("/graph/resoto/clean", json=body)).json() == {"marked": 0}
    (marked,) = await search(client, {"filter": {"clean": True}})
    assert marked["reported"]["id"] == "i-0" and marked["metadata"]["clean_reason"] == "expired"
    patches = [
        {"id": marked["id"], "cleaned": True, "event_log": [{"at": "2026-03-01T00:00:00Z", "kind": "cleaned"}]},
        {"id": "unknown", "cleaned": True},
        {"id": account().nodes[4].id, "tags": {"owner": "me", "expiration": None}, "clean": True},
    ]
    response = await client.patch("/graph/resoto/nodes", data="\n".join(json.dumps(p) for p in patches))
    assert await response.json() == {"updated": 2, "missing": ["unknown"]}
    assert await ids(client, cleaned=True) == {"i-0"}
    (changed,) = await search(client, {"filter": {"ids": [account().nodes[4].id]}})
    assert changed["reported"]["tags"] == {"owner": "me"} and changed["desired"] == {"clean": True}
    response = await client.patch("/graph/resoto/nodes", data='{"id": "x", "cleaned": "maybe"}')
    assert response.status == 400 and "line 1" in (await response.json())["error"]


async def test_graph_names_list_and_delete(core_client: CoreClientFactory) -> None:
    client = await core_client()
    assert await (await client.get("/graph")).json() == []
    await merge(client, account().ndjson(), graph="g1")
    await merge(client, account().ndjson(), graph="g2")
    assert await (await client.get("/graph")).json() == ["g1", "g2"]
    assert (await client.delete("/graph/g1")).status == 200
    assert await (await client.get("/graph")).json() == ["g2"]
    assert (await client.delete("/graph/g1")).status == 404
    assert (await client.post("/graph/g1/search", json={})).status == 404
    assert (await client.post("/graph/bad name/merge", data="")).status == 400


async def test_a_dropped_connection_merges_nothing(core_client: CoreClientFactory) -> None:
    client = await core_client()
    await merge(client, account().ndjson())
    before = await search(client, {})
    _, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /graph/resoto/merge HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    body = ("\n".join(account(instances=1).ndjson()) + "\n").encode()
    writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)  # the core has started staging the batch
    writer.close()
    await writer.wait_closed()
    for _ in range(50):  # the merge is rolled back once the core notices the peer is gone
        status, _ = await merge(client, account("other", instances=0, extra=False).ndjson())
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200
    after = [n for n in await search(client, {}) if n["metadata"]["ancestors"].get("account") != "other"]
    assert after == before


async def test_a_client_that_stops_reading_a_search_is_no_error(core_process: StartCore) -> None:
    core = await core_process()  # a real server: aiohttp's test server cancels the handler instead
    body = io.BytesIO(("\n".join(account(instances=10_000).ndjson()) + "\n").encode())
    async with aiohttp.ClientSession() as session, session.post(f"{core.url}/graph/resoto/merge", data=body) as r:
        assert r.status == 200  # a search answer of ~10 MB
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer cannot hide in the socket buffers
    peer.connect((urlsplit(core.url).hostname, urlsplit(core.url).port))
    reader, writer = await asyncio.open_connection(sock=peer)
    writer.write(b"POST /graph/resoto/search HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(1000)  # like `resotoctl graph search | head -1`
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if any(e.get("event") == "search_abandoned" for e in core.log):
            break
        await asyncio.sleep(0.05)
    assert [e for e in core.log if e.get("level") in ("warning", "error", "critical") or e.get("event") == "raw"] == []
    assert any(e.get("event") == "search_abandoned" for e in core.log)
