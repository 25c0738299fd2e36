"""Where command output goes: rich renderables for people, JSON documents or JSON lines for programs.

Logs and errors go to stderr; stdout carries only the result, so ``resotoctl --json ... | jq`` works.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console, RenderableType


def plain(value: Any) -> Any:
    """JSON-ready data: pydantic models dumped by alias, lists and dicts walked."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


class Output:
    """The stdout of one command: ``as_json`` decides between rich renderables and JSON."""

    def __init__(self, as_json: bool, console: Console | None = None) -> None:
        self.as_json = as_json
        self.console = console or Console(soft_wrap=False)

    def document(self, value: Any) -> None:
        """One JSON document (pretty-printed)."""
        sys.stdout.write(json.dumps(plain(value), indent=2) + "\n")
        sys.stdout.flush()

    def line(self, value: Any) -> None:
        """One JSON line of a stream, flushed at once so a pipe sees it immediately."""
        text = value if isinstance(value, str) else json.dumps(plain(value), separators=(",", ":"))
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def listing(self, value: Any, table: Callable[[], RenderableType], empty: str | None = None) -> None:
        """A fetched list: the JSON document, `empty` when there is nothing, else its table."""
        if self.as_json:
            self.document(value)
        elif empty is not None and not value:
            self.show(empty)
        else:
            self.show(table())

    def show(self, renderable: RenderableType) -> None:
        """A renderable; a string is printed as it is (no markup, no highlighting)."""
        if isinstance(renderable, str):
            self.console.print(renderable, markup=False, highlight=False)
        else:
            self.console.print(renderable)
