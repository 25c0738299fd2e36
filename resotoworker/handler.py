"""What an action handler works with: the core's graph API, a reporter bound to its action, and
``ActionFailed`` for the answer ``action_error``. Handlers depend on these protocols, not on the
client library, so they are tested against in-memory fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

from resotolib.graph import CleanRequest, Edge, MergeResult, Node, NodePatch, SearchRequest

Level = Literal["info", "warning", "error"]


class ActionFailed(Exception):
    """The handler ran to its end but some of its work failed; the message names what."""


class GraphApi(Protocol):
    """The part of the core's REST API the worker needs (implemented by resotolib.client.CoreClient)."""

    async def merge(self, graph: str, lines: Iterable[str]) -> MergeResult: ...

    def search(self, graph: str, request: SearchRequest) -> AsyncIterator[Node | Edge]: ...

    async def clean(self, graph: str, request: CleanRequest) -> int: ...

    async def patch_nodes(self, graph: str, patches: Iterable[NodePatch]) -> dict[str, Any]: ...


class Reporter(Protocol):
    """Progress and info messages about the action being handled (action_progress, action_info)."""

    async def progress(self, name: str, current: int, total: int, context: Sequence[str] = ()) -> None: ...

    async def info(self, message: str, level: Level = "info") -> None: ...


Handler = Callable[[Reporter], Awaitable[None]]
"""Handles one action: returns for action_done, raises (ActionFailed or anything else) for action_error."""


def describe_error(error: BaseException) -> str:
    """``Type: message`` (or just the type when there is no message), for answers and logs."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
