"""Core and exporter as real processes: after the metrics workflow, /metrics holds exactly what the graph
holds; a deleted graph empties every metric; scrapes never need the core."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from resotolib.client import CoreClient
from resotolib.graph import NodePatch
from resotolib.protocol import Event, parse_message
from resotometrics.definition import MetricDefinition
from resotometrics.loader import load_definitions
from resotoworker.collector import GraphBatch
from tests.resotometrics.support import MetricsProcess, Series, only, scrape
from tests.support import StartCore

StartMetrics = Callable[..., Awaitable[MetricsProcess]]

ODD = 'say "hi" \\ back\\slash\nnew line, ünïcødé 🚀 {a="b"} # # TYPE x counter'
PAST, FUTURE = "2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
CTIME = datetime(2020, 1, 1, tzinfo=UTC)
USER_METRICS = """
extend: true
metrics:
  - name: resoto_owned_resources_total
    help: "Resources by owner tag \\\\ with a \\"quoted\\" help"
    filter: {kinds: [example_instance, example_volume, example_bucket, aws_ec2_instance], cleaned: false}
    labels: {cloud: cloud, owner: reported.tags.owner}
  - name: resoto_largest_volume_bytes
    help: Largest volume.
    function: max
    path: reported.volume_size
    scale: 1073741824
    filter: {kinds: [example_volume, aws_ec2_volume]}
    labels: {cloud: cloud}
  - name: resoto_instances_seen
    help: Instances, as a counter.
    type: counter
    filter: {kinds: [example_instance, aws_ec2_instance]}
    labels: {account: account, cores: reported.instance_cores}
  - name: resoto_buckets_total
    help: Buckets per account (replaces the built-in metric).
    filter: {kinds: [example_bucket, aws_s3_bucket], cleaned: false}
    labels: {cloud: cloud, account: account}
"""


@dataclass(frozen=True)
class Placed:
    """A node of the test graph and where it lives (what the core derives from the containment edges)."""

    id: str
    cloud: str | None
    account: str | None
    region: str | None
    reported: dict[str, JsonValue]


class Inventory:
    """The test graph: batches built with the worker's GraphBatch, plus what the test expects of each node."""

    def __init__(self) -> None:
        self.batches: list[GraphBatch] = []
        self.placed: dict[str, Placed] = {}
        self.expired: set[str] = set()
        self.cleaned: set[str] = set()

    def account(self, cloud: str, account: str, name: str | None = None) -> GraphBatch:
        batch = GraphBatch(cloud, account, account_name=name)
        self.batches.append(batch)
        return batch

    def add(self, batch: GraphBatch, kind: str, region: str, pid: str, tags: dict[str, str], **fields: Any) -> str:
        nid = batch.resource(kind, region, pid, name=f"{pid} {ODD}", tags=tags, ctime=CTIME, **fields)
        node = next(n for n in reversed(batch.nodes) if n.id == nid)  # its region node may come after it
        self.placed[nid] = Placed(nid, batch.cloud, batch.account, region, node.reported)
        if tags.get("resoto:expires") == PAST or "expiration" in tags:
            self.expired.add(nid)
        return nid

    def nodes(self) -> list[Placed]:
        """Every node, the structure nodes (graph root, cloud, account, region) included."""
        placed = dict(self.placed)
        for batch in self.batches:
            for node in batch.nodes:
                if node.id not in placed:
                    cloud = batch.cloud if node.kind != "graph_root" else None
                    account = batch.account if node.kind in ("account", "region") else None
                    region = str(node.reported["id"]) if node.kind == "region" else None
                    placed[node.id] = Placed(node.id, cloud, account, region, node.reported)
        return list(placed.values())


def inventory() -> Inventory:
    """Two clouds, odd names, tags and label values everywhere; some resources expired, some cleaned."""
    inv = Inventory()
    owners = [ODD, "alice", "bob\\", 'c"d']
    lifecycles: list[dict[str, str]] = [{}, {"resoto:expires": PAST}, {"expiration": "1d"}, {"resoto:expires": FUTURE}]
    k = 0
    example = inv.account("example", f'acct "{ODD}"', ODD)
    other = inv.account("example", "example-account-2")
    for batch, regions in ((example, [f"region {ODD}", "ünï-région-1"]), (other, ["r1"])):
        for region in regions:
            for n in range(6):
                k += 1
                tags = {"owner": owners[k % 4], "Name": ODD, **lifecycles[n % 4]}
                iid = inv.add(
                    batch, "example_instance", region, f"i-{k}", tags, instance_cores=1 + k % 4,
                    instance_memory=2 ** (k % 4), instance_type=("ex.small", f'ex."{ODD}"')[k % 2],
                    instance_status=("running", "stopped")[n % 2], note=ODD,
                )  # fmt: skip
                vid = inv.add(
                    batch, "example_volume", region, f"vol-{k}", tags, volume_size=(8, 100, 500)[k % 3],
                    volume_type=("ssd", "hdd")[k % 2], volume_status="in-use",
                )  # fmt: skip
                inv.add(batch, "example_bucket", region, f"bucket-{k}", {"owner": owners[(k + 1) % 4]}, objects=k)
                if n == 4:
                    inv.cleaned.update((iid, vid))
    aws = inv.account("aws", "123456789012", "prod")
    inv.add(
        aws, "aws_ec2_instance", "us-east-1", "i-aws1", {"owner": "alice"}, instance_cores=2, instance_memory=0.5,
        instance_type="t3.nano", instance_status="running",
    )  # fmt: skip
    # memory unknown: the sum of its group is 0
    inv.add(aws, "aws_ec2_instance", "us-east-1", "i-aws2", {}, instance_cores=4, instance_status="pending")
    inv.add(aws, "aws_ec2_volume", "us-east-1", "vol-aws", {}, volume_size=30, volume_type="gp3", volume_status="ok")
    inv.add(aws, "aws_ec2_snapshot", "us-east-1", "snap-1", {}, volume_size=30, snapshot_status="completed")
    inv.add(aws, "aws_ec2_snapshot", "eu-west-1", "snap-2", {"resoto:expires": PAST}, snapshot_status=ODD)
    inv.add(aws, "aws_ec2_security_group", "us-east-1", "sg-1", {})
    inv.add(aws, "aws_s3_bucket", "eu-west-1", "bucket-aws", {})
    return inv


def resolve(node: Placed, path: str) -> JsonValue:
    match path:
        case "cloud" | "account" | "region":
            value: JsonValue = getattr(node, path)
            return value
        case "kind":
            return node.reported["kind"]
    value = node.reported
    for part in path.split(".")[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def label(value: JsonValue) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def expected(defs: Sequence[MetricDefinition], nodes: list[Placed], expired: set[str], cleaned: set[str]) -> Any:
    """What each metric must show, computed in plain Python from the nodes as built."""
    result: dict[Series, float] = {}
    for d in defs:
        assert d.filter.model_dump(exclude_defaults=True).keys() <= {"kinds", "cleaned"}, d
        groups: dict[tuple[str, ...], list[Placed]] = defaultdict(list)
        for node in nodes:
            if d.filter.kinds is not None and node.reported["kind"] not in d.filter.kinds:
                continue
            if d.filter.cleaned is not None and (node.id in cleaned) != d.filter.cleaned:
                continue
            if d.expired and node.id not in expired:
                continue
            groups[tuple(label(resolve(node, path)) for path in d.labels.values())].append(node)
        sample = d.name if d.type == "gauge" else d.name.removesuffix("_total") + "_total"
        for key, members in groups.items():
            values = [v for m in members if isinstance(v := resolve(m, d.path or "kind"), int | float)]
            if d.function == "max" and not values:
                continue
            value = {"count": len(members), "sum": sum(values), "max": max(values, default=0)}[d.function]
            result[(sample, frozenset(zip(d.labels, key, strict=True)))] = value * d.scale
    return result


async def run_workflow(client: CoreClient, workflow: str) -> dict[str, Any]:
    """Run a workflow and wait for its task_end event; returns the ended task."""
    async with client.websocket("events", params={"show": "task_end"}) as events:
        started = await client.run_workflow(workflow)
        assert started["status"] == "started", started
        async with asyncio.timeout(30):
            async for frame in events:
                message = parse_message(frame.data)
                if isinstance(message, Event) and message.data.get("task") == started["task_id"]:
                    break
    return await client.task(started["task_id"])


def resoto(samples: dict[Series, float]) -> dict[Series, float]:
    return {key: value for key, value in samples.items() if not key[0].startswith("resotometrics_")}


async def test_metrics_equal_the_graph_and_survive_a_failing_core(
    core_process: StartCore, metrics_process: StartMetrics, tmp_path: Path
) -> None:
    core = await core_process()
    inv = inventory()
    user_file = tmp_path / "metrics.yaml"
    user_file.write_text(USER_METRICS)
    definitions = load_definitions(user_file)
    async with CoreClient(core.url) as client:
        for batch in inv.batches:
            await client.merge("resoto", batch.ndjson())
        patched = await client.patch_nodes("resoto", [NodePatch(id=nid, cleaned=True) for nid in inv.cleaned])
        assert patched["updated"] == len(inv.cleaned)

        exporter = await metrics_process(
            "--resotocore-uri", core.url, "--web-port", "0", "--metrics-file", str(user_file), "--timeout", "30"
        )
        await exporter.wait_for("subscriber_connected")
        _, before = await scrape(exporter.url)
        assert resoto(before) == {}
        assert only(before, "resotometrics_last_success_timestamp_seconds") == {frozenset(): 0.0}

        # a run: every metric equals what the graph holds, odd label values included
        task = await run_workflow(client, "metrics")
        assert task["success"], f"{task}\n{exporter.tail()}"
        text, after = await scrape(exporter.url)
        want = expected(definitions, inv.nodes(), inv.expired, inv.cleaned)
        assert resoto(after) == want
        assert len(want) > 60 and 'acct \\"say \\"hi\\" \\\\ back\\\\slash\\nnew line' in text
        owners = {dict(labels).get("owner") for (name, labels) in want if name == "resoto_owned_resources_total"}
        assert ODD in owners and 'c"d' in owners and "bob\\" in owners
        assert only(after, "resotometrics_update_metrics_seconds_count") == {frozenset(): 1.0}
        assert only(after, "resotometrics_last_success_timestamp_seconds")[frozenset()] > 0

        # the graph deleted: the update succeeds, every metric is there without samples
        await client.delete_graph("resoto")
        emptied = await run_workflow(client, "metrics")
        assert emptied["success"], f"{emptied}\n{exporter.tail()}"
        text, kept = await scrape(exporter.url)
        assert resoto(kept) == {}
        types = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE resoto_")}
        assert types == {d.name if d.type == "gauge" else d.name.removesuffix("_total") + "_total" for d in definitions}
        assert only(kept, "resotometrics_update_failures_total") == {frozenset(): 0.0}
        assert only(kept, "resotometrics_update_metrics_seconds_count") == {frozenset(): 2.0}
        last_success = only(after, "resotometrics_last_success_timestamp_seconds")[frozenset()]
        assert only(kept, "resotometrics_last_success_timestamp_seconds")[frozenset()] >= last_success

    # between runs, scrapes never need the core
    core.kill()
    await core.wait()
    for _ in range(3):
        _, without_core = await scrape(exporter.url)
        assert without_core == kept

    exporter.signal(signal.SIGTERM)
    assert await exporter.wait() == 0
    assert exporter.log[-1]["event"] == "metrics_stopped"


async def test_exporter_signs_its_requests_for_a_core_with_a_psk(
    core_process: StartCore, metrics_process: StartMetrics
) -> None:
    core = await core_process("--psk", "s3cret")
    batch = GraphBatch("example", "acc-1")
    batch.resource("example_instance", "r1", "i-1", instance_cores=2, instance_memory=4, instance_type="ex.small")
    async with CoreClient(core.url, psk="s3cret") as client:
        await client.merge("resoto", batch.ndjson())
        wrong = await metrics_process("--resotocore-uri", core.url, "--psk", "wrong", "--web-port", "0")
        refused = await wrong.wait_for("access_refused")
        assert "401" in refused["reason"], refused
        exporter = await metrics_process(
            "--resotocore-uri", core.url, "--psk", "s3cret", "--web-port", "0", "--subscriber-id", "m1"
        )
        await exporter.wait_for("subscriber_connected")
        task = await run_workflow(client, "metrics")
        assert task["success"], f"{task}\n{exporter.tail()}"
    _, samples = await scrape(exporter.url)
    assert sum(only(samples, "resoto_instances_total").values()) == 1.0
