"""The merge of one NDJSON batch into the SQLite graph, inside one transaction on the writer connection.

While the lines stream in, each is read once (graph_rows) and its row goes to a scratch table of the
merge: node rows with every column but the ancestry, edge rows. Reading a batch (``read``: no I/O)
may run in another thread while the previous batch is written (``write``: one statement per table
taking the rows as one JSON array, during which SQLite does not hold the GIL). At the end: edges to
nodes outside the batch are checked against the graph; the containment walk (graph_walk) gives every
node its cloud, account, region and replace root, kept as runs of consecutive nodes with the same
ancestry; what vanished from a replaced subtree is deleted with its edges, the edges leaving replaced
nodes are dropped, and nodes and edges are written with set-based SQL. State of surviving nodes that
the core owns (desired.clean, cleaned, clean reason, event log) is kept. The caller rolls back on any
error, so a failed merge leaves the graph as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson

from resotocore.db.graph_lines import MergeError
from resotocore.db.graph_rows import BatchRows, EdgeRow, NodeRow
from resotocore.db.graph_walk import Ancestry
from resotolib.graph import MergeResult

__all__ = ["MergeError", "SqliteMerge"]

SCRATCH = (
    "ATTACH DATABASE '' AS merge",  # a private file, deleted when detached: no page is freed one by one
    "PRAGMA merge.journal_mode = OFF",
    "PRAGMA merge.synchronous = OFF",
)
TABLES = (
    "CREATE TABLE merge.merge_nodes (position INTEGER PRIMARY KEY, id TEXT, kind TEXT, name TEXT, ctime TEXT,"
    " expires TEXT, protected INTEGER, reported TEXT, metadata TEXT)",
    "CREATE TABLE merge.merge_edges (from_id TEXT, to_id TEXT, edge_type TEXT)",
    "CREATE TABLE merge.merge_runs (low INTEGER PRIMARY KEY, high INTEGER, cloud TEXT, account TEXT, region TEXT,"
    " replace_root TEXT)",
)
INSERT_NODES = "INSERT INTO merge_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_EDGES = "INSERT INTO merge_edges VALUES (?, ?, ?)"


def _from_json_array(table: str, columns: int) -> str:
    """Insert the rows of one JSON array of arrays (json_extract rather than ->>, which needs SQLite 3.38)."""
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(columns))
    return f"INSERT INTO {table} SELECT {values} FROM json_each(?)"


INSERT_NODES_JSON = _from_json_array("merge_nodes", 9)
INSERT_EDGES_JSON = _from_json_array("merge_edges", 3)
INSERT_RUNS = "INSERT INTO merge_runs VALUES (?, ?, ?, ?, ?, ?)"
IDS_CHUNK = 500
Batch = tuple[list[NodeRow] | str, list[EdgeRow] | str]
"""A batch's node rows and edge rows, each as a list or encoded as one JSON array"""

WALKED = "merge_runs r CROSS JOIN merge_nodes s ON s.position BETWEEN r.low AND r.high"

DROP_REPLACED_EDGES = f"""
DELETE FROM edges WHERE graph = ?1 AND from_id IN (SELECT s.id FROM {WALKED} WHERE r.replace_root IS NOT NULL)
"""

UPSERT = f"""
INSERT INTO nodes (graph, id, kind, cloud, account, region, name, ctime, expires, protected, replace_root,
    reported, metadata)
SELECT ?1, s.id, s.kind, r.cloud, r.account, r.region, s.name, s.ctime, s.expires, s.protected, r.replace_root,
    s.reported, s.metadata
FROM {WALKED} WHERE true
ON CONFLICT (graph, id) DO UPDATE SET
    kind = excluded.kind, cloud = excluded.cloud, account = excluded.account, region = excluded.region,
    name = excluded.name, ctime = excluded.ctime, expires = excluded.expires, protected = excluded.protected,
    replace_root = excluded.replace_root, reported = excluded.reported, metadata = excluded.metadata
WHERE nodes.reported IS NOT excluded.reported OR nodes.metadata IS NOT excluded.metadata
    OR nodes.protected IS NOT excluded.protected OR nodes.expires IS NOT excluded.expires
    OR nodes.cloud IS NOT excluded.cloud OR nodes.account IS NOT excluded.account
    OR nodes.region IS NOT excluded.region OR nodes.replace_root IS NOT excluded.replace_root
"""

COPY_EDGES = """
INSERT OR IGNORE INTO edges (graph, from_id, to_id, edge_type) SELECT ?1, from_id, to_id, edge_type FROM merge_edges
"""


Rows = TypeVar("Rows", list[NodeRow], list[EdgeRow])


def _encoded(rows: Rows) -> Rows | str:
    """The rows as one JSON array, which SQLite inserts in one statement without holding the GIL (so the next
    lines are read meanwhile); as they are if a text holds NUL, which SQLite's JSON functions cut short."""
    text = orjson.dumps(rows)
    return rows if b"\\u0000" in text else text.decode()


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IDS_CHUNK):
        yield items[start : start + IDS_CHUNK]


class SqliteMerge:
    """One merge on the writer connection: ``begin``, ``read`` and ``write`` per batch of lines, ``finish``
    (commits), ``close``."""

    def __init__(self, db: sqlite3.Connection, graph: str) -> None:
        self._db = db
        self._graph = graph
        self._rows = BatchRows()

    def begin(self) -> None:
        for statement in SCRATCH:
            self._db.execute(statement)
        self._db.execute("BEGIN IMMEDIATE")
        for statement in TABLES:
            self._db.execute(statement)

    def close(self) -> None:
        """After ``finish`` or a failure: roll back what is left, drop the scratch tables."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if any(name == "merge" for _, name, _ in self._db.execute("PRAGMA database_list")):
            self._db.execute("DETACH DATABASE merge")

    def read(self, lines: Iterable[tuple[int, str]]) -> Batch:
        """The rows of these lines, ready for ``write``: no I/O, so it may run while an earlier batch is written."""
        nodes, edges = self._rows.read(lines)
        return _encoded(nodes), _encoded(edges)

    def write(self, batch: Batch) -> None:
        nodes, edges = batch
        self._insert(nodes, INSERT_NODES, INSERT_NODES_JSON)
        self._insert(edges, INSERT_EDGES, INSERT_EDGES_JSON)

    def _insert(self, rows: Sequence[tuple[Any, ...]] | str, many: str, json_each: str) -> None:
        if isinstance(rows, str):
            self._db.execute(json_each, (rows,))
        else:
            self._db.executemany(many, rows)

    def finish(self) -> MergeResult:
        """Check the edges, walk, write, commit; raises MergeError (the caller rolls back)."""
        db, graph, rows = self._db, self._graph, self._rows
        vanished = self._vanished()  # an edge to one of them is an edge to a node the graph will not have
        rows.check_edges(self._stored(sorted(rows.outside_ids())) - vanished)
        stored = {i: Ancestry(*a) for i, *a in self._select("id, cloud, account, region, replace_root", rows.roots())}
        db.executemany(INSERT_RUNS, ((r.first, r.last, *(r.ancestry or (None,) * 4)) for r in rows.ancestry(stored)))
        before = self._count()
        deleted = self._delete(vanished)
        if db.execute("SELECT 1 FROM edges WHERE graph = ? LIMIT 1", (graph,)).fetchone():
            db.execute(DROP_REPLACED_EDGES, (graph,))
        changed = db.execute(UPSERT, (graph,)).rowcount
        db.execute(COPY_EDGES, (graph,))
        created = self._count() - before + deleted
        db.execute("COMMIT")
        updated = changed - created
        unchanged = len(rows.names) - created - updated
        return MergeResult(created=created, updated=updated, deleted=deleted, unchanged=unchanged)

    def _select(self, columns: str, ids: Sequence[str]) -> Iterator[Any]:
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {columns} FROM nodes WHERE graph = ? AND id IN ({marks})"
            yield from self._db.execute(sql, (self._graph, *chunk))

    def _stored(self, ids: Sequence[str]) -> set[str]:
        return {i for (i,) in self._select("id", ids)}

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM nodes WHERE graph = ?", (self._graph,)).fetchone()[0])

    def _vanished(self) -> set[str]:
        """The stored nodes under the batch's replace roots that the batch no longer has."""
        vanished: set[str] = set()
        for chunk in _chunks(self._rows.replace_roots):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id FROM nodes WHERE graph = ? AND replace_root IN ({marks})"
            vanished.update(i for (i,) in self._db.execute(sql, (self._graph, *chunk)) if i not in self._rows.ids)
        return vanished

    def _delete(self, vanished: set[str]) -> int:
        """Delete these nodes and their edges."""
        gone = [(self._graph, i) for i in vanished]
        self._db.executemany("DELETE FROM nodes WHERE graph = ? AND id = ?", gone)
        self._db.executemany("DELETE FROM edges WHERE graph = ? AND from_id = ?", gone)
        self._db.executemany("DELETE FROM edges WHERE graph = ? AND to_id = ?", gone)
        return len(gone)
