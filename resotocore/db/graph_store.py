"""The graph storage protocol: what the web routes and export/import need from any graph backend.

Implementations: ``graph_sqlite.SqliteGraphStore`` (embedded default) and
``graph_arango.ArangoGraphStore`` (server mode). Both answer with the same JSON lines, counts and
errors; the contract tests in tests/resotocore/test_graph_store.py hold them to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

from resotocore.db.graph_docs import Record
from resotocore.db.graph_lines import MergeError
from resotolib.graph import (
    AggregateRequest,
    AggregateRow,
    CleanRequest,
    EdgeType,
    MergeResult,
    NodePatch,
    SearchRequest,
)

__all__ = ["EdgeRecord", "GraphStore", "MergeError"]

EdgeRecord = tuple[str, str, EdgeType]
"""(from id, to id, edge type)"""


def aggregate_rows(request: AggregateRequest, rows: Iterable[Sequence[Any]]) -> list[AggregateRow]:
    """Rows of (group values..., function values...) as the API answers them."""
    width = len(request.group_by)
    return [
        AggregateRow(
            group=dict(zip(request.group_by, row[:width], strict=True)),
            values={fn.name: value for fn, value in zip(request.functions, row[width:], strict=True)},
        )
        for row in rows
    ]


class GraphStore(Protocol):
    async def merge(self, graph: str, chunks: AsyncIterable[bytes]) -> MergeResult:
        """Merge an NDJSON stream (nodes, then edges) into `graph`, all or nothing; raises MergeError."""
        ...

    def search(self, graph: str, request: SearchRequest) -> AsyncIterator[list[str]]:
        """Matching nodes ordered by id (then edges among them, if asked) as JSON lines, in chunks."""
        ...

    async def aggregate(self, graph: str, request: AggregateRequest) -> list[AggregateRow]: ...

    async def clean(self, graph: str, request: CleanRequest) -> int:
        """Mark matching nodes not marked yet; answers how many were marked."""
        ...

    async def patch(self, graph: str, patches: list[NodePatch]) -> tuple[int, list[str]]:
        """Apply each patch; answers how many nodes were updated and which ids were not found."""
        ...

    async def graphs(self) -> list[str]: ...

    async def exists(self, graph: str) -> bool: ...

    async def delete_graph(self, graph: str) -> int: ...

    def dump(self, graph: str) -> AsyncIterator[list[Record]]:
        """Every stored node of `graph` as a record (graph_docs), ordered by id, in chunks."""
        ...

    def dump_edges(self, graph: str) -> AsyncIterator[list[EdgeRecord]]:
        """Every edge of `graph`, ordered by type, from and to, in chunks."""
        ...

    async def load(self, graph: str, nodes: list[Record], edges: list[EdgeRecord]) -> None:
        """Write records as they are (export/import): a node with the same id is replaced."""
        ...

    async def close(self) -> None: ...
