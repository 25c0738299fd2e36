"""The example cloud as the audit sees it: every resource its spec generates, what its state file says
is deleted, and the deletion journal (one line per deletion, appended before the state file is saved).

A deletion is *effective* when the state file holds it: then its last journal line is the one that
counted (an earlier line of the same resource was cut short by a kill before the save, or the resource
could not have been deleted again). Deletions only ever add up, so the cloud's history of an account
is the sequence of its effective deletions in journal order, and any state of the account that ever
existed misses exactly a prefix of that sequence.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from resotolib.graph import node_id
from resotoworker.collectors.example_cloud import CloudSpec, ExampleCloud, Resource, generate_region

CLOUD = "example"
SHOWN = 3
"""Ids named in one problem message."""


@dataclass(frozen=True)
class Deletion:
    """One journal line."""

    position: int
    at: datetime
    pid: int
    account: str
    node_id: str
    entry: dict[str, Any]


@dataclass
class CloudState:
    spec: CloudSpec
    resources: dict[str, Resource]
    """Node id to every resource the spec generates, deleted ones too."""
    account_of: dict[str, str]
    deleted: set[str]
    journal: list[Deletion]

    @classmethod
    def read(cls, state_file: Path, journal_file: Path) -> CloudState:
        """The state file first, then the journal: every deletion the state file holds is journaled by then."""
        cloud = ExampleCloud.load(state_file)
        spec, resources, account_of, deleted = cloud.spec, {}, {}, set()
        for a, account in enumerate(spec.account_ids()):
            for r, region in enumerate(spec.region_ids()):
                bits = cloud.deleted.get(f"{account}/{region}", bytearray())
                for res in generate_region(spec, a, r):
                    nid = node_id(res.kind, CLOUD, account, region, res.id)
                    resources[nid], account_of[nid] = res, account
                    if res.index // 8 < len(bits) and bits[res.index // 8] & (1 << (res.index % 8)):
                        deleted.add(nid)
        journal = []
        if journal_file.exists():  # a line still being written (no newline yet) is left for the next read
            for position, line in enumerate(journal_file.read_text().split("\n")[:-1]):
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["at"])
                journal.append(Deletion(position, at, entry["pid"], entry["account"], entry["node_id"], entry))
        return cls(spec, resources, account_of, deleted, journal)

    def ids_of(self, account: str) -> set[str]:
        return {nid for nid, a in self.account_of.items() if a == account}

    def effective_order(self, account: str) -> list[str]:
        """The account's deletions the state file holds, by the position of their last journal line."""
        last = {d.node_id: d.position for d in self.journal if d.account == account}
        ids = [nid for nid in self.deleted if self.account_of[nid] == account]
        return sorted(ids, key=lambda nid: last.get(nid, -1))


@dataclass
class AccountView:
    """One account's subtree in the graph."""

    present: bool = False
    regions: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)
    cleaned: set[str] = field(default_factory=set)

    def add(self, nid: str, kind: str, region: str | None, cleaned: bool) -> None:
        if kind == "account":
            self.present = True
        elif kind == "region" and region:
            self.regions.add(region)
        elif kind.startswith("example_"):
            self.resources.add(nid)
            if cleaned:
                self.cleaned.add(nid)


Graph = dict[str, AccountView]


def graph_from_search(nodes: Iterable[dict[str, Any]]) -> Graph:
    """The accounts of the example cloud from the core's search answer (filter cloud=example)."""
    graph: Graph = {}
    for node in nodes:
        ancestors = node.get("metadata", {}).get("ancestors", {})
        account = ancestors.get("account")
        if account:
            meta = node.get("metadata", {})
            view = graph.setdefault(account, AccountView())
            view.add(node["id"], node["reported"]["kind"], ancestors.get("region"), bool(meta.get("cleaned")))
    return graph


def graph_from_db(path: Path, graph_name: str = "resoto") -> Graph:
    """The same, read from the core's graph database file (read-only; the core may be dead)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, kind, account, region, cleaned FROM nodes WHERE graph = ? AND cloud = ?", (graph_name, CLOUD)
        ).fetchall()
    finally:
        db.close()
    graph: Graph = {}
    for nid, kind, account, region, cleaned in rows:
        if account:
            graph.setdefault(account, AccountView()).add(nid, kind, region, bool(cleaned))
    return graph


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a database file, read-only: "ok" or what is wrong."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall())
    finally:
        db.close()


def snapshot_problems(state: CloudState, graph: Graph, *, exact: bool = False) -> list[str]:
    """How the graph differs from "each account's subtree is one state of that account in the cloud".
    `exact`: it must be the current state, apart from resources marked cleaned (deleted since)."""
    problems: list[str] = []
    regions = set(state.spec.region_ids())
    for account in state.spec.account_ids():
        view = graph.get(account, AccountView())
        if not view.present:
            if view.resources or view.regions or exact:
                problems.append(f"{account}: no account node ({len(view.resources)} resources)")
            continue
        every = state.ids_of(account)
        gone = every - view.resources
        checks = [
            ("regions missing", {r for r in regions - view.regions}),
            ("resources unknown to the cloud", view.resources - every),
            ("resources in the cloud missing from the graph", gone - state.deleted),
            ("resources cleaned in the graph but still in the cloud", view.cleaned - state.deleted),
        ]
        order = state.effective_order(account)
        if not gone - state.deleted and gone != set(order[: len(gone)]):
            later = gone - set(order[: len(gone)])
            checks.append(("deleted later than resources the graph still has (a mix of states)", later))
        if exact:
            checks.append(("live in the graph but deleted", (view.resources - view.cleaned) & state.deleted))
        problems += [f"{account}: {len(ids)} {what}: {sorted(ids)[:SHOWN]}" for what, ids in checks if ids]
    return problems


def same_subtrees(a: Graph, b: Graph) -> bool:
    accounts = set(a) | set(b)
    empty = AccountView()
    return all(a.get(x, empty).resources == b.get(x, empty).resources for x in accounts)
