"""Graph store benchmark: merging 100k and 1M nodes through a real core, against bare SQLite.

Run it with ``python bench/graph.py [--sizes 100000,1000000]``.

What is measured, in one run on the same machine:
* **core merge** -- a real ``resotocore`` process; the bench streams the NDJSON batch (nodes, then
  edges; one account flagged ``metadata.replace``) to ``POST /graph/resoto/merge`` and waits for the
  answer. That includes HTTP, validation, expiry, the containment walk and the atomic upsert. The
  body is encoded before the timer starts, as the bare rows are (``--live-client`` encodes it while
  sending instead: then the bench's own JSON encoding shares the machine's cores with the core).
* **bare** (the baseline of the ratio, target >= 0.5) -- ``executemany`` of exactly the rows the merge
  stored: every node row with all its columns (kind, cloud, account, region, expires, reported,
  metadata, ...) and every edge row, read back from the core's file after its merge (so both sides
  write the same bytes), put in the order of the NDJSON stream, and inserted in one transaction into a
  fresh file with the core's own schema (``graph_sqlite.SCHEMA``: same tables, same indexes) on a
  connection opened by the core's own ``graph_sqlite.connect`` (same pragmas). Preparing the rows is
  not timed. This is the floor of storing what a merge stores with SQLite from Python; the merge on
  top of it reads and checks the lines, computes expiry and ancestors and compares with the graph.
* **naive** (shown for comparison only) -- the earlier baseline: ``executemany`` of (node id, JSON
  line) into a table with nothing but a primary key. It writes far less than a merge has to (no edges,
  no columns, no indexes), so a ratio against it understates the merge.
* **core RSS** -- the core process's peak resident memory (VmHWM) after the largest merge
  (target: under 1 GiB at 1M nodes).
* **cleanup_plan** -- ``POST /graph/resoto/clean`` marking expired, unprotected resources of the
  whole graph, against the same UPDATE run directly on the core's SQLite file afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import aiohttp

from resotocore.db import graph_sqlite

ACCOUNTS = 10
REGIONS = 10
EXPIRED_EVERY = 10


def lines(total: int) -> Iterator[str]:
    """One account per 1/ACCOUNTS of the resources; nodes first, then containment edges."""
    per_region = max(1, total // (ACCOUNTS * REGIONS))
    edges: list[tuple[str, str]] = []
    yield json.dumps({"id": "root", "reported": {"kind": "graph_root", "id": "root", "name": "root"}})
    yield json.dumps({"id": "cloud", "reported": {"kind": "cloud", "id": "bench", "name": "bench"}})
    edges.append(("root", "cloud"))
    for a in range(ACCOUNTS):
        account = f"acc-{a}"
        node = {"id": account, "reported": {"kind": "account", "id": account, "name": account}}
        yield json.dumps({**node, "metadata": {"replace": True}})
        edges.append(("cloud", account))
        for r in range(REGIONS):
            region = f"{account}-r{r}"
            yield json.dumps({"id": region, "reported": {"kind": "region", "id": f"r{r}", "name": f"r{r}"}})
            edges.append((account, region))
            for i in range(per_region):
                rid = f"{region}-i{i}"
                tags = {"owner": f"team-{i % 7}"}
                if i % EXPIRED_EVERY == 0:
                    tags["expiration"] = "1h"
                reported = {
                    "kind": "bench_instance", "id": rid, "name": rid, "tags": tags,
                    "ctime": "2024-01-01T00:00:00+00:00", "instance_cores": i % 8 + 1, "instance_type": "m5.large",
                }  # fmt: skip
                yield json.dumps({"id": rid, "reported": reported})
                edges.append((region, rid))
    for from_id, to_id in edges:
        yield json.dumps({"from": from_id, "to": to_id, "edge_type": "default"})


def naive_insert(path: Path, total: int) -> float:
    """Seconds to executemany (node id, JSON line) of the batch into a table with only a primary key."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID")
    rows = [(json.loads(line).get("id"), line) for line in lines(total)]
    rows = [row for row in rows if row[0] is not None]
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO nodes (id, doc) VALUES (?, ?)", rows)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


class StoredRows(NamedTuple):
    node_columns: list[str]
    nodes: list[tuple[object, ...]]
    edges: list[tuple[str, str, str, str]]


def stored_rows(core_db: Path, graph: str, total: int) -> StoredRows:
    """The rows a merge of ``lines(total)`` stored in ``graph``, in the order of the NDJSON stream."""
    node_ids: list[str] = []
    edges: list[tuple[str, str, str, str]] = []
    for line in lines(total):
        doc = json.loads(line)
        if "reported" in doc:
            node_ids.append(doc["id"])
        else:
            edges.append((graph, doc["from"], doc["to"], doc.get("edge_type") or "default"))
    db = sqlite3.connect(f"file:{core_db}?mode=ro", uri=True)
    cursor = db.execute("SELECT * FROM nodes WHERE graph = ?", (graph,))
    columns = [c[0] for c in cursor.description]
    by_id = {row[1]: row for row in cursor}
    stored_edges = set(db.execute("SELECT graph, from_id, to_id, edge_type FROM edges WHERE graph = ?", (graph,)))
    db.close()
    if set(by_id) != set(node_ids) or stored_edges != set(edges):
        raise RuntimeError("the core stored other nodes or edges than the batch holds")
    return StoredRows(columns, [by_id[i] for i in node_ids], edges)


def bare_insert(path: Path, rows: StoredRows) -> float:
    """Seconds to executemany the stored rows (nodes, then edges) into the core's schema, in one transaction."""
    db = graph_sqlite.connect(path)
    db.executescript(graph_sqlite.SCHEMA)
    columns = ", ".join(rows.node_columns)
    marks = ", ".join("?" * len(rows.node_columns))
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO nodes ({columns}) VALUES ({marks})", rows.nodes)
    db.executemany("INSERT INTO edges (graph, from_id, to_id, edge_type) VALUES (?, ?, ?, ?)", rows.edges)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def chunks(total: int) -> Iterator[bytes]:
    """The NDJSON body in chunks of 2000 lines."""
    chunk: list[str] = []
    for line in lines(total):
        chunk.append(line)
        if len(chunk) >= 2000:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


async def body(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def start_core(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resotocore", "--port", "0", "--data-dir", str(data_dir), "--log-format", "json",
        "--log-level", "warning", stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    proc_log = await start_url(proc)
    return proc, proc_log


async def start_url(proc: asyncio.subprocess.Process) -> str:
    # the core logs "listening" at info; the bench runs it at warning, so ask the OS for the port
    for _ in range(200):
        await asyncio.sleep(0.05)
        port = listening_port(proc.pid)
        if port:
            return f"http://127.0.0.1:{port}"
    raise RuntimeError("resotocore did not start")


def listening_port(pid: int) -> int | None:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            return int(fields[1].split(":")[1], 16)
    return None


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def merge(session: aiohttp.ClientSession, url: str, total: int, live: bool) -> tuple[float, dict[str, int]]:
    parts: Iterable[bytes] = chunks(total) if live else list(chunks(total))
    started = time.perf_counter()
    async with session.post(f"{url}/graph/resoto/merge", data=body(parts)) as response:
        result = await response.json()
        if response.status != 200:
            raise RuntimeError(f"merge failed: {result}")
    return time.perf_counter() - started, result


async def clean(session: aiohttp.ClientSession, url: str) -> tuple[float, int]:
    request = {"filter": {"expired_before": "2030-01-01T00:00:00Z", "protected": False, "cleaned": False}}
    started = time.perf_counter()
    async with session.post(f"{url}/graph/resoto/clean", json={**request, "reason": "expired"}) as response:
        marked = (await response.json())["marked"]
    return time.perf_counter() - started, int(marked)


def bare_clean(path: Path) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        "UPDATE nodes SET clean = 0, clean_reason = NULL WHERE graph = 'resoto' AND clean = 1"
    )  # reset, not timed below
    db.execute("COMMIT")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        "UPDATE nodes SET clean = 1, clean_reason = 'expired' WHERE graph = 'resoto' AND clean = 0 "
        "AND expires IS NOT NULL AND expires < '2030-01-01T00:00:00Z' AND protected = 0 AND cleaned = 0"
    )
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


async def run(sizes: list[int], live: bool) -> None:
    print(f"{'nodes':>9} {'naive n/s':>11} {'bare n/s':>11} {'core n/s':>11} {'core s':>8} {'ratio':>6}"
          f" {'vs naive':>8} {'created':>9} {'core RSS':>10}")  # fmt: skip
    results = []
    for total in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
            naive = naive_insert(Path(tmp) / "naive.db", total)
            core_db = Path(tmp) / "core" / "graph.db"
            proc, url = await start_core(Path(tmp) / "core")
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
                    seconds, result = await merge(session, url, total, live)
                    rss = peak_rss_mib(proc.pid)
                    rows = stored_rows(core_db, "resoto", total)
                    clean_seconds, marked = await clean(session, url)
            finally:
                proc.terminate()
                await proc.wait()
            bare_clean_seconds = bare_clean(core_db)
            bare = bare_insert(Path(tmp) / "bare.db", rows)
            del rows
            nodes = result["created"]
            print(
                f"{nodes:>9} {nodes / naive:>11,.0f} {nodes / bare:>11,.0f} {nodes / seconds:>11,.0f} {seconds:>8.2f}"
                f" {bare / seconds:>6.2f} {naive / seconds:>8.2f} {nodes:>9} {rss:>6.0f} MiB"
            )
            results.append((nodes, clean_seconds, bare_clean_seconds, marked))
    print()
    print(f"{'nodes':>9} {'cleanup_plan':>13} {'bare UPDATE':>12} {'ratio':>6} {'marked':>8}")
    for nodes, clean_seconds, bare_clean_seconds, marked in results:
        ratio = bare_clean_seconds / clean_seconds
        print(f"{nodes:>9} {clean_seconds:>11.2f} s {bare_clean_seconds:>10.2f} s {ratio:>6.2f} {marked:>8}")
    print(
        "\nratio = bare time / core time (1.0: as fast as bare SQLite storing the same rows); vs naive: the same"
        " against the naive baseline.\nn/s: nodes per second (edges are written as well). Targets: merge ratio"
        " >= 0.5, RSS < 1024 MiB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated node counts")
    parser.add_argument(
        "--live-client",
        action="store_true",
        help="generate the NDJSON lines while sending them (the client then competes with the core for the CPU)",
    )
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.live_client))


if __name__ == "__main__":
    main()
