"""The resource graph on SQLite: its own file, one writer thread, readers in parallel (WAL).

A merge reads the NDJSON lines as they stream in (in a parser thread, while the writer thread stores the
previous batch), inside one transaction, then walks the containment edges (ancestors and the replaced
subtree) and applies everything with set-based SQL (graph_merge).
Any problem — a broken line, an edge to an unknown node, a dropped connection — rolls the whole
merge back: the previous graph stays as it was.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from resotocore.db.graph_docs import Record, reported_expires
from resotocore.db.graph_lines import numbered_lines
from resotocore.db.graph_merge import MergeError, SqliteMerge
from resotocore.db.graph_store import EdgeRecord, aggregate_rows
from resotocore.db.sqlite import open_database
from resotolib.graph import (
    AggregateRequest,
    AggregateRow,
    CleanRequest,
    EdgeType,
    MergeResult,
    NodePatch,
    SearchRequest,
)

__all__ = ["MergeError", "SqliteGraphStore", "connect"]
from resotocore.db.store import StoreError
from resotocore.graph import query

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    graph TEXT NOT NULL, id TEXT NOT NULL,
    kind TEXT NOT NULL, cloud TEXT, account TEXT, region TEXT, name TEXT, ctime TEXT, expires TEXT,
    protected INTEGER NOT NULL DEFAULT 0, clean INTEGER NOT NULL DEFAULT 0, cleaned INTEGER NOT NULL DEFAULT 0,
    clean_reason TEXT, event_log TEXT, replace_root TEXT,
    reported TEXT NOT NULL, metadata TEXT NOT NULL,
    PRIMARY KEY (graph, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_kind ON nodes (graph, kind);
CREATE INDEX IF NOT EXISTS nodes_account ON nodes (graph, cloud, account);
CREATE INDEX IF NOT EXISTS nodes_expires ON nodes (graph, expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS nodes_clean ON nodes (graph, clean) WHERE clean = 1;
CREATE INDEX IF NOT EXISTS nodes_replace_root ON nodes (graph, replace_root);
CREATE TABLE IF NOT EXISTS edges (
    graph TEXT NOT NULL, from_id TEXT NOT NULL, to_id TEXT NOT NULL, edge_type TEXT NOT NULL,
    PRIMARY KEY (graph, from_id, to_id, edge_type)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_to ON edges (graph, to_id);
"""

SEARCH_CHUNK = 500


def connect(path: Path, durability: Literal["normal", "full"] = "normal", schema: str = "") -> sqlite3.Connection:
    """A connection of the writer or a reader thread; StoreError naming the file when SQLite cannot use it."""
    pragmas = [
        "journal_mode=WAL",
        f"synchronous={'FULL' if durability == 'full' else 'NORMAL'}",
        "busy_timeout=10000",
        "temp_store=FILE",
        "cache_size=-65536",
    ]
    return open_database(path, pragmas, schema)


class SqliteGraphStore:
    def __init__(self, path: Path, durability: Literal["normal", "full"] = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._durability = durability
        self._write_db = connect(path, durability, SCHEMA)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="graph-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="graph-reader")
        self._parser = ThreadPoolExecutor(1, thread_name_prefix="graph-parser")
        self._local = threading.local()
        self._write_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._write(lambda db: None)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._parser.shutdown(wait=True)
        self._write_db.close()

    # ---- writes -------------------------------------------------------------------------------------

    async def merge(self, graph: str, chunks: AsyncIterable[bytes]) -> MergeResult:
        """Merge an NDJSON stream (nodes, then edges) into `graph`, all or nothing."""
        async with self._write_lock:
            merge = SqliteMerge(self._write_db, graph)
            writing: asyncio.Task[None] | None = None  # the previous batch, written while the next one is read
            try:
                await self._write(lambda db: merge.begin())
                async for lines in numbered_lines(chunks):
                    batch = await asyncio.get_running_loop().run_in_executor(self._parser, merge.read, lines)
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self._write(lambda db, b=batch: merge.write(b)))  # type: ignore[misc]
                if writing is not None:
                    await writing
                return await self._write(lambda db: merge.finish())
            finally:
                if writing is not None:
                    _drop(writing)  # a statement under way still ends first: the writer runs one thing at a time
                await asyncio.shield(self._write(lambda db: merge.close()))

    async def clean(self, graph: str, request: CleanRequest) -> int:
        cond = query.where(request.filter)
        sql = f"UPDATE nodes SET clean = 1, clean_reason = ? WHERE graph = ? AND clean = 0 AND {cond.text}"
        params = [request.reason, graph, *cond.params]
        async with self._write_lock:
            return await self._write(lambda db: _in_transaction(db, lambda: db.execute(sql, params).rowcount))

    async def patch(self, graph: str, patches: list[NodePatch]) -> tuple[int, list[str]]:
        """Apply each patch; answers how many nodes were updated and which ids were not found."""
        async with self._write_lock:
            return await self._write(lambda db: _in_transaction(db, lambda: _patch(db, graph, patches)))

    async def delete_graph(self, graph: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            count = int(db.execute("DELETE FROM nodes WHERE graph = ?", (graph,)).rowcount)
            db.execute("DELETE FROM edges WHERE graph = ?", (graph,))
            return count

        async with self._write_lock:
            return await self._write(lambda db: _in_transaction(db, lambda: delete(db)))

    # ---- reads --------------------------------------------------------------------------------------

    async def graphs(self) -> list[str]:
        rows = await self._read(lambda db: db.execute("SELECT DISTINCT graph FROM nodes ORDER BY graph").fetchall())
        return [g for (g,) in rows]

    async def exists(self, graph: str) -> bool:
        row = await self._read(
            lambda db: db.execute("SELECT 1 FROM nodes WHERE graph = ? LIMIT 1", (graph,)).fetchone()
        )
        return row is not None

    async def search(self, graph: str, request: SearchRequest) -> AsyncIterator[list[str]]:
        """Matching nodes (then edges, if asked) as JSON lines, in chunks, read in a reader thread."""
        statements = [query.search(graph, request)]
        if request.with_edges:
            statements.append(query.search_edges(graph, request))
        for statement in statements:
            cursor = await self._read(lambda db, s=statement: db.execute(s.text, s.params))  # type: ignore[misc]
            while rows := await self._read(lambda db, c=cursor: c.fetchmany(SEARCH_CHUNK)):  # type: ignore[misc]
                yield [line for (line,) in rows]

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]:
        def run(db: sqlite3.Connection) -> list[Any]:
            statement = query.aggregate(graph, request)
            try:
                return db.execute(statement.text, statement.params).fetchall()
            except sqlite3.OperationalError as e:
                if "integer overflow" not in str(e):
                    raise
                statement = query.aggregate(graph, request, exact=False)
                return db.execute(statement.text, statement.params).fetchall()

        return aggregate_rows(request, await self._read(run))

    # ---- export and import ------------------------------------------------------------------------

    async def dump(self, graph: str) -> AsyncIterator[list[Record]]:
        sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM nodes WHERE graph = ? ORDER BY id"
        cursor = await self._read(lambda db: db.execute(sql, (graph,)))
        while rows := await self._read(lambda db: cursor.fetchmany(SEARCH_CHUNK)):
            yield [_record(row) for row in rows]

    async def dump_edges(self, graph: str) -> AsyncIterator[list[EdgeRecord]]:
        sql = "SELECT from_id, to_id, edge_type FROM edges WHERE graph = ? ORDER BY edge_type, from_id, to_id"
        cursor = await self._read(lambda db: db.execute(sql, (graph,)))
        while rows := await self._read(lambda db: cursor.fetchmany(SEARCH_CHUNK)):
            yield [(f, t, cast(EdgeType, e)) for f, t, e in rows]

    async def load(self, graph: str, nodes: list[Record], edges: list[EdgeRecord]) -> None:
        columns = ", ".join(RECORD_COLUMNS)
        marks = ", ".join("?" * (len(RECORD_COLUMNS) + 1))
        node_rows = [(graph, *_row(r)) for r in nodes]
        edge_rows = [(graph, *e) for e in edges]

        def load(db: sqlite3.Connection) -> None:
            db.executemany(f"INSERT OR REPLACE INTO nodes (graph, {columns}) VALUES ({marks})", node_rows)
            db.executemany("INSERT OR IGNORE INTO edges (graph, from_id, to_id, edge_type) VALUES (?,?,?,?)", edge_rows)

        async with self._write_lock:
            await self._write(lambda db: _in_transaction(db, lambda: load(db)))

    # ---- threads ------------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, fn, self._write_db)
        except sqlite3.Error as e:
            raise StoreError(f"graph store {self.path}: {e}") from e

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._with_reader, fn)
        except sqlite3.Error as e:
            raise StoreError(f"graph store {self.path}: {e}") from e

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path, self._durability)
        return fn(db)


RECORD_COLUMNS = (
    "id", "kind", "cloud", "account", "region", "name", "ctime", "expires", "protected", "clean", "cleaned",
    "clean_reason", "event_log", "replace_root", "reported", "metadata",
)  # fmt: skip
_JSON_COLUMNS = {"event_log", "reported", "metadata"}
_BOOL_COLUMNS = {"protected", "clean", "cleaned"}


def _record(row: tuple[Any, ...]) -> Record:
    record = dict(zip(RECORD_COLUMNS, row, strict=True))
    for column in _BOOL_COLUMNS:
        record[column] = bool(record[column])
    for column in _JSON_COLUMNS:
        record[column] = json.loads(record[column] or "[]")
    return record


def _row(record: Record) -> tuple[Any, ...]:
    return tuple(
        json.dumps(record[c], separators=(",", ":"), ensure_ascii=False) if c in _JSON_COLUMNS
        else int(record[c]) if c in _BOOL_COLUMNS else record[c]
        for c in RECORD_COLUMNS
    )  # fmt: skip


def _drop(task: asyncio.Task[None]) -> None:
    """Stop waiting for a task; if it has ended, its error (if any) is taken so that it is not logged as lost."""
    if not task.cancel() and not task.cancelled():
        task.exception()


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _in_transaction(db: sqlite3.Connection, fn: Callable[[], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        db.execute("COMMIT")
        return result
    except BaseException:
        _rollback(db)  # a failed COMMIT may have rolled back already: keep its error, not ROLLBACK's
        raise


def _patch(db: sqlite3.Connection, graph: str, patches: list[NodePatch]) -> tuple[int, list[str]]:
    updated, missing = 0, []
    for p in patches:
        row = db.execute("SELECT event_log, reported FROM nodes WHERE graph = ? AND id = ?", (graph, p.id)).fetchone()
        if row is None:
            missing.append(p.id)
            continue
        sets: list[str] = []
        params: list[Any] = []
        if p.cleaned is not None:
            sets.append("cleaned = ?")
            params.append(int(p.cleaned))
        if p.clean is not None:  # lifting a mark drops its reason too; setting one keeps the stored reason
            sets.append("clean = 1" if p.clean else "clean = 0, clean_reason = NULL")
        if p.event_log:
            sets.append("event_log = ?")
            params.append(json.dumps([*json.loads(row[0] or "[]"), *p.event_log]))
        if p.tags:
            reported = json.loads(row[1])
            tags = dict(reported.get("tags") or {})
            for name, value in p.tags.items():
                if value is None:
                    tags.pop(name, None)
                else:
                    tags[name] = value
            reported["tags"] = tags
            sets.append("reported = ?, expires = ?")  # expiry follows the tags, as a merge derives it
            params += [json.dumps(reported, separators=(",", ":")), reported_expires(reported)]
        if sets:
            db.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE graph = ? AND id = ?", [*params, graph, p.id])
        updated += 1
    return updated, missing
