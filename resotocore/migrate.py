"""Export and import of all stored state as NDJSON, to move between backends (SQLite → ArangoDB).

One JSON object per line, each with a ``type``: first ``header`` (format and version), then every
``subscriber``, every ``run`` with its steps (in the order the runs were first stored, so history
keeps its order), the wait queue (``queued``), ``trigger_time``s, then per graph its ``node``
records and ``edge``s, and last ``end`` with the count of each type. The same state always exports
to the same text.

Import checks the whole input before it writes anything (standard input is spooled to a temporary
file first): a broken or truncated file imports nothing. It refuses a store that holds any state
unless ``force`` is set; then it merges: records with the same key (subscriber id, run id, workflow
of a queued run, trigger key, node id, edge) are replaced, everything else stays.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog
from pydantic import ValidationError

from resotocore.config import CoreConfig
from resotocore.db.backends import open_stores
from resotocore.db.graph_docs import Record, compact
from resotocore.db.graph_store import EdgeRecord, GraphStore
from resotocore.db.store import Changes, QueuedRun, Store
from resotocore.workflow.codec import load_run, run_dict
from resotolib.protocol import Subscriber

log = structlog.get_logger(__name__)

FORMAT = "resotocore-export"
VERSION = 1
BATCH = 500
TYPES = ("subscriber", "run", "queued", "trigger_time", "node", "edge")
RECORD_KEYS = {
    "id", "kind", "cloud", "account", "region", "name", "ctime", "expires", "protected", "clean", "cleaned",
    "clean_reason", "event_log", "replace_root", "reported", "metadata",
}  # fmt: skip


class MigrationError(ValueError):
    """The source holds nothing to export, the input cannot be imported, or the target refuses it;
    nothing was written."""


# ---- export --------------------------------------------------------------------------------------


async def export_lines(store: Store, graphs: GraphStore) -> AsyncIterator[str]:
    """Every line of an export of `store` and `graphs`."""
    counts: Counter[str] = Counter()

    def line(kind: str, **fields: Any) -> str:
        counts[kind] += 1
        return compact({"type": kind, **fields})

    yield compact({"type": "header", "format": FORMAT, "version": VERSION})
    for subscriber in await store.subscribers():
        yield line("subscriber", data=subscriber.model_dump(mode="json"))
    async for runs in store.every_run():
        for run in runs:
            yield line("run", data=run_dict(run))
    for queued in await store.queue():
        yield line("queued", workflow_id=queued.workflow_id, trigger=queued.trigger, at=queued.queued_at.isoformat())
    for key, at in sorted((await store.trigger_times()).items()):
        yield line("trigger_time", key=key, at=at.isoformat())
    for graph in await graphs.graphs():
        async for records in graphs.dump(graph):
            for record in records:
                yield line("node", graph=graph, data=record)
        async for edges in graphs.dump_edges(graph):
            for from_id, to_id, edge_type in edges:
                yield line("edge", graph=graph, **{"from": from_id, "to": to_id, "edge_type": edge_type})
    yield compact({"type": "end", "counts": {kind: counts[kind] for kind in TYPES}})


def require_store(config: CoreConfig) -> None:
    """Refuse a data directory without the core's database: opening it would create an empty store, and a
    mistyped ``--data-dir`` would export nothing, successfully, and leave empty database files behind."""
    if config.arango_url is None and not config.database.exists():
        raise MigrationError(f"nothing to export: {config.data_dir} holds no store ({config.database.name} is missing)")


@contextmanager
def output_file(path: Path) -> Iterator[IO[str]]:
    """Where an export goes. A regular file (or a new one) is replaced only when the block succeeds, so a
    failed export leaves an earlier one as it was and never a half-written one; the export is written
    next to it under a unique name, with the earlier file's permissions (a new one: owner only, since it
    holds the whole inventory). Anything else (a symlink, a pipe, a device) is written to as it is."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with path.open("w", encoding="utf-8") as out:
            yield out
        return
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    part = Path(name)
    try:
        if path.exists():
            part.chmod(stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


async def export(config: CoreConfig, out: IO[str]) -> dict[str, int]:
    """Write the export of the backend `config` selects to `out`; answers the count of each type."""
    require_store(config)
    counts: Counter[str] = Counter()
    async with open_stores(config, create=False) as (store, graphs):  # a database the server lacks: refused
        async for text in export_lines(store, graphs):
            out.write(text + "\n")
            counts[json.loads(text)["type"]] += 1
    out.flush()
    result = {kind: counts[kind] for kind in TYPES}
    log.info("export_finished", **result)
    return result


# ---- import --------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if text.strip():
                try:
                    value = json.loads(text)
                except ValueError:
                    raise MigrationError(f"line {number}: not valid JSON") from None
                if not isinstance(value, dict) or not isinstance(value.get("type"), str):
                    raise MigrationError(f"line {number}: not an export record (no type)")
                yield number, value


def _parse(number: int, value: dict[str, Any]) -> Any:
    """The typed content of one record; raises MigrationError naming the line."""
    try:
        match value["type"]:
            case "subscriber":
                return Subscriber.model_validate(value["data"])
            case "run":
                return load_run(value["data"])
            case "queued":
                return QueuedRun(str(value["workflow_id"]), str(value["trigger"]), datetime.fromisoformat(value["at"]))
            case "trigger_time":
                return str(value["key"]), datetime.fromisoformat(value["at"])
            case "node":
                record = value["data"]
                if not isinstance(record, dict) or set(record) != RECORD_KEYS or not isinstance(value["graph"], str):
                    raise MigrationError(f"line {number}: a node record needs graph and exactly {sorted(RECORD_KEYS)}")
                return value["graph"], record
            case "edge":
                if value["edge_type"] not in ("default", "delete"):
                    raise MigrationError(f"line {number}: edge_type must be default or delete")
                return str(value["graph"]), (str(value["from"]), str(value["to"]), value["edge_type"])
            case other:
                raise MigrationError(f"line {number}: unknown record type {other!r}")
    except (KeyError, TypeError, ValueError, ValidationError) as e:
        if isinstance(e, MigrationError):
            raise
        raise MigrationError(f"line {number}: invalid {value['type']} record: {_short(e)}") from None


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return f"missing {error}" if isinstance(error, KeyError) else str(error)


def check(path: Path) -> dict[str, int]:
    """Read the whole input: header first, every record valid, ``end`` last with matching counts."""
    counts: Counter[str] = Counter()
    header = end = False
    for number, value in _lines(path):
        if end:
            raise MigrationError(f"line {number}: records after the end record")
        if not header:
            if value != {"type": "header", "format": FORMAT, "version": VERSION}:
                raise MigrationError(f"line {number}: not a {FORMAT} version {VERSION} header")
            header = True
        elif value["type"] == "end":
            expected = {kind: counts[kind] for kind in TYPES}
            if value.get("counts") != expected:
                raise MigrationError(f"line {number}: the end record counts {value.get('counts')}, found {expected}")
            end = True
        else:
            _parse(number, value)
            counts[value["type"]] += 1
    if not end:
        raise MigrationError("the input ends before its end record (truncated?)")
    return {kind: counts[kind] for kind in TYPES}


async def is_empty(store: Store, graphs: GraphStore) -> bool:
    async for runs in store.every_run():
        if runs:
            return False
    return not (
        await store.subscribers() or await store.queue() or await store.trigger_times() or await graphs.graphs()
    )


class _Writer:
    """Batches records by type and writes them through the backends' ordinary write paths."""

    def __init__(self, store: Store, graphs: GraphStore) -> None:
        self.store, self.graphs = store, graphs
        self.changes = Changes()
        self.size = 0
        self.graph: str | None = None
        self.nodes: list[Record] = []
        self.edges: list[EdgeRecord] = []

    async def add(self, kind: str, item: Any) -> None:
        if kind in ("node", "edge"):
            graph, record = item
            if graph != self.graph:
                await self.flush()
                self.graph = graph
            (self.nodes if kind == "node" else self.edges).append(record)
        else:
            match kind:
                case "subscriber":
                    self.changes.subscribers.append(item)
                case "run":
                    self.changes.add_run(item)
                case "queued":
                    self.changes.queued.append(item)
                case _:
                    self.changes.trigger_times[item[0]] = item[1]
        self.size += 1
        if self.size >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.size:
            await self.store.commit(self.changes)
            if self.graph is not None and (self.nodes or self.edges):
                await self.graphs.load(self.graph, self.nodes, self.edges)
        self.changes, self.size, self.nodes, self.edges = Changes(), 0, [], []


async def import_file(config: CoreConfig, path: Path, force: bool = False) -> dict[str, int]:
    """Check `path`, then write it into the backend `config` selects; answers the count of each type."""
    counts = check(path)
    async with open_stores(config) as (store, graphs):
        if not force and not await is_empty(store, graphs):
            raise MigrationError("the target store already holds state: import into an empty one, or use --force")
        writer = _Writer(store, graphs)
        for number, value in _lines(path):
            if value["type"] in TYPES:
                await writer.add(value["type"], _parse(number, value))
        await writer.flush()
    log.info("import_finished", forced=force, **counts)
    return counts


def spooled(source: str, copy: Callable[[IO[str], IO[str]], None] = shutil.copyfileobj) -> Path:
    """A file to read twice: `source` itself, or standard input (``-``) copied to a temporary file."""
    if source != "-":
        return Path(source)
    with tempfile.NamedTemporaryFile("w", suffix=".ndjson", delete=False, encoding="utf-8") as spool:
        copy(sys.stdin, spool)
    return Path(spool.name)
