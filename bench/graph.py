"""Graph store benchmark: merging 100k and 1M nodes through a real core, against bare SQLite.

Run it with ``python bench/graph.py [--sizes 100000,1000000]``.

What is measured, in one run on the same machine:
* **bare** -- ``executemany`` of the same rows (node id and its JSON line) into a plain SQLite table
  in WAL mode, in one transaction: the floor of writing these rows with SQLite from Python.
* **core merge** -- a real ``resotocore`` process; the bench streams the NDJSON batch (nodes, then
  edges; one account flagged ``metadata.replace``) to ``POST /graph/resoto/merge`` and waits for the
  answer. That includes HTTP, validation, expiry, the containment walk and the atomic upsert.
  The rate ratio core/bare is reported (target: >= 0.5).
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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

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


def bare_insert(path: Path, total: int) -> float:
    """Seconds to executemany the node rows of the same batch into a plain WAL table."""
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


async def body(total: int) -> AsyncIterator[bytes]:
    chunk: list[str] = []
    for line in lines(total):
        chunk.append(line)
        if len(chunk) >= 2000:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


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


async def merge(session: aiohttp.ClientSession, url: str, total: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    async with session.post(f"{url}/graph/resoto/merge", data=body(total)) as response:
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


async def run(sizes: list[int]) -> None:
    print(f"{'nodes':>9} {'bare rows/s':>13} {'core rows/s':>13} {'ratio':>6} {'created':>9} {'core RSS':>10}")
    results = []
    for total in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-graph-") as tmp:
            bare = bare_insert(Path(tmp) / "bare.db", total)
            proc, url = await start_core(Path(tmp) / "core")
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
                    seconds, result = await merge(session, url, total)
                    rss = peak_rss_mib(proc.pid)
                    clean_seconds, marked = await clean(session, url)
            finally:
                proc.terminate()
                await proc.wait()
            bare_clean_seconds = bare_clean(Path(tmp) / "core" / "graph.db")
            nodes = result["created"]
            ratio = bare / seconds
            print(
                f"{nodes:>9} {nodes / bare:>13,.0f} {nodes / seconds:>13,.0f} {ratio:>6.2f} {nodes:>9} {rss:>7.0f} MiB"
            )
            results.append((nodes, clean_seconds, bare_clean_seconds, marked))
    print()
    print(f"{'nodes':>9} {'cleanup_plan':>13} {'bare UPDATE':>12} {'ratio':>6} {'marked':>8}")
    for nodes, clean_seconds, bare_clean_seconds, marked in results:
        ratio = bare_clean_seconds / clean_seconds
        print(f"{nodes:>9} {clean_seconds:>11.2f} s {bare_clean_seconds:>10.2f} s {ratio:>6.2f} {marked:>8}")
    print("\nratio = bare time / core time (1.0: as fast as bare SQLite); targets: merge >= 0.5, RSS < 1024 MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated node counts")
    args = parser.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
