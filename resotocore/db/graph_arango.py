"""The resource graph on ArangoDB: nodes in one collection, edges in one edge collection per type.

A node document is a graph_docs record plus ``graph``, ``order`` (its id's bytes in hex, so paging
sorts like SQLite) and ``digest`` (what a merge compares). Keys hash (graph, id). A merge reads the
whole batch first (a dropped connection never opens a transaction), checks it in Python with the
same messages as SQLite (graph_lines, graph_plan), then applies it in one stream transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import structlog

from resotocore.db.arango_conn import ArangoConnection, Collection, Index, Transaction
from resotocore.db.graph_docs import (
    STATE_DEFAULTS,
    Record,
    compact,
    digest,
    doc_key,
    node_line,
    order_key,
    reported_expires,
)
from resotocore.db.graph_lines import numbered_lines
from resotocore.db.graph_plan import MergePlan, Staging, Stored
from resotocore.db.graph_store import EdgeRecord, aggregate_rows
from resotocore.db.graph_walk import Ancestry
from resotocore.graph import aql
from resotolib.graph import (
    AggregateRequest,
    AggregateRow,
    CleanRequest,
    EdgeType,
    MergeResult,
    NodePatch,
    SearchRequest,
)  # fmt: skip

log = structlog.get_logger(__name__)
T = TypeVar("T")
CHUNK = 5000
"""Documents or keys per statement."""
SEARCH_BATCH = 500
EDGE_TYPES: tuple[EdgeType, ...] = ("default", "delete")
COLLECTIONS = [
    Collection(
        aql.NODES,
        indexes=(
            Index(("graph", "id"), unique=True),
            Index(("graph", "order")),
            Index(("graph", "kind")),
            Index(("graph", "cloud", "account")),
            Index(("graph", "expires"), sparse=True),
            Index(("graph", "clean")),
            Index(("graph", "replace_root")),
        ),
    ),
    *(Collection(aql.EDGES[t], edge=True, indexes=(Index(("graph",)),)) for t in EDGE_TYPES),
]
WRITES = [aql.NODES, *aql.EDGES.values()]


def node_doc(graph: str, record: Record) -> dict[str, Any]:
    key = doc_key(graph, record["id"])
    return {**record, "_key": key, "graph": graph, "order": order_key(record["id"]), "digest": digest(record)}


def edge_doc(graph: str, from_id: str, to_id: str) -> dict[str, Any]:
    return {
        "_key": doc_key(graph, from_id, to_id), "_from": handle(graph, from_id), "_to": handle(graph, to_id),
        "graph": graph, "from": from_id, "to": to_id, "from_order": order_key(from_id), "to_order": order_key(to_id),
    }  # fmt: skip


def handle(graph: str, node_id: str) -> str:
    return f"{aql.NODES}/{doc_key(graph, node_id)}"


def chunks(items: list[T], size: int = CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ArangoGraphStore:
    def __init__(self, conn: ArangoConnection) -> None:
        self._conn = conn
        self._pool = ThreadPoolExecutor(3, thread_name_prefix="arango-graph")
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, conn: ArangoConnection) -> ArangoGraphStore:
        store = cls(conn)
        await store._run(lambda: conn.ensure(COLLECTIONS))
        return store

    async def close(self) -> None:
        async with self._write_lock:
            self._pool.shutdown(wait=True)

    # ---- writes ------------------------------------------------------------------------------------

    async def merge(self, graph: str, chunks_: AsyncIterable[bytes]) -> MergeResult:
        """Merge an NDJSON stream (nodes, then edges) into `graph`, all or nothing."""
        staging = Staging()
        async for batch in numbered_lines(chunks_):
            await self._run(partial(staging.add, batch))  # parsing is CPU work: off the event loop
        staging.check()
        async with self._write_lock:
            result = await self._run(lambda: self._write(lambda txn: _merge(txn, graph, staging)))
        log.info("graph_merged", graph=graph, **result.model_dump())
        return result

    async def clean(self, graph: str, request: CleanRequest) -> int:
        statement = aql.clean(graph, request.filter, request.reason)
        async with self._write_lock:
            (marked,) = await self._run(lambda: self._write(lambda txn: txn.query(statement)))
        return int(marked)

    async def patch(self, graph: str, patches: list[NodePatch]) -> tuple[int, list[str]]:
        async with self._write_lock:
            return await self._run(lambda: self._write(lambda txn: _patch(txn, graph, patches)))

    async def delete_graph(self, graph: str) -> int:
        def delete(txn: Transaction) -> int:
            (count,) = txn.query(aql.delete_nodes(graph))
            for edge_type in EDGE_TYPES:
                txn.query(aql.delete_edges(graph, edge_type))
            return int(count)

        async with self._write_lock:
            return await self._run(lambda: self._write(delete))

    # ---- reads -------------------------------------------------------------------------------------

    async def graphs(self) -> list[str]:
        return sorted(await self._run(lambda: self._conn.query(aql.graphs())))

    async def exists(self, graph: str) -> bool:
        return bool(await self._run(lambda: self._conn.query(aql.exists(graph))))

    async def search(self, graph: str, request: SearchRequest) -> AsyncIterator[list[str]]:
        """Matching nodes (then edges, if asked) as JSON lines, in chunks."""
        async for records in self._batches(aql.search(graph, request)):
            yield [node_line(r) for r in records]
        if (edge_type := request.with_edges) is not None:
            async for pairs in self._batches(aql.search_edges(graph, request, edge_type)):
                yield [compact({"from": f, "to": t, "edge_type": edge_type}) for f, t in pairs]

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]:
        rows = await self._run(lambda: self._conn.query(aql.aggregate(graph, request)))
        width = len(request.group_by)
        if not rows and not width:  # SQL answers one row for an aggregate over nothing
            rows = [[0 if fn.function == "count" else None for fn in request.functions]]
        rows.sort(key=lambda row: [_sqlite_order(v) for v in row[:width]])
        return aggregate_rows(request, rows)

    # ---- export and import -------------------------------------------------------------------------

    async def dump(self, graph: str) -> AsyncIterator[list[Record]]:
        async for records in self._batches(aql.dump_nodes(graph)):
            yield records

    async def dump_edges(self, graph: str) -> AsyncIterator[list[EdgeRecord]]:
        for edge_type in EDGE_TYPES:
            async for pairs in self._batches(aql.dump_edges(graph, edge_type)):
                yield [(f, t, edge_type) for f, t in pairs]

    async def load(self, graph: str, nodes: list[Record], edges: list[EdgeRecord]) -> None:
        def load(txn: Transaction) -> None:
            for part in chunks([node_doc(graph, r) for r in nodes]):
                txn.query(aql.insert_nodes(part, overwrite=True))
            for edge_type in EDGE_TYPES:
                docs = [edge_doc(graph, f, t) for f, t, e in edges if e == edge_type]
                for part in chunks(docs):
                    txn.query(aql.insert_edges(edge_type, part))

        async with self._write_lock:
            await self._run(lambda: self._write(load))

    # ---- threads -----------------------------------------------------------------------------------

    def _write(self, fn: Callable[[Transaction], T]) -> T:
        with self._conn.transaction(WRITES) as txn:
            return fn(txn)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _batches(self, statement: aql.Aql) -> AsyncIterator[list[Any]]:
        """The results of a query in batches, each fetched in a thread."""
        batches: Iterator[list[Any]] = self._conn.batches(statement, SEARCH_BATCH)
        while batch := await self._run(lambda: next(batches, [])):
            yield batch


def _merge(txn: Transaction, graph: str, staging: Staging) -> MergeResult:
    """The merge inside its transaction: read what the batch touches, decide in Python, write."""
    stored: dict[str, Stored] = {}
    for part in chunks(sorted(staging.ids())):
        for node_id, node_digest, *ancestry in txn.query(aql.stored([doc_key(graph, i) for i in part])):
            stored[node_id] = Stored(node_digest, Ancestry(*ancestry))
    roots = staging.replace_roots()
    under = list(txn.query(aql.under_roots(graph, roots))) if roots else []
    plan = staging.plan(stored, under)  # raises MergeError for an edge to an unknown node: the transaction is aborted
    _apply(txn, graph, plan)
    return plan.result()


def _apply(txn: Transaction, graph: str, plan: MergePlan) -> None:
    """Drop what vanished and the edges the batch replaces, then write nodes and edges (graph_merge's order)."""
    for keys in chunks([doc_key(graph, i) for i in plan.gone]):
        txn.query(aql.remove_nodes(keys))
    gone = [handle(graph, i) for i in plan.gone]
    sources = gone + [handle(graph, i) for i in plan.edge_sources_replaced()]
    for edge_type in EDGE_TYPES:
        for handles in chunks(sources):
            txn.query(aql.remove_edges(edge_type, handles, []))
        for handles in chunks(gone):
            txn.query(aql.remove_edges(edge_type, [], handles))
    for docs in chunks([{**node_doc(graph, r), **STATE_DEFAULTS} for r in plan.created]):
        txn.query(aql.insert_nodes(docs))
    for docs in chunks([node_doc(graph, r) for r in plan.changed]):  # merge fields only: the core's state stays
        txn.query(aql.update_nodes(docs))
    for edge_type in EDGE_TYPES:
        edges = {(e.from_id, e.to_id) for e in plan.edges if e.edge_type == edge_type}
        for docs in chunks([edge_doc(graph, f, t) for f, t in sorted(edges)]):
            txn.query(aql.insert_edges(edge_type, docs))


def _patch(txn: Transaction, graph: str, patches: list[NodePatch]) -> tuple[int, list[str]]:
    keys = sorted({doc_key(graph, p.id) for p in patches})
    docs: dict[str, dict[str, Any]] = {}
    for key_part in chunks(keys):
        docs.update((d["id"], d) for d in txn.query(aql.nodes_by_key(key_part)))
    updated, missing, changed = 0, [], {}
    for p in patches:
        doc = docs.get(p.id)
        if doc is None:
            missing.append(p.id)
            continue
        if p.cleaned is not None:
            doc["cleaned"] = p.cleaned
        if p.clean is not None:  # lifting a mark drops its reason too, as in the SQLite backend
            doc["clean"] = p.clean
            if not p.clean:
                doc["clean_reason"] = None
        if p.event_log:
            doc["event_log"] = [*(doc.get("event_log") or []), *p.event_log]
        if p.tags:
            tags = dict(doc["reported"].get("tags") or {})
            for name, value in p.tags.items():
                if value is None:
                    tags.pop(name, None)
                else:
                    tags[name] = value
            doc["reported"] = {**doc["reported"], "tags": tags}
            doc["expires"] = reported_expires(doc["reported"])  # expiry follows the tags, as a merge derives it
        changed[p.id] = doc
        updated += 1
    fields = ("_key", "cleaned", "clean", "clean_reason", "event_log", "reported", "expires")
    writes = [{**{k: d[k] for k in fields}, "digest": digest(d)} for d in changed.values()]
    for part in chunks(writes):
        txn.query(aql.update_nodes(part))
    return updated, missing


def _sqlite_order(value: Any) -> tuple[int, Any]:
    """SQLite's order of values: NULL, numbers, text (by bytes), then anything else."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.encode("utf-8", "surrogatepass"))
    return (3, compact(value))
