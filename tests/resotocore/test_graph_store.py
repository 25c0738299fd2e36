"""The graph storage contract: SQLite always, ArangoDB when RESOTOCORE_TEST_ARANGO_URL names a server.

Also, without any server: the Python merge planner that the ArangoDB backend runs (graph_lines,
graph_plan, graph_docs) is held against the SQLite backend on the same batches, line for line.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from resotocore.db.graph_docs import STATE_DEFAULTS, Record, node_line
from resotocore.db.graph_lines import UNPAIRED_SURROGATE, numbered_lines, parse_line
from resotocore.db.graph_plan import Staging, Stored
from resotocore.db.graph_rows import BatchRows
from resotocore.db.graph_sqlite import SqliteGraphStore
from resotocore.db.graph_store import GraphStore, MergeError
from resotocore.db.graph_walk import Ancestry
from resotolib.graph import AggregateRequest, CleanRequest, Filter, NodePatch, SearchRequest
from resotoworker.collector import GraphBatch
from tests.support import arango_test_database, needs_arango

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("arangodb", marks=needs_arango)])
async def graphs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GraphStore]:
    if request.param == "sqlite":
        store = SqliteGraphStore(tmp_path / "graph.db")
        yield store
        await store.close()
        return
    from resotocore.db.graph_arango import ArangoGraphStore

    with arango_test_database() as conn:
        arango = await ArangoGraphStore.open(conn)
        yield arango
        await arango.close()


def account(name: str = "acc1", *, instances: int = 3, extra: bool = True) -> GraphBatch:
    batch = GraphBatch("example", name)
    for i in range(instances):
        tags = {"expiration": "1h"} if i == 0 else {"owner": f"team-{i}"}
        iid = batch.resource(
            "example_instance", "eu-1", f"i-{i}", tags=tags, ctime=NOW - timedelta(days=1),
            instance_cores=2 * (i + 1), instance_type="small" if i % 2 else "large", spot=i == 1,
        )  # fmt: skip
        vid = batch.resource("example_volume", "eu-1", f"v-{i}", volume_size=10 * (i + 1))
        batch.edge(iid, vid, "delete")
    if extra:
        batch.resource("example_bucket", "us-1", "b-1", protected=True, tags={"resoto:expires": "2020-01-01T00:00:00"})
    return batch


async def stream(lines: list[str]) -> AsyncIterator[bytes]:
    data = ("\n".join(lines) + "\n").encode()
    for start in range(0, len(data), 100):  # lines split across chunks
        yield data[start : start + 100]


async def merge(graphs: GraphStore, lines: list[str], graph: str = "resoto") -> dict[str, int]:
    return (await graphs.merge(graph, stream(lines))).model_dump()


async def search(graphs: GraphStore, graph: str = "resoto", **request: Any) -> list[dict[str, Any]]:
    return [json.loads(line) async for chunk in graphs.search(graph, SearchRequest(**request)) for line in chunk]


async def ids(graphs: GraphStore, **filter_: Any) -> set[str]:
    return {n["reported"]["id"] for n in await search(graphs, filter=Filter(**filter_))}


async def test_merge_counts_replaces_subtrees_and_keeps_core_state(graphs: GraphStore) -> None:
    assert await merge(graphs, account().ndjson()) == {"created": 12, "updated": 0, "deleted": 0, "unchanged": 0}
    assert await merge(graphs, account().ndjson()) == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 12}
    assert await graphs.clean("resoto", CleanRequest(filter=Filter(kinds=["example_volume"]))) == 3
    patch = NodePatch(id=account().nodes[3].id, cleaned=True, event_log=[{"kind": "note"}])
    assert await graphs.patch("resoto", [patch]) == (1, [])
    batch = account(instances=2, extra=False)
    batch.nodes[3] = batch.nodes[3].model_copy(update={"reported": {**batch.nodes[3].reported, "name": "renamed"}})
    assert await merge(graphs, batch.ndjson()) == {"created": 0, "updated": 1, "deleted": 4, "unchanged": 7}
    assert await ids(graphs, kinds=["example_instance", "example_volume", "example_bucket"]) == {
        "i-0", "i-1", "v-0", "v-1"
    }  # fmt: skip
    (first,) = await search(graphs, filter=Filter(ids=[batch.nodes[3].id]))
    assert first["reported"]["name"] == "renamed"
    assert first["metadata"]["cleaned"] is True and first["metadata"]["event_log"] == [{"kind": "note"}]
    volumes = await search(graphs, filter=Filter(kinds=["example_volume"]))
    assert [v["desired"] for v in volumes] == [{"clean": True}] * 2
    await merge(graphs, account("acc2").ndjson())
    assert (await merge(graphs, GraphBatch("example", "acc1").ndjson()))["deleted"] == 5
    assert await ids(graphs, account=["acc1"]) == {"acc1"}
    assert await ids(graphs, account=["acc2"], kinds=["example_bucket"]) == {"b-1"}


async def test_node_shape(graphs: GraphStore) -> None:
    await merge(graphs, account().ndjson())
    (node,) = await search(graphs, filter=Filter(ids=[account().nodes[3].id]))
    assert set(node) == {"id", "reported", "metadata", "desired"}
    assert node["metadata"]["ancestors"] == {"cloud": "example", "account": "acc1", "region": "eu-1"}
    assert node["metadata"]["expires"] == "2026-02-28T01:00:00Z"
    assert node["metadata"]["protected"] is False and node["desired"] == {}
    (root,) = await search(graphs, filter=Filter(kinds=["graph_root"]))
    assert root["metadata"]["ancestors"] == {} and "expires" not in root["metadata"]


BAD_BATCHES = [
    (["{nope"], 1, "not valid JSON"),
    (["[1]"], 1, "not a JSON object"),
    (['{"hello": 1}'], 1, "neither a node (id, reported) nor an edge (from, to)"),
    (['{"id": "", "reported": {"kind": "x"}}'], 1, "node id must be a non-empty string"),
    (['{"id": "a", "reported": {"name": "x"}}'], 1, "reported.kind must be a string"),
    (['{"id": "a", "reported": {"kind": "x"}, "metadata": 3}'], 1, "metadata must be an object"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"from": "a", "to": 3}'], 2, "edge from and to must be strings"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"from": "a", "to": "a", "edge_type": "x"}'], 2,
     "edge_type must be default or delete"),
    (['{"id": "a", "reported": {"kind": "x"}}', "", '{"from": "a", "to": "nowhere"}'], 3,
     "edge refers to unknown node 'nowhere'"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"id": "a", "reported": {"kind": "y"}}'], 2, "duplicate node id 'a'"),
    (['{"id": "a", "reported": {"kind": "x"}}', '{"id": "a", "reported": {"kind": "y"}}', "{"], 3, "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "line", "reason"), BAD_BATCHES)
async def test_a_bad_batch_changes_nothing_and_names_the_line(
    graphs: GraphStore, lines: list[str], line: int, reason: str
) -> None:
    await merge(graphs, account().ndjson())
    before = await search(graphs)
    good = account(instances=1).ndjson()
    with pytest.raises(MergeError) as raised:
        await merge(graphs, [*good, *lines])
    assert str(raised.value) == f"line {len(good) + line}: {reason}"
    assert await search(graphs) == before


async def test_lines_are_numbered_the_same_however_the_stream_is_cut() -> None:
    data = '{"a": 1}\r\n\n  \n{"b": "\u00e9"}\n\u00a0\n\t{"c": 2} \n{"d": 3}'.encode()
    expected = [(1, '{"a": 1}'), (4, '{"b": "\u00e9"}'), (5, ""), (6, '{"c": 2}'), (7, '{"d": 3}')]

    async def cut(size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    for size in (1, 2, 3, 7, len(data)):
        assert [line async for batch in numbered_lines(cut(size), batch_size=2) for line in batch] == expected
    data = b'{}\n{}\n{"a": "\xff"}\n{}\n'
    with pytest.raises(MergeError, match=r"^line 3: not valid UTF-8$"):
        [line async for batch in numbered_lines(cut(5)) for line in batch]


async def test_batches_of_large_lines_end_by_size() -> None:
    line = b'{"x": "' + b"y" * 1000 + b'"}\n'

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield line * 3

    batches = [batch async for batch in numbered_lines(chunks(), batch_size=1000, batch_bytes=5000)]
    assert [len(batch) for batch in batches] == [6, 6, 6, 6, 6]
    assert [n for batch in batches for n, _ in batch] == list(range(1, 31))


async def test_invalid_utf8_is_refused(graphs: GraphStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"id": "a", "reported": {"kind": "\xff"}}\n'

    with pytest.raises(MergeError, match=r"^line 1: not valid UTF-8$"):
        await graphs.merge("resoto", chunks())
    assert not await graphs.exists("resoto")


async def test_search_filters_paging_and_edges(graphs: GraphStore) -> None:
    await merge(graphs, account().ndjson())
    assert await ids(graphs, kinds=["example_instance"], fields=[{"path": "reported.instance_cores", "op": ">=",
                                                                   "value": 4}]) == {"i-1", "i-2"}  # fmt: skip
    assert await ids(graphs, tags={"owner": "team-2"}) == {"i-2"}
    assert await ids(graphs, tags={"owner": None}) == {"i-1", "i-2"}
    assert await ids(graphs, expired_before=NOW) == {"i-0", "b-1"}
    assert await ids(graphs, expired_before=NOW, protected=False) == {"i-0"}
    assert await ids(graphs, fields=[{"path": "reported.instance_type", "op": "in", "value": ["small"]}]) == {"i-1"}
    assert await ids(graphs, fields=[{"path": "reported.spot", "value": True}]) == {"i-1"}  # JSON true is 1
    assert await ids(graphs, fields=[{"path": "reported.spot", "value": 1}]) == {"i-1"}
    assert await ids(graphs, fields=[{"path": "reported.instance_cores", "op": "<", "value": None}]) == set()
    assert await ids(graphs, kinds=["example_volume"], fields=[{"path": "reported.nothing", "op": "not_in",
                                                                 "value": ["x"]}]) == set()  # fmt: skip
    assert await ids(graphs, fields=[{"path": "metadata.protected", "value": "1"}]) == {"b-1"}  # numeric text
    not_volume = {"path": "kind", "op": "!=", "value": "example_volume"}
    assert await ids(graphs, fields=[not_volume, {"path": "region", "value": "eu-1"}]) == {"i-0", "i-1", "i-2", "eu-1"}
    everything = await search(graphs)
    assert len(everything) == 12 and [n["id"] for n in everything] == sorted(n["id"] for n in everything)
    assert [n["id"] for n in await search(graphs, limit=5, offset=10)] == [n["id"] for n in everything][10:]
    assert [n["id"] for n in await search(graphs, offset=3)] == [n["id"] for n in everything][3:]
    found = await search(graphs, filter=Filter(kinds=["example_instance", "example_volume"]), with_edges="delete")
    edges = [line for line in found if "from" in line]
    assert len(edges) == 3 and found[-3:] == edges
    assert edges == sorted(edges, key=lambda e: (e["from"], e["to"]))
    assert all(set(e) == {"from", "to", "edge_type"} and e["edge_type"] == "delete" for e in edges)


async def test_aggregate(graphs: GraphStore) -> None:
    await merge(graphs, account("acc1").ndjson())
    await merge(graphs, account("acc2", instances=1).ndjson())
    request = AggregateRequest.model_validate({
        "filter": {"kinds": ["example_instance"]},
        "group_by": ["account", "reported.instance_type"],
        "functions": [
            {"function": "count", "as": "count"}, {"function": "sum", "path": "reported.instance_cores", "as": "cores"},
            {"function": "max", "path": "reported.instance_cores", "as": "largest"},
            {"function": "sum", "path": "reported.nothing", "as": "none"},
            {"function": "count", "path": "reported.spot", "as": "spot"},
        ],
    })  # fmt: skip
    rows = [(r.group["account"], r.group["reported.instance_type"], r.values) for r in await graphs.aggregate(
        "resoto", request)]  # fmt: skip
    assert rows == [
        ("acc1", "large", {"count": 2, "cores": 8, "largest": 6, "none": None, "spot": 2}),
        ("acc1", "small", {"count": 1, "cores": 4, "largest": 4, "none": None, "spot": 1}),
        ("acc2", "large", {"count": 1, "cores": 2, "largest": 2, "none": None, "spot": 1}),
    ]
    everything = AggregateRequest.model_validate({"functions": [{"function": "count", "as": "n"}]})
    assert [r.model_dump() for r in await graphs.aggregate("resoto", everything)] == [
        {"group": {}, "values": {"n": 18}}
    ]
    nothing = AggregateRequest.model_validate({"filter": {"kinds": []}, "functions": [
        {"function": "count", "as": "n"}, {"function": "min", "path": "reported.x", "as": "m"}]})  # fmt: skip
    assert [r.values for r in await graphs.aggregate("resoto", nothing)] == [{"n": 0, "m": None}]


async def test_clean_patch_list_and_delete(graphs: GraphStore) -> None:
    await merge(graphs, account().ndjson())
    request = CleanRequest(filter=Filter(expired_before=NOW, protected=False), reason="expired")
    assert (await graphs.clean("resoto", request), await graphs.clean("resoto", request)) == (1, 0)
    (marked,) = await search(graphs, filter=Filter(clean=True))
    assert marked["reported"]["id"] == "i-0" and marked["metadata"]["clean_reason"] == "expired"
    patches = [
        NodePatch(id=marked["id"], cleaned=True, event_log=[{"kind": "cleaned"}]),
        NodePatch(id="unknown", cleaned=True),
        NodePatch(id=account().nodes[4].id, tags={"owner": "me", "expiration": None}, clean=True),
        NodePatch(id=marked["id"], event_log=[{"kind": "again"}]),
    ]
    assert await graphs.patch("resoto", patches) == (3, ["unknown"])
    (cleaned,) = await search(graphs, filter=Filter(cleaned=True))
    assert cleaned["metadata"]["event_log"] == [{"kind": "cleaned"}, {"kind": "again"}]
    (changed,) = await search(graphs, filter=Filter(ids=[account().nodes[4].id]))
    assert changed["reported"]["tags"] == {"owner": "me"} and changed["desired"] == {"clean": True}
    assert (await merge(graphs, account().ndjson()))["updated"] == 1  # the patched tags differ from the collect
    await merge(graphs, account().ndjson(), graph="g2")
    assert await graphs.graphs() == ["g2", "resoto"]
    assert await graphs.delete_graph("g2") == 12
    assert await graphs.graphs() == ["resoto"] and not await graphs.exists("g2")


async def test_lifting_a_mark_drops_its_reason(graphs: GraphStore) -> None:
    await merge(graphs, account().ndjson())
    volume, instance = account().nodes[4].id, account().nodes[3].id
    await graphs.clean("resoto", CleanRequest(filter=Filter(ids=[volume, instance]), reason="expired"))
    patches = [NodePatch(id=volume, clean=False, event_log=[{"kind": "unmarked"}]), NodePatch(id=instance, clean=True)]
    assert await graphs.patch("resoto", patches) == (2, [])
    (lifted,) = await search(graphs, filter=Filter(ids=[volume]))
    assert lifted["desired"] == {} and lifted["metadata"].get("clean_reason") is None
    assert lifted["metadata"]["event_log"] == [{"kind": "unmarked"}]
    (kept,) = await search(graphs, filter=Filter(ids=[instance]))  # marking again keeps the reason
    assert kept["desired"] == {"clean": True} and kept["metadata"]["clean_reason"] == "expired"
    assert await graphs.clean("resoto", CleanRequest(filter=Filter(ids=[volume]), reason="manual")) == 1
    (marked,) = await search(graphs, filter=Filter(ids=[volume]))
    assert marked["metadata"]["clean_reason"] == "manual"


async def test_patching_tags_recomputes_expiry(graphs: GraphStore) -> None:
    """Expiry follows the tags a patch leaves, with the node's ctime, exactly as a merge derives it."""
    await merge(graphs, account().ndjson())
    instance, other = account().nodes[3].id, account().nodes[6].id  # i-0 (expiration 1h), i-1 (no expiry tag)
    expired = CleanRequest(filter=Filter(expired_before=NOW, protected=False), reason="expired")

    async def expires(node_id: str) -> str | None:
        (node,) = await search(graphs, filter=Filter(ids=[node_id]))
        value: str | None = node["metadata"].get("expires")
        return value

    assert (await expires(instance), await expires(other)) == ("2026-02-28T01:00:00Z", None)
    patches = [NodePatch(id=instance, tags={"expiration": None}), NodePatch(id=other, tags={"expiration": "7 days"})]
    assert await graphs.patch("resoto", patches) == (2, [])
    assert (await expires(instance), await expires(other)) == (None, "2026-03-07T00:00:00Z")
    assert await ids(graphs, expired_before=NOW) == {"b-1"}  # the protected bucket, by its resoto:expires
    assert await graphs.clean("resoto", expired) == 0

    patches = [
        NodePatch(id=other, tags={"resoto:expires": "2026-02-01T00:00:00"}),  # wins over the duration
        NodePatch(id=instance, tags={"owner": "me"}),
        NodePatch(id=instance, tags={"resoto:expiration": "2h", "expiration": "5h"}),
    ]
    assert await graphs.patch("resoto", patches) == (3, [])
    assert (await expires(instance), await expires(other)) == ("2026-02-28T02:00:00Z", "2026-02-01T00:00:00Z")
    assert await graphs.patch("resoto", [NodePatch(id=other, cleaned=True)]) == (1, [])  # no tags: expiry kept
    assert await expires(other) == "2026-02-01T00:00:00Z"
    assert await graphs.clean("resoto", expired) == 2
    # the next collect brings the collected tags back, and their expiry with them
    assert (await merge(graphs, account().ndjson()))["updated"] == 2
    assert (await expires(instance), await expires(other)) == ("2026-02-28T01:00:00Z", None)


async def test_dump_and_load_keep_every_column(graphs: GraphStore) -> None:
    await merge(graphs, account().ndjson())
    await graphs.clean("resoto", CleanRequest(filter=Filter(kinds=["example_volume"]), reason="r"))
    await graphs.patch("resoto", [NodePatch(id=account().nodes[3].id, cleaned=True, event_log=[{"k": 1}])])
    nodes = [r async for chunk in graphs.dump("resoto") for r in chunk]
    edges = [e async for chunk in graphs.dump_edges("resoto") for e in chunk]
    assert len(nodes) == 12 and len(edges) == 3 + 11
    before = await search(graphs, with_edges="default")
    await graphs.delete_graph("resoto")
    await graphs.load("copy", nodes, edges)
    assert await search(graphs, "copy", with_edges="default") == before
    assert [r async for chunk in graphs.dump("copy") for r in chunk] == nodes
    assert (await merge(graphs, account().ndjson(), graph="copy"))["unchanged"] == 12


# ---- the ArangoDB backend's merge, decided in Python, against SQLite (no server needed) ------------


class PlannedGraph:
    """A graph kept in memory by graph_plan's decisions: what the ArangoDB backend writes, minus the I/O."""

    def __init__(self) -> None:
        self.nodes: dict[str, Record] = {}
        self.edges: set[tuple[str, str, str]] = set()

    def merge(self, lines: list[str]) -> dict[str, int]:
        staging = Staging()
        staging.add((n, t.strip()) for n, t in enumerate(lines, start=1) if t.strip())
        staging.check()
        stored = {
            i: Stored(r["digest"], Ancestry(r["cloud"], r["account"], r["region"], r["replace_root"]))
            for i in staging.ids() if (r := self.nodes.get(i))
        }  # fmt: skip
        roots = staging.replace_roots()
        plan = staging.plan(stored, [i for i, r in self.nodes.items() if r["replace_root"] in roots])
        for i in plan.gone:
            del self.nodes[i]
        sources = set(plan.gone) | set(plan.edge_sources_replaced())
        self.edges = {e for e in self.edges if e[0] not in sources and e[1] not in plan.gone}
        for record in plan.created:
            self.nodes[record["id"]] = {**record, **STATE_DEFAULTS}
        for record in plan.changed:
            self.nodes[record["id"]].update(record)
        self.edges |= {(e.from_id, e.to_id, e.edge_type) for e in plan.edges}
        return plan.result().model_dump()

    def lines(self) -> list[str]:
        return [node_line(self.nodes[i]) for i in sorted(self.nodes)]


def odd_batch() -> list[str]:
    """Shapes a collector rarely sends: numbers as ids, diamonds, nested replace roots, odd metadata."""
    return [
        '{"id": "root", "reported": {"kind": "graph_root", "id": "root"}}',
        '{"id": "c", "reported": {"kind": "cloud", "id": 7, "name": 1.5, "ctime": true}, "metadata": {"replace": 1.0}}',
        '{"id": "a", "reported": {"kind": "account", "id": "acc", "tags": {"expiration": "2h"}, '
        '"ctime": "2026-01-01T00:00:00"}, "metadata": {"protected": true, "ancestors": {"x": 1}, "keep": [1]}}',
        '{"id": "r1", "reported": {"kind": "region", "id": "eu"}}',
        '{"id": "r2", "reported": {"kind": "region", "id": "us"}}',
        '{"id": "x", "reported": {"kind": "thing", "id": "x", "tags": {"resoto:expires": {"a": 1}, "expiration": "1d"},'
        ' "ctime": "2026-01-01T00:00:00Z"}, "metadata": {"replace": true}}',
        '{"id": "y", "reported": {"kind": "thing", "id": "y", "tags": ["no"]}}',
        '{"from": "root", "to": "c"}', '{"from": "c", "to": "a"}', '{"from": "a", "to": "r1"}',
        '{"from": "a", "to": "r2"}', '{"from": "r1", "to": "x"}', '{"from": "r2", "to": "x"}',
        '{"from": "x", "to": "y", "edge_type": "default"}', '{"from": "y", "to": "x", "edge_type": "delete"}',
    ]  # fmt: skip


SEQUENCES = [
    [account().ndjson(), account().ndjson(), account(instances=1, extra=False).ndjson(), account("acc2").ndjson(),
     GraphBatch("example", "acc1").ndjson()],
    [odd_batch(), odd_batch()[:6] + odd_batch()[7:12], odd_batch()],
    [account().ndjson(), ['{"id": "loose", "reported": {"kind": "k"}}', '{"from": "root", "to": "loose"}']],
    # held by stored nodes outside the batch: the cloud c, then the region r1
    [odd_batch(), odd_batch()[2:7] + odd_batch()[8:], [*odd_batch()[5:7], '{"from": "r1", "to": "x"}']],
]  # fmt: skip


@pytest.mark.parametrize("batches", SEQUENCES)
async def test_the_python_merge_plan_matches_sqlite(tmp_path: Path, batches: list[list[str]]) -> None:
    sqlite_graphs = SqliteGraphStore(tmp_path / "graph.db")
    planned = PlannedGraph()
    try:
        for batch in batches:
            assert planned.merge(batch) == await merge(sqlite_graphs, batch)
            assert planned.lines() == [line async for chunk in sqlite_graphs.search("resoto", SearchRequest())
                                       for line in chunk]  # fmt: skip
            stored_edges = {e async for chunk in sqlite_graphs.dump_edges("resoto") for e in chunk}
            assert planned.edges == stored_edges
    finally:
        await sqlite_graphs.close()


async def test_the_python_merge_plan_refuses_an_edge_to_a_vanishing_node_like_sqlite(tmp_path: Path) -> None:
    sqlite_graphs = SqliteGraphStore(tmp_path / "graph.db")
    planned = PlannedGraph()
    try:
        first = odd_batch()
        assert planned.merge(first) == await merge(sqlite_graphs, first)
        # y vanishes from the subtree of x (a replace root), yet an edge of the batch names it
        without_y = [line for line in first if '"id": "y"' not in line and '"to": "y"' not in line]
        batch = [*without_y[:-1], '{"from": "x", "to": "y", "edge_type": "delete"}']
        with pytest.raises(MergeError) as in_python:
            planned.merge(batch)
        with pytest.raises(MergeError) as in_sqlite:
            await merge(sqlite_graphs, batch)
        errors = [str(in_python.value), str(in_sqlite.value)]
        assert errors[0] == errors[1] and "unknown node 'y'" in errors[0]
    finally:
        await sqlite_graphs.close()


HOSTILE_LINES = [
    "{nope", "[1]", "1", '"x"', "null", "{}", '{"a":NaN}', '{"a":Infinity}', '{"a":"x\ty"}', "{a:1}", "[1,]",
    '{"a":01}', '{"reported": null}', '{"reported": {}, "id": "a"}', '{"reported": {"kind": 1}, "id": "a"}',
    '{"reported": {"kind": "k"}, "id": 1}', '{"reported": {"kind": "k"}, "id": "a", "metadata": null}',
    '{"reported": {"kind": "k"}, "id": "a", "metadata": []}', '{"from": "a"}', '{"to": "b"}',
    '{"from": "a", "to": "b", "edge_type": null}', '{"from": "a", "to": "b", "edge_type": true}',
    '{"from": "a", "to": "b", "edge_type": {"a": 1}}', '{"from": "a", "to": "b", "edge_type": "delete"}',
    '{"id": "a", "reported": 1, "reported": {"kind": "k"}}', '{"id": "a", "reported": {"kind": "k", "kind": 2}}',
    '{"from": null, "to": "b"}', "[" * 500 + "]" * 500, '{"id": "\\ud800", "reported": {"kind": "k"}}',
]  # fmt: skip


SQLITE_PROBLEM = """
SELECT CASE
    WHEN NOT json_valid(?1) THEN 'not valid JSON'
    WHEN json_type(?1) != 'object' THEN 'not a JSON object'
    WHEN json_type(?1, '$.reported') IS NOT NULL THEN CASE
        WHEN json_type(?1, '$.reported') != 'object' THEN 'reported must be an object'
        WHEN json_type(?1, '$.id') IS NOT 'text' OR json_extract(?1, '$.id') = ''
            THEN 'node id must be a non-empty string'
        WHEN json_type(?1, '$.reported.kind') IS NOT 'text' THEN 'reported.kind must be a string'
        WHEN coalesce(json_type(?1, '$.metadata'), 'object') != 'object' THEN 'metadata must be an object'
        END
    WHEN json_type(?1, '$.from') IS NOT NULL OR json_type(?1, '$.to') IS NOT NULL THEN CASE
        WHEN json_type(?1, '$.from') IS NOT 'text' OR json_type(?1, '$.to') IS NOT 'text'
            THEN 'edge from and to must be strings'
        WHEN coalesce(json_extract(?1, '$.edge_type'), 'default') NOT IN ('default', 'delete')
            THEN 'edge_type must be default or delete'
        END
    ELSE 'neither a node (id, reported) nor an edge (from, to)'
END
"""
"""The checks of one line in SQLite's JSON functions, which read the stored documents in search and aggregate."""


def sqlite_merge_verdict(text: str) -> str | None:
    try:
        BatchRows().read([(1, text)])
    except MergeError as e:
        return str(e).removeprefix("line 1: ")
    return None


def test_python_line_checks_say_what_sqlite_says() -> None:
    db = sqlite3.connect(":memory:")
    for text in HOSTILE_LINES:
        (expected,) = db.execute(SQLITE_PROBLEM, (text,)).fetchone()
        assert parse_line(text)[1] == expected, text
        assert sqlite_merge_verdict(text) == (UNPAIRED_SURROGATE if "\\ud800" in text else expected), text
