"""The lines of a merge as every backend reads them: numbering, UTF-8, and the checks of one line.

``numbered_lines`` splits the byte stream the same way for every backend (empty lines count but are
skipped). ``parse_line`` applies, in Python, exactly the checks that the SQLite backend runs in SQL
(``graph_merge.PROBLEM``), in the same order and with the same texts, so a broken batch is refused
with the same message and line number whatever the backend. JSON values are read the way SQLite's
``json_extract`` reads them (the first of duplicate keys wins; ``NaN`` is not JSON).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from resotocore.db.graph_merge import MergeError

LINE_BATCH = 5000
EDGE_TYPES = ("default", "delete")


async def numbered_lines(
    chunks: AsyncIterable[bytes], batch_size: int = LINE_BATCH
) -> AsyncIterator[list[tuple[int, str]]]:
    """Split a byte stream into (line number, text) batches; empty lines are counted but skipped."""
    number, rest, batch = 0, b"", []
    async for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            number += 1
            if part.strip():
                batch.append((number, _text(part, number)))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if rest.strip():
        batch.append((number + 1, _text(rest, number + 1)))
    if batch:
        yield batch


def _text(line: bytes, number: int) -> str:
    try:
        return line.decode().strip()
    except UnicodeDecodeError:
        raise MergeError(number, "not valid UTF-8") from None


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        result.setdefault(key, value)
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def load_json(text: str) -> Any:
    """JSON as SQLite's json_valid accepts it (no NaN/Infinity) with json_extract's key lookup."""
    return json.loads(text, object_pairs_hook=_first_key_wins, parse_constant=_no_constant)


def problem(value: Any) -> str | None:
    """What is wrong with one parsed line, in the words of the SQLite backend; None when it is fine."""
    if not isinstance(value, dict):
        return "not a JSON object"
    if "reported" in value:
        if not isinstance(value["reported"], dict):
            return "reported must be an object"
        if not isinstance(value.get("id"), str) or value["id"] == "":
            return "node id must be a non-empty string"
        if not isinstance(value["reported"].get("kind"), str):
            return "reported.kind must be a string"
        if "metadata" in value and not isinstance(value["metadata"], dict):
            return "metadata must be an object"
        return None
    if "from" in value or "to" in value:
        if not isinstance(value.get("from"), str) or not isinstance(value.get("to"), str):
            return "edge from and to must be strings"
        edge_type = value.get("edge_type")
        if edge_type is not None and (not isinstance(edge_type, str) or edge_type not in EDGE_TYPES):
            return "edge_type must be default or delete"
        return None
    return "neither a node (id, reported) nor an edge (from, to)"


def parse_line(text: str) -> tuple[Any, str | None]:
    """The parsed line and its problem (None when it is a valid node or edge)."""
    try:
        value = load_json(text)
    except (ValueError, RecursionError):  # json.JSONDecodeError, the rejected constants, too deep
        return None, "not valid JSON"
    return value, problem(value)
