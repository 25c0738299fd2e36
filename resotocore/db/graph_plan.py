"""A merge worked out in Python, for backends that store documents: the same outcome as the SQLite merge.

``Staging`` reads the numbered lines (first problem, first duplicate node id, nodes, edges). With the
stored facts about the ids the batch touches, ``Staging.plan`` finds the first dangling edge, walks the
containment edges from the batch's roots (graph_walk: cloud, account, region, replace root) and sorts
nodes into created, changed and unchanged. ``MergePlan.remove`` then takes the stored ids under the
replaced roots and says what vanishes. No I/O here: the backend reads and writes, this module decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from resotocore.db.graph_docs import MERGE_FIELDS, Record, digest, is_one, reported_expires, sql_text, strip_metadata
from resotocore.db.graph_lines import MergeError, parse_line
from resotocore.db.graph_walk import ANCESTOR_KINDS, NO_ANCESTRY, Ancestry, apply, larger, own, walk
from resotolib.graph import MergeResult


class Stored(NamedTuple):
    """What the backend knows about one id of the batch that is already in the graph."""

    digest: str
    ancestry: Ancestry


@dataclass(frozen=True)
class StagedNode:
    line: int
    record: Record
    rid: str | None
    is_replace: bool

    @property
    def id(self) -> str:
        return str(self.record["id"])


@dataclass(frozen=True)
class StagedEdge:
    line: int
    from_id: str
    to_id: str
    edge_type: str


def staged_node(line: int, value: dict[str, Any]) -> StagedNode:
    reported: dict[str, Any] = value["reported"]
    metadata: dict[str, Any] = value.get("metadata", {})
    record: Record = {
        "id": value["id"],
        "kind": reported["kind"],
        "cloud": None,
        "account": None,
        "region": None,
        "name": sql_text(reported.get("name")),
        "ctime": sql_text(reported.get("ctime")),
        "expires": reported_expires(reported),
        "protected": is_one(metadata.get("protected")),
        "replace_root": None,
        "reported": reported,
        "metadata": strip_metadata(metadata),
    }
    return StagedNode(line, record, sql_text(reported.get("id")), is_one(metadata.get("replace")))


class Staging:
    """The lines of one merge, read in order; call ``add`` per batch, then ``check``."""

    def __init__(self) -> None:
        self.nodes: dict[str, StagedNode] = {}
        self.edges: list[StagedEdge] = []
        self._problem: MergeError | None = None
        self._duplicate: MergeError | None = None

    def add(self, lines: Iterable[tuple[int, str]]) -> None:
        for number, text in lines:
            if self._problem is not None:
                return  # the first broken line is the answer; the rest only needs reading
            value, problem = parse_line(text)
            if problem is not None:
                self._problem = MergeError(number, problem)
            elif "reported" in value:
                node = staged_node(number, value)
                if node.id in self.nodes:
                    self._duplicate = self._duplicate or MergeError(number, f"duplicate node id {node.id!r}")
                else:
                    self.nodes[node.id] = node
            else:
                self.edges.append(StagedEdge(number, value["from"], value["to"], value.get("edge_type") or "default"))

    def check(self) -> None:
        """Raise the error of the first broken line, else of the first repeated node id."""
        if self._problem is not None:
            raise self._problem
        if self._duplicate is not None:
            raise self._duplicate

    def ids(self) -> set[str]:
        """Every id the batch names: its nodes and both ends of its edges."""
        return set(self.nodes) | {e.from_id for e in self.edges} | {e.to_id for e in self.edges}

    def replace_roots(self) -> list[str]:
        return [n.id for n in self.nodes.values() if n.is_replace]

    def plan(self, stored: Mapping[str, Stored], under_replace_roots: Iterable[str] = ()) -> MergePlan:
        """Decide the merge, given the stored facts about ``ids()`` (absent: not in the graph) and the stored
        ids whose replace root is one of ``replace_roots()``: those the batch does not have vanish."""
        gone = {i for i in under_replace_roots if i not in self.nodes}
        for edge in self.edges:
            for end in (edge.from_id, edge.to_id):
                if end not in self.nodes and (end not in stored or end in gone):
                    raise MergeError(edge.line, f"edge refers to unknown node {end!r}")
        walked = self._walk(stored)
        plan = MergePlan(edges=self.edges, walked=walked, gone=sorted(gone))
        plan.replace_roots = self.replace_roots()
        for node in self.nodes.values():
            ancestry = walked.get(node.id, NO_ANCESTRY)
            record = {**node.record, **ancestry._asdict()}
            record["digest"] = digest(record)
            known = stored.get(node.id)
            if known is None:
                plan.created.append(record)
            elif known.digest != record["digest"]:
                plan.changed.append(record)
            else:
                plan.unchanged += 1
        return plan

    def _walk(self, stored: Mapping[str, Stored]) -> dict[str, Ancestry]:
        """The ancestry of every node reachable from a root (graph_walk)."""
        children: dict[str, list[str]] = {}
        has_parent: set[str] = set()
        for edge in self.edges:
            if edge.edge_type == "default":
                has_parent.add(edge.to_id)
                if edge.to_id in self.nodes:
                    children.setdefault(edge.from_id, []).append(edge.to_id)
        owns = {
            n.id: own(n.record["kind"], n.rid, n.id, n.is_replace)
            for n in self.nodes.values()
            if n.is_replace or n.record["kind"] in ANCESTOR_KINDS
        }
        starts = {
            i: apply(owns.get(i), known.ancestry if (known := stored.get(i)) else NO_ANCESTRY)
            for i in self.nodes
            if i not in has_parent
        }
        for edge in self.edges:  # a stored node outside the batch holds one of its nodes: start from its ancestry
            if edge.edge_type == "default" and edge.to_id in self.nodes and edge.from_id not in self.nodes:
                parent = known.ancestry if (known := stored.get(edge.from_id)) else NO_ANCESTRY
                starts[edge.to_id] = larger(starts.get(edge.to_id), apply(owns.get(edge.to_id), parent))
        return walk(starts, children, owns)


@dataclass
class MergePlan:
    edges: list[StagedEdge]
    walked: dict[str, Ancestry]
    replace_roots: list[str] = field(default_factory=list)
    created: list[Record] = field(default_factory=list)
    changed: list[Record] = field(default_factory=list)
    unchanged: int = 0
    gone: list[str] = field(default_factory=list)

    def edge_sources_replaced(self) -> list[str]:
        """Outgoing edges of these nodes are dropped before the batch's edges go in (their subtree is replaced)."""
        return sorted(i for i, a in self.walked.items() if a.replace_root is not None)

    def upserts(self) -> list[Record]:
        return [{k: r[k] for k in (*MERGE_FIELDS, "digest")} for r in (*self.created, *self.changed)]

    def result(self) -> MergeResult:
        return MergeResult(
            created=len(self.created), updated=len(self.changed), deleted=len(self.gone), unchanged=self.unchanged
        )
