"""The containment walk in Python against the recursive SQL that defined it (SQLite, in memory)."""

from __future__ import annotations

import sqlite3
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from resotocore.db.graph_walk import MAX_DEPTH, NO_ANCESTRY, Ancestry, Run, apply, larger, own, runs, walk

WALK = f"""
WITH RECURSIVE walk(id, cloud, account, region, replace_root, depth) AS (
    SELECT s.id,
        CASE WHEN s.kind = 'cloud' THEN s.rid ELSE n.cloud END,
        CASE WHEN s.kind = 'account' THEN s.rid ELSE n.account END,
        CASE WHEN s.kind = 'region' THEN s.rid ELSE n.region END,
        CASE WHEN s.is_replace THEN s.id ELSE n.replace_root END,
        0
    FROM batch s LEFT JOIN stored n ON n.id = s.id
    WHERE NOT EXISTS (SELECT 1 FROM edges e WHERE e.to_id = s.id)
    UNION  -- a node held by a stored node outside the batch starts from that node's ancestry
    SELECT s.id,
        CASE WHEN s.kind = 'cloud' THEN s.rid ELSE p.cloud END,
        CASE WHEN s.kind = 'account' THEN s.rid ELSE p.account END,
        CASE WHEN s.kind = 'region' THEN s.rid ELSE p.region END,
        CASE WHEN s.is_replace THEN s.id ELSE p.replace_root END,
        0
    FROM batch s JOIN edges e ON e.to_id = s.id JOIN stored p ON p.id = e.from_id
    WHERE e.from_id NOT IN (SELECT id FROM batch)
    UNION  -- the old merge said UNION ALL: the same maxima, without one row per path
    SELECT c.id,
        CASE WHEN c.kind = 'cloud' THEN c.rid ELSE w.cloud END,
        CASE WHEN c.kind = 'account' THEN c.rid ELSE w.account END,
        CASE WHEN c.kind = 'region' THEN c.rid ELSE w.region END,
        CASE WHEN c.is_replace THEN c.id ELSE w.replace_root END,
        w.depth + 1
    FROM walk w JOIN edges e ON e.from_id = w.id JOIN batch c ON c.id = e.to_id
    WHERE w.depth < {MAX_DEPTH}
)
SELECT id, max(cloud), max(account), max(region), max(replace_root) FROM walk GROUP BY id
"""

Node = tuple[str, str, str | None, bool]
"""id, kind, reported id, flagged replace"""


def in_sql(nodes: list[Node], edges: list[tuple[str, str]], stored: dict[str, Ancestry]) -> dict[str, Ancestry]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE batch (id, kind, rid, is_replace)")
    db.execute("CREATE TABLE edges (from_id, to_id)")
    db.execute("CREATE TABLE stored (id, cloud, account, region, replace_root)")
    db.executemany("INSERT INTO batch VALUES (?, ?, ?, ?)", nodes)
    db.executemany("INSERT INTO edges VALUES (?, ?)", edges)
    db.executemany("INSERT INTO stored VALUES (?, ?, ?, ?, ?)", [(i, *a) for i, a in stored.items()])
    return {i: Ancestry(*a) for i, *a in db.execute(WALK)}


def in_python(nodes: list[Node], edges: list[tuple[str, str]], stored: dict[str, Ancestry]) -> dict[str, Ancestry]:
    ids = {n[0] for n in nodes}
    owns = {i: own(kind, rid, i, replace) for i, kind, rid, replace in nodes if replace or kind != "thing"}
    children: dict[str, list[str]] = {}
    for from_id, to_id in edges:
        if from_id in ids and to_id in ids:
            children.setdefault(from_id, []).append(to_id)
    below = {to_id for _, to_id in edges}
    starts = {i: apply(owns.get(i), stored.get(i, NO_ANCESTRY)) for i, *_ in nodes if i not in below}
    for from_id, to_id in edges:
        if from_id not in ids and from_id in stored:
            starts[to_id] = larger(starts.get(to_id), apply(owns.get(to_id), stored[from_id]))
    return walk(starts, children, owns)


names = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"])
texts = st.none() | st.sampled_from(["x", "y", "z", "é", "X"])


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Node], list[tuple[str, str]], dict[str, Ancestry]]:
    ids = draw(st.lists(names, min_size=1, max_size=8, unique=True))
    kinds = st.sampled_from(["cloud", "account", "region", "thing", "thing"])
    nodes = [(i, draw(kinds), draw(texts), draw(st.booleans())) for i in ids]
    ends = st.sampled_from([*ids, "outside"])  # an edge may come from a node the batch does not have
    edges = draw(st.lists(st.tuples(ends, st.sampled_from(ids)), max_size=14))
    ancestry = st.builds(Ancestry, texts, texts, texts, texts)
    stored = draw(st.dictionaries(st.sampled_from([*ids, "outside"]), ancestry, max_size=4))
    return nodes, edges, stored


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_walk_is_the_recursive_sql(batch: tuple[list[Node], list[tuple[str, str]], dict[str, Ancestry]]) -> None:
    assert in_python(*batch) == in_sql(*batch)


def test_the_walk_stops_after_64_levels() -> None:
    nodes: list[Node] = [("n0", "cloud", "c", False), *((f"n{i}", "thing", None, False) for i in range(1, 70))]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(69)]
    walked = in_python(nodes, edges, {})
    assert walked == in_sql(nodes, edges, {})
    assert len(walked) == MAX_DEPTH + 1 and walked["n64"].cloud == "c" and "n65" not in walked


def test_runs_of_equal_ancestry() -> None:
    a, b = Ancestry("c", None, None, None), Ancestry("c", "a", None, "a")
    walked: dict[int, Any] = {0: a, 1: a, 2: b, 4: b, 5: b}
    assert list(runs(walked, 7)) == [Run(0, 1, a), Run(2, 2, b), Run(3, 3, None), Run(4, 5, b), Run(6, 6, None)]
    assert list(runs({}, 0)) == []
