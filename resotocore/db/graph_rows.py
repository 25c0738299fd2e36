"""The lines of one merge as rows of the SQLite tables, read once, in order, as they arrive.

``BatchRows.read`` checks each line (``graph_lines.load_line``; the first broken line raises), turns a
node into a ``NodeRow`` with every column a merge derives (kind, name, ctime, expiry, protection, the
compact ``reported`` and the ``metadata`` without the keys the core owns) and an edge into an
``EdgeRow``, and keeps only what the rest of the merge needs: each node id with its position, the
first repeated id, the containment edges between the batch's nodes, and the edges that name a node
outside the batch (checked against the graph at the end). Column values follow SQLite's
``json_extract`` and ``CAST(... AS TEXT)`` (graph_docs), as the document backend's do. No I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from typing import Any

from resotocore.db.graph_docs import METADATA_OWNED, is_one, reported_expires, sql_text
from resotocore.db.graph_lines import EDGE_TYPES, MergeError, flag_problem, load_line, render
from resotocore.db.graph_lines import problem as check
from resotocore.db.graph_walk import ANCESTOR_KINDS, NO_ANCESTRY, Ancestry, Own, Run, apply, larger, own, runs, walk

NodeRow = tuple[int, str, str, str | None, str | None, str | None, int, str, str]
"""position, id, kind, name, ctime, expires, protected, reported, metadata"""
EdgeRow = tuple[str, str, str]
"""from id, to id, edge type"""
EMPTY = "{}"
EMPTY_METADATA: dict[str, Any] = {}


def _text(value: Any) -> str | None:
    return value if value is None or value.__class__ is str else sql_text(value)


class BatchRows:
    """One merge's lines, read batch by batch; then ``check_edges`` and ``ancestry`` with the graph's facts."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []
        self.replace_roots: list[str] = []
        self._owns: dict[int, Own] = {}
        self._children: dict[int, list[int]] = {}
        self._parented: set[int] = set()
        self._outside_parents: dict[int, list[str]] = {}
        self._open_edges: list[tuple[int, str, str, str]] = []
        self._duplicate: MergeError | None = None

    def read(self, lines: Iterable[tuple[int, str]]) -> tuple[list[NodeRow], list[EdgeRow]]:
        """The rows of these lines; raises MergeError for the first broken line."""
        nodes: list[NodeRow] = []
        edges: list[EdgeRow] = []
        ids = self.ids
        for number, text in lines:
            value, problem = load_line(text)
            if value.__class__ is not dict:
                raise MergeError(number, problem or "not a JSON object")
            # the checks of graph_lines.problem for valid lines, inline: one call per line less
            if (reported := value.get("reported")) is not None:
                node_id = value.get("id")
                if (
                    reported.__class__ is dict
                    and node_id.__class__ is str
                    and node_id
                    and reported.get("kind").__class__ is str
                    and (metadata := value.get("metadata", EMPTY_METADATA)).__class__ is dict
                    and flag_problem(metadata) is None
                ):
                    if node_id in ids:
                        self._duplicate = self._duplicate or MergeError(number, f"duplicate node id {node_id!r}")
                    else:
                        nodes.append(self._node(node_id, reported, metadata))
                    continue
            elif (
                (from_id := value.get("from")).__class__ is str
                and (to_id := value.get("to")).__class__ is str
                and ((edge_type := value.get("edge_type")) is None or edge_type in EDGE_TYPES)
                and "reported" not in value
            ):
                edge_type = edge_type or "default"
                edges.append((from_id, to_id, edge_type))
                above, below = ids.get(from_id), ids.get(to_id)
                if above is None or below is None:
                    self._open_edges.append((number, from_id, to_id, edge_type))
                elif edge_type == "default":
                    self._contains(above, below)
                continue
            raise MergeError(number, check(value) or "neither a node (id, reported) nor an edge (from, to)")
        return nodes, edges

    def _node(self, node_id: str, reported: dict[str, Any], metadata: dict[str, Any] | None) -> NodeRow:
        position = len(self.names)
        self.ids[node_id] = position
        self.names.append(node_id)
        kind: str = reported["kind"]
        protected = is_replace = False
        stored_metadata = EMPTY
        if metadata:
            protected = is_one(metadata.get("protected"))
            is_replace = is_one(metadata.get("replace"))
            if any(key not in METADATA_OWNED for key in metadata):
                stored_metadata = render({k: v for k, v in metadata.items() if k not in METADATA_OWNED})
        if is_replace or kind in ANCESTOR_KINDS:
            self._owns[position] = own(kind, _text(reported.get("id")), node_id, is_replace)
            if is_replace:
                self.replace_roots.append(node_id)
        expires = reported_expires(reported)
        name, ctime = reported.get("name"), reported.get("ctime")
        if name is not None and name.__class__ is not str:
            name = sql_text(name)
        if ctime is not None and ctime.__class__ is not str:
            ctime = sql_text(ctime)
        return position, node_id, kind, name, ctime, expires, int(protected), render(reported), stored_metadata

    def _contains(self, above: int, below: int) -> None:
        self._parented.add(below)
        children = self._children.get(above)
        if children is None:
            self._children[above] = [below]
        else:
            children.append(below)

    def outside_ids(self) -> set[str]:
        """Ids that edges name but no node of the batch has: the graph must hold them."""
        return {end for _, f, t, _ in self._open_edges for end in (f, t) if end not in self.ids}

    def check_edges(self, stored: Container[str]) -> None:
        """Raise for a repeated node id, else for the first edge to a node neither here nor ``stored``."""
        if self._duplicate is not None:
            raise self._duplicate
        for number, from_id, to_id, edge_type in self._open_edges:
            above, below = self.ids.get(from_id), self.ids.get(to_id)
            for end, position in ((from_id, above), (to_id, below)):
                if position is None and end not in stored:
                    raise MergeError(number, f"edge refers to unknown node {end!r}")
            if edge_type == "default" and below is not None:
                if above is None:  # a stored node holds this one: the walk starts from its ancestry
                    self._parented.add(below)
                    self._outside_parents.setdefault(below, []).append(from_id)
                else:
                    self._contains(above, below)
        self._open_edges.clear()

    def roots(self) -> list[str]:
        """Ids whose stored ancestry the walk starts from (after ``check_edges``): the nodes no containment
        edge points to, and the stored nodes outside the batch that hold one of its nodes."""
        free = [self.names[p] for p in range(len(self.names)) if p not in self._parented]
        return free + sorted({parent for parents in self._outside_parents.values() for parent in parents})

    def ancestry(self, stored: Mapping[str, Ancestry]) -> Iterator[Run]:
        """Runs of node positions with the same ancestry, given the stored ancestry of ``roots()``."""
        starts = {
            p: apply(self._owns.get(p), stored.get(self.names[p], NO_ANCESTRY))
            for p in range(len(self.names))
            if p not in self._parented
        }
        for p, parents in self._outside_parents.items():
            for parent in parents:
                starts[p] = larger(starts.get(p), apply(self._owns.get(p), stored.get(parent, NO_ANCESTRY)))
        return runs(walk(starts, self._children, self._owns), len(self.names))
