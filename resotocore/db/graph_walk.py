"""The containment walk of a merge: which cloud, account, region and replace root each node is under.

From every root of the batch (a node no ``default`` edge of the batch points to) the walk follows the
batch's ``default`` edges down to at most ``MAX_DEPTH`` levels. A root starts from what the graph
already stores for it; a node that a stored node outside the batch holds (a ``default`` edge from it)
starts from that node's stored ancestry, so a batch may leave out the nodes above it. Each node then
takes its own id (``reported.id``) for the column of its kind (cloud, account, region) and its node id
as the replace root when it is flagged ``metadata.replace``, and inherits the rest. A node reached
along several paths gets, column by column, the largest value of those paths (None counts as absent,
like SQL's ``max``); a node no path reaches gets nothing.

Nodes are keys of any kind (the SQLite backend uses their position in the batch, the document backend
their ids). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from typing import NamedTuple, TypeVar

MAX_DEPTH = 64
ANCESTOR_KINDS = ("cloud", "account", "region")
K = TypeVar("K", bound=Hashable)


class Ancestry(NamedTuple):
    cloud: str | None
    account: str | None
    region: str | None
    replace_root: str | None


NO_ANCESTRY = Ancestry(None, None, None, None)


class Own(NamedTuple):
    """What a node sets itself: the column its kind names (index into Ancestry), and its replace root."""

    column: int | None
    value: str | None
    replace_root: str | None


def own(kind: str, rid: str | None, node_id: str, is_replace: bool) -> Own:
    """What a node sets itself (only a node of an ancestor kind or flagged replace sets anything)."""
    column = ANCESTOR_KINDS.index(kind) if kind in ANCESTOR_KINDS else None
    return Own(column, rid, node_id if is_replace else None)


def apply(mine: Own | None, inherited: Ancestry) -> Ancestry:
    if mine is None:
        return inherited
    columns = list(inherited)
    if mine.column is not None:
        columns[mine.column] = mine.value
    if mine.replace_root is not None:
        columns[3] = mine.replace_root
    return Ancestry(*columns)


def larger(a: Ancestry | None, b: Ancestry) -> Ancestry:
    """Column-wise max ignoring None, as SQL's max() over the paths that reach a node."""
    if a is None or a is b or a == b:
        return b
    return Ancestry(*(y if x is None else x if y is None else max(x, y) for x, y in zip(a, b, strict=True)))


def walk(starts: Mapping[K, Ancestry], children: Mapping[K, Sequence[K]], owns: Mapping[K, Own]) -> dict[K, Ancestry]:
    """The ancestry of every node reached from a root; ``starts`` holds each root's own ancestry already."""
    result: dict[K, Ancestry] = {}
    level: dict[K, Ancestry] = dict(starts)
    for depth in range(MAX_DEPTH + 1):
        for node, ancestry in level.items():
            result[node] = larger(result.get(node), ancestry)
        if depth == MAX_DEPTH:
            break
        below: dict[K, Ancestry] = {}
        for node, ancestry in level.items():
            for child in children.get(node, ()):
                mine = owns.get(child)
                inherited = ancestry if mine is None else apply(mine, ancestry)
                known = below.get(child)
                below[child] = inherited if known is None else larger(known, inherited)
        if not below:
            break
        level = below
    return result


class Run(NamedTuple):
    """Positions ``first`` to ``last`` (both included) share one ancestry (None: not reached)."""

    first: int
    last: int
    ancestry: Ancestry | None


def runs(ancestry: Mapping[int, Ancestry], size: int) -> Iterator[Run]:
    """The ancestry of positions 0 to size - 1 as runs of equal values (a batch lists nodes in tree order)."""
    position = 0
    values: Iterable[Ancestry | None] = (ancestry.get(i) for i in range(size))
    for value, group in groupby(values):
        count = sum(1 for _ in group)
        yield Run(position, position + count - 1, value)
        position += count
