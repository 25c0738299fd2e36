"""Metrics benchmark: one exporter update against the same GROUP BY statements run directly on SQLite.

Run it with ``python bench/metrics.py`` (``--sizes 100000`` for a quick run). For each graph size it
builds a graph in a temporary directory, starts a real ``resotocore`` process on it and measures, in
the same run and alternating so that both see the same warm page cache:

* **exporter update** -- ``Updater.update()`` as the exporter runs it on a generate_metrics action:
  every built-in metric definition as ``POST /graph/resoto/aggregate`` through ``CoreClient`` over
  loopback TCP, one after another, then the snapshot built from the rows and swapped in.
* **direct SQLite** -- the very statements the core runs for those requests
  (``resotocore.graph.query.aggregate``), executed one after another on the core's ``graph.db``
  through a connection opened like the core's own (same pragmas), rows fetched into Python.

The ratio exporter/direct is the price of the exporter path on top of the database work: HTTP, JSON
both ways, pydantic validation, and building the snapshot. Also shown: building the snapshot alone
from the rows (pure, no I/O) and rendering /metrics from it.

The graph: two clouds (example_* and aws_* kinds), accounts of five regions each, resources spread
over instances, volumes, buckets, snapshots and security groups; one in ten expired. It is written
with the core's store directly (``SqliteGraphStore.merge``, one merge per account, generated NDJSON),
before the core process starts. Figures are medians over a few updates after one warm-up; the whole
run takes a few minutes with both sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from resotocore.db.graph_sqlite import SqliteGraphStore, connect
from resotocore.graph import query
from resotolib.client import CoreClient
from resotolib.graph import AggregateRow
from resotolib.logs import setup_logging
from resotometrics.definition import MetricDefinition
from resotometrics.exporter import Exporter
from resotometrics.loader import load_definitions
from resotometrics.snapshot import Snapshot, build_snapshot
from resotometrics.update import Updater

GRAPH = "resoto"
SIZES = (100_000, 1_000_000)
REPEATS = {100_000: 7, 1_000_000: 3}
PER_ACCOUNT = 50_000
REGIONS = 5
CHUNK = 1 << 20
INSTANCE_TYPES = ("small", "medium", "large", "xlarge", "metal", "gpu")
STATUSES = ("running", "running", "stopped", "pending")


# ---- the graph ---------------------------------------------------------------------------------------


def account_lines(cloud: str, account: str, resources: int, rng: random.Random) -> Iterator[str]:
    """One account's merge batch: structure nodes, resources, then the containment edges."""
    prefix = "example" if cloud == "example" else "aws"
    kinds = {
        "example": ("example_instance", "example_volume", "example_bucket"),
        "aws": ("aws_ec2_instance", "aws_ec2_volume", "aws_s3_bucket", "aws_ec2_snapshot", "aws_ec2_security_group"),
    }[prefix]
    cloud_id, account_id = f"cloud-{cloud}", f"{cloud}-{account}"
    edges = [("root", cloud_id), (cloud_id, account_id)]
    yield json.dumps({"id": "root", "reported": {"kind": "graph_root", "id": "root", "name": "root"}})
    yield json.dumps({"id": cloud_id, "reported": {"kind": "cloud", "id": cloud, "name": cloud}})
    yield json.dumps(
        {
            "id": account_id,
            "reported": {"kind": "account", "id": account, "name": account},
            "metadata": {"replace": True},
        }
    )
    for r in range(REGIONS):
        region_id = f"{account_id}-r{r}"
        edges.append((account_id, region_id))
        yield json.dumps({"id": region_id, "reported": {"kind": "region", "id": f"region-{r}", "name": f"region-{r}"}})
    for k in range(resources):
        kind = kinds[k % len(kinds)]
        tags = {"owner": rng.choice(("alice", "bob", "carol"))}
        if k % 10 == 0:
            tags["resoto:expires"] = "2020-01-01T00:00:00Z"
        reported: dict[str, object] = {"kind": kind, "id": f"r{k}", "name": f"r{k}", "tags": tags}
        if kind.endswith("instance"):
            reported.update(instance_cores=rng.choice((1, 2, 4, 16)), instance_memory=rng.choice((2, 8, 16, 64)),
                            instance_type=rng.choice(INSTANCE_TYPES), instance_status=rng.choice(STATUSES))  # fmt: skip
        elif kind.endswith("volume"):
            reported.update(volume_size=rng.choice((8, 20, 100, 500)), volume_type=rng.choice(("ssd", "hdd")),
                            volume_status=rng.choice(("in-use", "available")))  # fmt: skip
        elif kind.endswith("snapshot"):
            reported.update(volume_size=rng.choice((8, 100)), snapshot_status="completed")
        node = f"{account_id}-{k}"
        edges.append((f"{account_id}-r{k % REGIONS}", node))
        yield json.dumps({"id": node, "reported": reported})
    for from_id, to_id in edges:
        yield json.dumps({"from": from_id, "to": to_id})


async def chunks(lines: Iterator[str]) -> AsyncIterator[bytes]:
    buffer: list[str] = []
    size = 0
    for line in lines:
        buffer.append(line)
        size += len(line) + 1
        if size >= CHUNK:
            yield ("\n".join(buffer) + "\n").encode()
            buffer, size = [], 0
    if buffer:
        yield ("\n".join(buffer) + "\n").encode()


async def build_graph(data_dir: Path, nodes: int) -> float:
    """Write a graph of about ``nodes`` resources with the core's store; returns the seconds it took."""
    started = time.perf_counter()
    store = SqliteGraphStore(data_dir / "graph.db")
    rng = random.Random(nodes)
    accounts = max(2, nodes // PER_ACCOUNT)
    try:
        for a in range(accounts):
            cloud = ("example", "aws")[a % 2]
            await store.merge(GRAPH, chunks(account_lines(cloud, f"account-{a}", nodes // accounts, rng)))
    finally:
        await store.close()
    return time.perf_counter() - started


# ---- the core process --------------------------------------------------------------------------------


class CoreProcess:
    """``python -m resotocore`` on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resotocore", "--port", "0", "--data-dir", str(self.data_dir),
            "--log-format", "json", "--catch-up", "none",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stderr = self.proc.stderr
        assert stderr is not None
        async with asyncio.timeout(60):
            while line := await stderr.readline():
                entry = json.loads(line)
                if entry.get("event") == "listening":
                    self._drain = asyncio.get_running_loop().create_task(self._read_rest(stderr))
                    return str(entry["url"])
        raise RuntimeError("resotocore exited before listening")

    async def _read_rest(self, stderr: asyncio.StreamReader) -> None:
        while await stderr.readline():
            pass

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, 30)


# ---- measuring ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    nodes: int
    build_graph: float
    exporter: float
    direct: float
    snapshot_only: float
    render: float
    series: int
    queries: int


def direct_rows(db_path: Path, definitions: Sequence[MetricDefinition], now: datetime) -> dict[str, list[AggregateRow]]:
    """The core's statements for each definition, on the SQLite file itself; rows fetched into Python."""
    db = connect(db_path)
    try:
        rows: dict[str, list[AggregateRow]] = {}
        for d in definitions:
            statement = query.aggregate(GRAPH, d.request(now))
            found = db.execute(statement.text, statement.params).fetchall()
            width = len(d.group_by)
            rows[d.name] = [
                AggregateRow(group=dict(zip(d.group_by, r[:width], strict=True)), values={"value": r[width]})
                for r in found
            ]
        return rows
    finally:
        db.close()


def samples_of(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in snapshot.families for s in f.samples}


async def measure(nodes: int, repeats: int) -> Figures:
    definitions = load_definitions()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        data_dir = Path(tmp)
        print(f"  building a graph of {nodes:,} resources ...", flush=True)
        built = await build_graph(data_dir, nodes)
        print(f"  built in {built:.1f}s; starting resotocore", flush=True)
        async with CoreProcess(data_dir) as url, CoreClient(url) as client:
            exporter = Exporter(definitions)
            now = datetime.now(UTC)
            updater = Updater(client, GRAPH, exporter, time_limit=600, clock=lambda: now)
            exporter_times, direct_times = [], []
            for attempt in range(repeats + 1):  # the first round warms both up and is not counted
                started = time.perf_counter()
                snapshot = await updater.update()
                exporter_time = time.perf_counter() - started
                started = time.perf_counter()
                rows = await asyncio.to_thread(direct_rows, data_dir / "graph.db", definitions, now)
                direct_time = time.perf_counter() - started
                if attempt:
                    exporter_times.append(exporter_time)
                    direct_times.append(direct_time)
            direct_snapshot = build_snapshot(definitions, rows, now)
            if samples_of(direct_snapshot) != samples_of(snapshot):
                raise RuntimeError("the exporter's snapshot differs from the direct query's")
            build_times, render_times = [], []
            for _ in range(max(5, repeats)):
                started = time.perf_counter()
                build_snapshot(definitions, rows, now)
                build_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                exporter.render()
                render_times.append(time.perf_counter() - started)
    return Figures(
        nodes, built, statistics.median(exporter_times), statistics.median(direct_times),
        statistics.median(build_times), statistics.median(render_times), snapshot.series, len(definitions),
    )  # fmt: skip


def report(figures: list[Figures]) -> None:
    print()
    print(f"{'resources':>10} {'queries':>7} {'series':>6} {'exporter update':>15} {'direct SQLite':>13} "
          f"{'ratio':>6} {'snapshot only':>13} {'render':>8} {'graph build':>11}")  # fmt: skip
    for f in figures:
        print(
            f"{f.nodes:>10,} {f.queries:>7} {f.series:>6} {f.exporter * 1000:>12.1f} ms {f.direct * 1000:>10.1f} ms "
            f"{f.exporter / f.direct:>6.2f} {f.snapshot_only * 1000:>10.2f} ms {f.render * 1000:>5.2f} ms "
            f"{f.build_graph:>9.1f} s"
        )
    print("\nratio = exporter update / direct SQLite, both medians from the same run.")
    if len(figures) > 1:
        first, last = figures[0], figures[-1]
        scale = last.nodes / first.nodes
        print(
            f"{scale:.0f}x the resources: exporter {last.exporter / first.exporter:.1f}x slower, "
            f"direct SQLite {last.direct / first.direct:.1f}x slower."
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="graph sizes, comma separated")
    args = parser.parse_args()
    setup_logging("console", "warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = []
    for size in sizes:
        print(f"{size:,} resources:", flush=True)
        figures.append(await measure(size, REPEATS.get(size, 3)))
    report(figures)


if __name__ == "__main__":
    asyncio.run(main())
