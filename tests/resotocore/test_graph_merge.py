"""The SQLite merge on real files: what it counts, what it stores, and that a failure changes no byte."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from resotocore.db.graph_lines import LINE_BATCH, UNPAIRED_SURROGATE, MergeError, load_line, parse_line
from resotocore.db.graph_sqlite import SqliteGraphStore
from resotolib.graph import CleanRequest, Filter, NodePatch, SearchRequest


@pytest.fixture
async def graphs(tmp_path: Path) -> AsyncIterator[SqliteGraphStore]:
    store = SqliteGraphStore(tmp_path / "graph.db")
    yield store
    await store.close()


def node(node_id: str, kind: str = "thing", **reported: Any) -> str:
    return json.dumps({"id": node_id, "reported": {"kind": kind, "id": node_id, **reported}})


def edge(from_id: str, to_id: str, edge_type: str = "default") -> str:
    return json.dumps({"from": from_id, "to": to_id, "edge_type": edge_type})


def account(name: str, resources: int, region: str = "r1") -> list[str]:
    """cloud → account (replace) → region → resources, nodes first, then edges."""
    nodes = [
        node("cloud", "cloud"),
        json.dumps({"id": name, "reported": {"kind": "account", "id": name}, "metadata": {"replace": True}}),
        node(f"{name}-{region}", "region", id=region),
        *(node(f"{name}-{i}", tags={"expiration": "1h"}, ctime="2026-01-01T00:00:00Z") for i in range(resources)),
    ]
    edges = [edge("cloud", name), edge(name, f"{name}-{region}")]
    edges += [edge(f"{name}-{region}", f"{name}-{i}") for i in range(resources)]
    return [*nodes, *edges]


async def merge(graphs: SqliteGraphStore, lines: list[str], graph: str = "g") -> dict[str, int]:
    async def chunks() -> AsyncIterator[bytes]:
        data = ("\n".join(lines) + "\n").encode()
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    return (await graphs.merge(graph, chunks())).model_dump()


async def search(graphs: SqliteGraphStore, **filter_: Any) -> list[dict[str, Any]]:
    request = SearchRequest(filter=Filter(**filter_))
    return [json.loads(line) async for chunk in graphs.search("g", request) for line in chunk]


def file_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of the graph file as stored, read by a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return [
            *db.execute("SELECT * FROM nodes ORDER BY graph, id"),
            *db.execute("SELECT * FROM edges ORDER BY graph, from_id, to_id, edge_type"),
        ]
    finally:
        db.close()


async def test_only_what_the_core_owns_differs_so_nothing_is_updated(graphs: SqliteGraphStore) -> None:
    batch = account("a1", 3)
    assert await merge(graphs, batch) == {"created": 6, "updated": 0, "deleted": 0, "unchanged": 0}
    assert await graphs.clean("g", CleanRequest(filter=Filter(ids=["a1-0"]), reason="expired")) == 1
    assert await graphs.patch("g", [NodePatch(id="a1-1", cleaned=True, event_log=[{"kind": "deleted"}])]) == (1, [])
    owned_by_the_core = {"cleaned": False, "event_log": [{"kind": "x"}], "expires": "1999-01-01T00:00:00Z",
                         "ancestors": {"cloud": "x"}, "clean_reason": "mine"}  # fmt: skip
    again = [
        json.dumps({**json.loads(line), "metadata": {**json.loads(line).get("metadata", {}), **owned_by_the_core}})
        if line.startswith('{"id": "a1-') else line
        for line in batch
    ]  # fmt: skip
    assert await merge(graphs, again) == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 6}
    (marked,) = await search(graphs, ids=["a1-0"])
    assert marked["desired"] == {"clean": True} and marked["metadata"]["clean_reason"] == "expired"
    assert marked["metadata"]["expires"] == "2026-01-01T01:00:00Z"
    (cleaned,) = await search(graphs, ids=["a1-1"])
    assert cleaned["metadata"]["cleaned"] is True and cleaned["metadata"]["event_log"] == [{"kind": "deleted"}]


async def test_a_node_that_moves_or_changes_is_updated(graphs: SqliteGraphStore) -> None:
    await merge(graphs, account("a1", 3))
    moved = [line for line in account("a1", 3) if line != edge("a1-r1", "a1-2")]
    moved[-1:-1] = [node("a1-r2", "region", id="r2"), edge("a1", "a1-r2"), edge("a1-r2", "a1-2")]
    moved[3] = node("a1-0", tags={"expiration": "2h"}, ctime="2026-01-01T00:00:00Z")  # a new expiry
    assert await merge(graphs, moved) == {"created": 1, "updated": 2, "deleted": 0, "unchanged": 4}
    regions = {n["reported"]["id"]: n["metadata"]["ancestors"]["region"] for n in await search(graphs, kinds=["thing"])}
    assert regions == {"a1-0": "r1", "a1-1": "r1", "a1-2": "r2"}
    (changed,) = await search(graphs, ids=["a1-0"])
    assert changed["metadata"]["expires"] == "2026-01-01T02:00:00Z"


@pytest.mark.parametrize(
    ("last", "reason"),
    [
        ("{broken", "not valid JSON"),
        (edge("a1-r1", "nowhere"), "edge refers to unknown node 'nowhere'"),
        (node("a1-7"), "duplicate node id 'a1-7'"),
        ('{"id": "x\\udc00", "reported": {"kind": "k"}}', UNPAIRED_SURROGATE),
        (
            '{"id": "p", "reported": {"kind": "k"}, "metadata": {"protected": "true"}}',
            "metadata.protected must be true or false",
        ),
        (
            '{"id": "p", "reported": {"kind": "k"}, "metadata": {"replace": "yes"}}',
            "metadata.replace must be true or false",
        ),
    ],
)
async def test_an_error_after_many_rows_leaves_every_byte_as_it_was(
    graphs: SqliteGraphStore, last: str, reason: str
) -> None:
    await merge(graphs, account("a1", 20))
    await merge(graphs, account("a2", 5))
    await graphs.clean("g", CleanRequest(filter=Filter(ids=["a1-3"]), reason="r"))
    before = file_rows(graphs.path)
    batch = account("a1", 3 * LINE_BATCH)  # fewer nodes than before under a1, read in several batches
    with pytest.raises(MergeError) as raised:
        await merge(graphs, [*batch, last])
    assert str(raised.value) == f"line {len(batch) + 1}: {reason}"
    assert file_rows(graphs.path) == before
    assert await merge(graphs, account("a1", 2)) == {"created": 0, "updated": 0, "deleted": 18, "unchanged": 5}


async def test_documents_are_stored_as_sqlite_reads_them(graphs: SqliteGraphStore) -> None:
    lines = [
        '{"id": "a", "reported": {"kind": "k", "x": 1, "x": 2, "big": 18446744073709551616, "huge": 1e400,'
        ' "float": 1.5, "name": "caf\\u00e9 \\u0022q\\u0022"}, "id": "b"}',
        '{"id": "c", "reported": {"kind": "k", "tags": {"owner": "o", "owner": "p"}}, "metadata": {"m": 1, "m": 2}}',
    ]
    assert (await merge(graphs, lines))["created"] == 2
    first, second = await search(graphs)
    assert first["id"] == "a" and second["id"] == "c"
    assert first["reported"] == {"kind": "k", "x": 1, "big": 18446744073709551616, "huge": float("inf"), "float": 1.5,
                                 "name": 'café "q"'}  # fmt: skip
    assert second["reported"]["tags"] == {"owner": "o"} and second["metadata"]["m"] == 1
    assert [n["id"] for n in await search(graphs, fields=[{"path": "reported.big", "op": ">", "value": 1e19}])] == ["a"]
    assert await search(graphs, tags={"owner": "p"}) == []
    assert (await merge(graphs, lines))["unchanged"] == 2


LINES = [
    '{"a": 1, "a": 2}', '{"a": {"b": 1, "b": {"c": 2}}}', '{"a\\"": 1, "a\\u0022": 2}', '{"a": "\\"", "b": "\\""}',
    '{"n": 18446744073709551615, "m": -9223372036854775808}', '{"n": 18446744073709551616}', '{"f": 1e16}',
    '{"f": 1E400}', '{"f": -1e400}', '{"s": "\\u00e9\\/\\ud83d\\ude00"}', '{"s": "\\ud83d"}',
    '{"d": [' * 300 + "]}" * 300,
    '{ "k" : "v" , "k" : "w" }', '{"k":"v",\t"k":"w"}', '{"id": "a", "reported": {"kind": "k"}, "id": "b"}',
]  # fmt: skip


async def test_values_come_back_compact_and_numbers_beyond_a_double_as_written(graphs: SqliteGraphStore) -> None:
    line = (
        '{"id": "a", "reported": {"kind": "k", "f": 1.50, "s": "\\u0041\\/", "n": 18446744073709551616, "h": -1E400}}'
    )
    await merge(graphs, [line])
    (found,) = [text async for chunk in graphs.search("g", SearchRequest()) for text in chunk]
    assert found.startswith('{"id":"a","reported":{"kind":"k","f":1.5,"s":"A/","n":18446744073709551616,"h":-1E400}')


async def test_texts_with_nul_are_kept_whole(graphs: SqliteGraphStore) -> None:
    lines = [
        '{"id": "a\\u0000b", "reported": {"kind": "k", "name": "x\\u0000y"}}',
        '{"id": "a\\u0000c", "reported": {"kind": "k"}}',
        '{"from": "a\\u0000b", "to": "a\\u0000c"}',
    ]
    assert (await merge(graphs, lines))["created"] == 2
    request = SearchRequest(with_edges="default")
    found = [json.loads(line) async for chunk in graphs.search("g", request) for line in chunk]
    assert [n.get("id") for n in found] == ["a\x00b", "a\x00c", None]
    assert found[0]["reported"]["name"] == "x\x00y" and found[2] == {
        "from": "a\x00b",
        "to": "a\x00c",
        "edge_type": "default",
    }


def plain(value: Any) -> Any:
    """A value of load_line with each Literal read as the standard library reads it (int, or float: inf)."""
    return json.loads(json.dumps(value, default=lambda literal: json.loads(literal.text)))


@pytest.mark.parametrize("text", LINES)
def test_orjson_reads_lines_as_the_standard_library_does(text: str) -> None:
    value, problem = load_line(text)
    if '\\ud83d"' in text:
        assert (value, problem) == (None, UNPAIRED_SURROGATE)
    else:
        assert problem is None and plain(value) == parse_line(text)[0]


async def test_an_edge_to_a_node_the_merge_deletes_is_an_edge_to_an_unknown_node(
    graphs: SqliteGraphStore, tmp_path: Path
) -> None:
    await merge(graphs, account("a", 2))
    before = file_rows(tmp_path / "graph.db")
    lines = account("a", 1)  # a-1 vanishes from the replaced subtree, yet an edge still names it
    with pytest.raises(MergeError, match=r"^line 8: edge refers to unknown node 'a-1'$"):
        await merge(graphs, [*lines, edge("a-0", "a-1", "delete")])
    assert file_rows(tmp_path / "graph.db") == before
    assert (await merge(graphs, lines))["deleted"] == 1


async def test_a_batch_held_by_a_stored_node_takes_its_ancestry_and_replaces_its_subtree(
    graphs: SqliteGraphStore, tmp_path: Path
) -> None:
    await merge(graphs, account("a", 2))
    # the next batch has the account but not its cloud: the edge cloud → a names the stored cloud
    without_cloud = [line for line in account("a", 1) if json.loads(line).get("id") != "cloud"]
    assert await merge(graphs, without_cloud) == {"created": 0, "updated": 0, "deleted": 1, "unchanged": 3}
    db = sqlite3.connect(tmp_path / "graph.db")
    rows = db.execute("SELECT id, cloud, account, region, replace_root FROM nodes ORDER BY id").fetchall()
    db.close()
    assert rows == [
        ("a", "cloud", "a", None, "a"),
        ("a-0", "cloud", "a", "r1", "a"),
        ("a-r1", "cloud", "a", "r1", "a"),
        ("cloud", "cloud", None, None, None),
    ]
