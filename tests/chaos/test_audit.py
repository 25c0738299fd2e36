"""The ground the chaos audits stand on: the example collector's deletes are on disk and journaled when
they return; and each audit does catch what it is there to catch (a half merge, a mix of two states, a
double delete, an unmarked delete, a lost or duplicated run)."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from resotolib.graph import Node
from resotoworker.collector import CollectorContext, GraphBatch
from resotoworker.collectors.example import ExampleCollector
from resotoworker.collectors.example_cloud import STATE_FILE, ExampleCloud, Resource
from tests.chaos.audit import acknowledged, audit_deletes, audit_runs
from tests.chaos.cloud import AccountView, CloudState, Deletion, snapshot_problems

ACCOUNT, REGION = "example-account-0", "example-region-0"


def collector(tmp_path: Path) -> ExampleCollector:
    options = {"example_accounts": 1, "example_regions": 1, "example_resources": 60}
    return ExampleCollector(CollectorContext(tmp_path, {**options, "example_journal": tmp_path / "deletes.jsonl"}))


def marked(batch: GraphBatch) -> list[Node]:
    """The batch's unattached resources as the cleanup gets them: with ancestors, marked for cleanup."""
    attached = {e.to_id for e in batch.edges if e.edge_type == "delete"}
    ancestors = {"cloud": "example", "account": ACCOUNT, "region": REGION}
    return [
        Node(
            id=n.id,
            reported=n.reported,
            desired={"clean": True},
            metadata={"ancestors": ancestors, "clean_reason": "expired", "protected": False},
        )
        for n in batch.nodes
        if n.kind.startswith("example_") and n.id not in attached
    ]


async def _no_progress(name: str, current: int, total: int) -> None:
    pass


async def test_a_delete_is_on_disk_and_journaled_when_it_returns(tmp_path: Path) -> None:
    cloud = collector(tmp_path)
    nodes = marked(await cloud.collect_account(ACCOUNT, _no_progress))

    async def delete(node: Node) -> None:
        await cloud.delete(node)
        on_disk = ExampleCloud.load(tmp_path / STATE_FILE)  # read before anything else runs
        assert node.reported["id"] not in {r.id for r in on_disk.resources(ACCOUNT, REGION)}

    await asyncio.gather(*(delete(n) for n in nodes))  # concurrent: they share writes of the state file
    journal = [json.loads(line) for line in (tmp_path / "deletes.jsonl").read_text().splitlines()]
    assert sorted(e["node_id"] for e in journal) == sorted(n.id for n in nodes)
    assert {(e["account"], e["region"], e["clean"], e["clean_reason"]) for e in journal} == {
        (ACCOUNT, REGION, True, "expired")
    }


async def test_a_delete_that_finds_the_resource_gone_is_not_a_second_deletion(tmp_path: Path) -> None:
    cloud = collector(tmp_path)
    nodes = marked(await cloud.collect_account(ACCOUNT, _no_progress))
    spec = expired(CloudState.read(tmp_path / STATE_FILE, tmp_path / "deletes.jsonl"))
    node = next(n for n in nodes if n.id in spec)
    await cloud.delete(node)  # this worker deleted it and was killed before it wrote `cleaned` back
    with capture_logs() as again:
        await cloud.delete(node)  # the next worker's cleanup deletes it again: gone already, no error
    first, second = os.getpid(), os.getpid() + 1
    done = {"event": "resource_deleted", "node_id": node.id}
    log = [(first, done), *((second, entry) for entry in again), (second, done)]
    assert acknowledged(log) == Counter({(first, node.id): 1})
    deleted = CloudState.read(tmp_path / STATE_FILE, tmp_path / "deletes.jsonl")
    assert len(deleted.journal) == 1 and audit_deletes(deleted, acknowledged(log)).problems == []
    assert audit_deletes(deleted, Counter({(first, node.id): 1, (second, node.id): 1})).double


def state(tmp_path: Path, deleted: list[str], journal: list[tuple[str, int]]) -> CloudState:
    """A cloud of one region; `journal`: (node id, pid) in order, each deleted an hour after expiring."""
    cloud = CloudState.read(_new_cloud(tmp_path), tmp_path / "none.jsonl")
    cloud.deleted = set(deleted)
    cloud.journal = [
        Deletion(i, _expired_at(cloud.resources[nid]), pid, ACCOUNT, nid, {"clean": True, "clean_reason": "expired"})
        for i, (nid, pid) in enumerate(journal)
    ]
    return cloud


def _new_cloud(tmp_path: Path) -> Path:
    spec_cloud = ExampleCloud.open(tmp_path / STATE_FILE, collector(tmp_path).spec())
    return spec_cloud.path


def _expired_at(resource: Resource) -> datetime:
    return (resource.expires or datetime.now(UTC)) + timedelta(hours=1)


def expired(cloud: CloudState) -> list[str]:
    return [
        nid for nid, r in cloud.resources.items() if r.expires and not r.protected and r.expires < datetime.now(UTC)
    ]


def test_the_snapshot_audit_sees_a_half_merge_and_a_mix_of_states(tmp_path: Path) -> None:
    first, second, third = expired(state(tmp_path, [], []))[:3]
    cloud = state(tmp_path, [first, second], [(first, 1), (second, 1)])
    every = set(cloud.resources)

    def graph(resources: set[str]) -> dict[str, AccountView]:
        return {ACCOUNT: AccountView(True, {REGION}, resources)}

    assert snapshot_problems(cloud, graph(every)) == []  # before both deletions
    assert snapshot_problems(cloud, graph(every - {first})) == []  # between them
    assert "a mix of states" in snapshot_problems(cloud, graph(every - {second}))[0]
    assert "missing from the graph" in snapshot_problems(cloud, graph(every - {first, third}))[0]
    assert "live in the graph but deleted" in snapshot_problems(cloud, graph(every - {first}), exact=True)[0]


def test_the_delete_audit_sees_double_unmarked_and_lost_deletes(tmp_path: Path) -> None:
    first, second = expired(state(tmp_path, [], []))[:2]
    cut_short = state(tmp_path, [first], [(first, 1), (first, 2)])  # pid 1 was killed before saving it
    audit = audit_deletes(cut_short, Counter({(2, first): 1}))
    assert audit.problems == [] and audit.redone == 1 and audit.effective == 1
    audit = audit_deletes(cut_short, Counter({(1, first): 1, (2, first): 1}))
    assert any("deleted twice" in p for p in audit.double)
    never_expiring = next(nid for nid, r in cut_short.resources.items() if r.expires is None)
    cut_short.journal.append(Deletion(9, datetime.now(UTC), 2, ACCOUNT, never_expiring, {"clean": True}))
    assert len(audit_deletes(cut_short, Counter()).unmarked) == 1
    lost = state(tmp_path, [second], [(first, 1)])
    assert len(audit_deletes(lost, Counter({(1, first): 1})).lost) == 2  # returned but not saved; not journaled


def test_the_run_audit_sees_lost_duplicated_and_unended_runs() -> None:
    def run(rid: str, status: str, error: str | None = None) -> dict[str, Any]:
        return {"id": rid, "status": status, "error": error, "step": "collect", "steps": []}

    history = [run("a", "failed", "steps failed: collect"), run("b", "running"), run("b", "running")]
    audit = audit_runs(history, ["a", "b", "c"], unanswered=0)
    assert audit.lost == ["c"] and audit.duplicated == ["b"]
    assert sum("never ended" in p for p in audit.problems) == 2
    assert audit_runs([run("x", "cancelled")], [], unanswered=0).unattributed == 1
    assert len(audit_runs([run("x", "cancelled")], [], unanswered=1).problems) == 1  # no recorded error
