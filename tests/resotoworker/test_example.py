"""The example cloud: deterministic generation, the state file, and the collector over it."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from resotolib.graph import Node
from resotoworker.collector import CollectorContext, GraphBatch, load_collectors
from resotoworker.collectors import example
from resotoworker.collectors.example import ExampleCollector
from resotoworker.collectors.example_cloud import (
    STATE_FILE,
    CloudSpec,
    ExampleCloud,
    ResourceInUse,
    ResourceNotFound,
    generate_region,
    write_atomically,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = CloudSpec(seed=42, accounts=2, regions=2, resources=200, now=NOW)


def test_generation_is_a_pure_function_of_the_spec() -> None:
    assert list(generate_region(SPEC, 1, 1)) == list(generate_region(SPEC, 1, 1))
    other_seed = CloudSpec(seed=7, accounts=2, regions=2, resources=200, now=NOW)
    assert list(generate_region(SPEC, 1, 1)) != list(generate_region(other_seed, 1, 1))
    assert list(generate_region(SPEC, 0, 1)) != list(generate_region(SPEC, 1, 1))
    # a region does not depend on the sizes of the others
    bigger = CloudSpec(seed=42, accounts=5, regions=9, resources=200, now=NOW)
    assert list(generate_region(SPEC, 1, 1)) == list(generate_region(bigger, 1, 1))


def test_generated_resources_cover_every_case() -> None:
    resources = [r for a in range(2) for g in range(2) for r in generate_region(SPEC, a, g)]
    assert len(resources) == 800
    assert len({(r.kind, r.id) for r in resources}) == len({r.id for r in resources})
    kinds = Counter(r.kind for r in resources)
    assert set(kinds) == {"example_instance", "example_volume", "example_bucket"}
    expired = [r for r in resources if r.expires is not None and r.expires < NOW]
    later = [r for r in resources if r.expires is not None and r.expires > NOW]
    assert 0.1 < len(expired) / len(resources) < 0.35
    assert later and all(r.ctime <= NOW for r in resources)
    assert any("expiration" in r.tags for r in expired) and any("resoto:expires" in r.tags for r in expired)
    assert any("expiration" in r.tags for r in later) and any("resoto:expires" in r.tags for r in later)
    protected = [r for r in resources if r.protected]
    assert protected and all(r in expired and r.tags["resoto:protected"] == "true" for r in protected)
    attached = [r for r in resources if r.attached_to]
    assert attached and all(r.kind == "example_volume" for r in attached)
    instance = next(r for r in resources if r.kind == "example_instance")
    assert set(instance.fields) == {"instance_cores", "instance_memory", "instance_type", "instance_status"}


def test_attached_volumes_share_their_instance_expiry_and_protection() -> None:
    region = {r.id: r for r in generate_region(SPEC, 0, 0)}
    for volume in (r for r in region.values() if r.attached_to):
        instance = region[volume.attached_to or ""]
        assert instance.kind == "example_instance"
        assert (volume.expires, volume.protected, volume.tags) == (instance.expires, instance.protected, instance.tags)
        assert volume.fields["volume_status"] == "in-use"


def test_the_state_file_is_created_once_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "cloud" / STATE_FILE
    cloud = ExampleCloud.open(path, SPEC)
    state = json.loads(path.read_text())
    assert state["seed"] == 42 and state["created_at"] == NOW.isoformat() and state["deleted"] == {}
    later = CloudSpec(seed=1, accounts=9, regions=9, resources=1, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert ExampleCloud.open(path, later).spec == SPEC
    assert list(ExampleCloud.open(path, later).resources("example-account-1", "example-region-0")) == list(
        cloud.resources("example-account-1", "example-region-0")
    )


def test_delete_removes_a_resource_for_good(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    cloud = ExampleCloud.open(path, SPEC)
    account, region = "example-account-0", "example-region-1"
    bucket = next(r for r in cloud.resources(account, region) if r.kind == "example_bucket")
    assert cloud.delete(account, region, bucket.id) == bucket
    assert bucket.id not in {r.id for r in cloud.resources(account, region)}
    reopened = ExampleCloud.open(path, SPEC)
    assert bucket.id not in {r.id for r in reopened.resources(account, region)}
    assert len(list(reopened.resources(account, region))) == SPEC.resources - 1
    with pytest.raises(ResourceNotFound):
        reopened.delete(account, region, bucket.id)
    with pytest.raises(ResourceNotFound):
        reopened.delete(account, region, "i-9999999")
    with pytest.raises(ResourceNotFound):
        reopened.delete("example-account-7", region, bucket.id)


def test_an_attached_volume_goes_only_after_its_instance(tmp_path: Path) -> None:
    cloud = ExampleCloud.open(tmp_path / STATE_FILE, SPEC)
    account, region = "example-account-0", "example-region-0"
    volume = next(r for r in cloud.resources(account, region) if r.attached_to)
    with pytest.raises(ResourceInUse):
        cloud.delete(account, region, volume.id)
    cloud.delete(account, region, volume.attached_to or "")
    cloud.delete(account, region, volume.id)


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / STATE_FILE
    write_atomically(path, "old")

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def context(tmp_path: Path, **options: Any) -> CollectorContext:
    sizes = {"example_accounts": 2, "example_regions": 3, "example_resources": 30, "example_seed": 5}
    return CollectorContext(tmp_path, {**sizes, **options})


async def test_the_collector_is_found_by_entry_point(tmp_path: Path) -> None:
    [collector] = load_collectors(["example"], context(tmp_path))
    assert isinstance(collector, ExampleCollector)
    assert await collector.accounts() == ["example-account-0", "example-account-1"]
    assert (tmp_path / STATE_FILE).exists()


async def test_collect_account_batches_every_resource_with_delete_edges(tmp_path: Path) -> None:
    collector = ExampleCollector(context(tmp_path))
    reported: list[tuple[str, int, int]] = []

    async def progress(name: str, current: int, total: int) -> None:
        reported.append((name, current, total))

    batch = await collector.collect_account("example-account-1", progress)
    assert reported == [("example-account-1", n, 3) for n in (1, 2, 3)]
    kinds = Counter(n.kind for n in batch.nodes)
    assert kinds["region"] == 3 and kinds["account"] == 1 and kinds["cloud"] == 1
    assert sum(kinds[k] for k in ("example_instance", "example_volume", "example_bucket")) == 90
    by_id = {n.id: n for n in batch.nodes}
    delete_edges = [e for e in batch.edges if e.edge_type == "delete"]
    assert delete_edges
    for edge in delete_edges:
        instance, volume = by_id[edge.from_id], by_id[edge.to_id]
        assert (instance.kind, volume.kind) == ("example_instance", "example_volume")
    protected = [n for n in batch.nodes if n.metadata.get("protected")]
    tags = [n.reported["tags"] for n in protected]
    assert protected and all(isinstance(t, dict) and t["resoto:protected"] == "true" for t in tags)
    lines = batch.ndjson()
    assert len(lines) == len(batch.nodes) + len(batch.edges)


def as_found(batch: GraphBatch) -> list[Node]:
    """The batch's resources as the core's search returns them: with metadata.ancestors."""
    regions = {n.id: n.reported["id"] for n in batch.nodes if n.kind == "region"}
    parent = {e.to_id: e.from_id for e in batch.edges if e.edge_type == "default"}
    return [
        Node(
            id=n.id,
            reported=n.reported,
            metadata={"ancestors": {"cloud": batch.cloud, "account": batch.account, "region": regions[parent[n.id]]}},
        )
        for n in batch.nodes
        if n.kind.startswith("example_")
    ]


async def test_collector_delete_by_node(tmp_path: Path) -> None:
    collector = ExampleCollector(context(tmp_path))
    batch = await collector.collect_account("example-account-0", _no_progress)
    bucket = next(n for n in batch.nodes if n.kind == "example_bucket")
    node = next(n for n in as_found(batch) if n.id == bucket.id)
    await collector.delete(node)
    again = await ExampleCollector(context(tmp_path)).collect_account("example-account-0", _no_progress)
    assert bucket.id not in {n.id for n in again.nodes}
    # A worker that deleted it and died before writing `cleaned` back: the next cleanup succeeds.
    await ExampleCollector(context(tmp_path)).delete(node)
    unknown = node.model_copy(update={"reported": {**node.reported, "id": "no-such-bucket"}})
    with pytest.raises(ResourceNotFound, match="no resource"):
        await collector.delete(unknown)
    with pytest.raises(ValueError, match="ancestors"):
        await collector.delete(Node(id=bucket.id, reported=bucket.reported))


async def _no_progress(name: str, current: int, total: int) -> None:
    pass


async def test_concurrent_deletes_share_writes_of_the_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = ExampleCollector(context(tmp_path, example_resources=200))
    batch = await collector.collect_account("example-account-1", _no_progress)
    unattached = [n for n in as_found(batch) if n.reported.get("volume_status") != "in-use"]
    writes: list[str] = []

    def counting_write(path: Path, text: str) -> None:
        writes.append(text)
        write_atomically(path, text)

    monkeypatch.setattr(example, "write_atomically", counting_write)
    await asyncio.gather(*(collector.delete(n) for n in unattached))
    assert 1 <= len(writes) < len(unattached) / 10
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["deleted_count"] == len(unattached)
    left = await ExampleCollector(context(tmp_path)).collect_account("example-account-1", _no_progress)
    assert {n.reported.get("volume_status") for n in left.nodes if n.kind.startswith("example_")} == {"in-use"}
