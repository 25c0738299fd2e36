"""The lines of a merge as every backend reads them: numbering, UTF-8, and the checks of one line.

``numbered_lines`` splits the byte stream the same way for every backend (empty lines count but are
skipped). ``parse_line`` applies the checks of one line in a fixed order with fixed texts, so a broken
batch is refused with the same message and line number whatever the backend. JSON values are read the
way SQLite's ``json_extract`` reads the stored documents (the first of duplicate keys wins; ``NaN`` is
not JSON): tests/resotocore/test_graph_store.py holds these checks against SQLite's JSON functions.

``load_line`` reads a line to the same value as ``parse_line``, several times faster: orjson reads
it, and where orjson could read it differently (a repeated key, where orjson keeps the last; an
integer beyond 64 bits, which orjson turns into a float; a ``\\u0022`` escape, which would hide a
repeated key from the check) the line is read again like ``parse_line`` does. Its values can be
rendered with ``render`` (numbers beyond a double or 64 bits are kept as written, see ``Literal``); a
string with an unpaired surrogate cannot be rendered as UTF-8, so ``load_line`` refuses it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

LINE_BATCH = 20000
BATCH_BYTES = 8 * 1024 * 1024
"""A batch also ends once its lines hold this much text: with large lines, memory stays bounded."""
BLANK = " \t\n\r\x0b\x0c"
"""What ``bytes.strip`` removes: a line of only these is empty (other white space makes it a broken line)."""
EDGE_TYPES = ("default", "delete")
UNPAIRED_SURROGATE = "string with an unpaired UTF-16 surrogate"
_BIG_NUMBER = re.compile(rb"e\+")  # how orjson writes a float of 1e16 or more, and so an integer beyond 64 bits


class MergeError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


async def numbered_lines(
    chunks: AsyncIterable[bytes], batch_size: int = LINE_BATCH, batch_bytes: int = BATCH_BYTES
) -> AsyncIterator[list[tuple[int, str]]]:
    """Split a byte stream into (line number, text) batches of at most `batch_size` lines or about
    `batch_bytes` of text; empty lines are counted but skipped."""
    number, pending, batch, size = 0, list[bytes](), list[tuple[int, str]](), 0
    async for chunk in chunks:
        end = chunk.rfind(b"\n")
        if end < 0:
            pending.append(chunk)
            continue
        block = b"".join((*pending, chunk[:end]))
        size += len(block)
        pending = [chunk[end + 1 :]]
        try:
            texts = block.decode().split("\n")
        except UnicodeDecodeError:
            texts = [_text(part, number + index) for index, part in enumerate(block.split(b"\n"), start=1)]
        batch += [(n, text.strip()) for n, text in enumerate(texts, start=number + 1) if text.strip(BLANK)]
        number += len(texts)
        if len(batch) >= batch_size or size >= batch_bytes:
            yield batch
            batch, size = [], 0
    rest = b"".join(pending)
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
        return flag_problem(value.get("metadata"))
    if "from" in value or "to" in value:
        if not isinstance(value.get("from"), str) or not isinstance(value.get("to"), str):
            return "edge from and to must be strings"
        edge_type = value.get("edge_type")
        if edge_type is not None and (not isinstance(edge_type, str) or edge_type not in EDGE_TYPES):
            return "edge_type must be default or delete"
        return None
    return "neither a node (id, reported) nor an edge (from, to)"


FLAGS = ("protected", "replace")
"""Metadata a collector sets to true or false: a mistyped value must not fall back to 'not protected'."""


def flag_problem(metadata: dict[str, Any] | None) -> str | None:
    """Why the flags in this node's metadata are not true, false or absent (null); None when they are."""
    for flag in FLAGS:
        if metadata and metadata.get(flag) not in (None, True, False):
            return f"metadata.{flag} must be true or false"
    return None


def parse_line(text: str) -> tuple[Any, str | None]:
    """The parsed line and its problem (None when it is a valid node or edge)."""
    try:
        value = load_json(text)
    except (ValueError, RecursionError):  # json.JSONDecodeError, the rejected constants, too deep
        return None, "not valid JSON"
    return value, problem(value)


class Literal:
    """A JSON number that neither a double nor a 64-bit integer holds (``1e400``), kept as written.

    SQLite reads such a number as a REAL (infinity, or the nearest double): ``number`` says which.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def number(self) -> float:
        return float(self.text)


def _float(text: str) -> float | Literal:
    number = float(text)
    return number if math.isfinite(number) else Literal(text)


def _int(text: str) -> int | Literal:
    number = int(text)
    return number if -(1 << 63) <= number < 1 << 64 else Literal(text)


def _fragment(value: object) -> orjson.Fragment:
    if isinstance(value, Literal):
        return orjson.Fragment(value.text)
    raise TypeError(type(value).__name__)


def _number(value: object) -> int | float:
    if isinstance(value, Literal):
        number = float(value.text)
        return int(value.text) if value.text.lstrip("-").isdigit() else number
    raise TypeError(type(value).__name__)


def render(value: Any) -> str:
    """Compact JSON of a value from ``load_line``, as UTF-8 text; raises ValueError when it cannot be."""
    try:
        return orjson.dumps(value, default=_fragment).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels), or an unpaired surrogate
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_number)
        text.encode()  # UnicodeEncodeError (a ValueError) for an unpaired surrogate
        return text


def load_line(text: str) -> tuple[Any, str | None]:
    """``parse_line``'s value, or why the line is no JSON it can store; through orjson where it reads the same."""
    try:
        value = orjson.loads(text)
        canonical = orjson.dumps(value)  # as many quotes as the line, unless a repeated key was dropped
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return _load_exact(text)
    if _BIG_NUMBER.search(canonical) or "\\u0022" in text or text.count('"') != canonical.count(b'"'):
        return _load_exact(text)
    return value, None


def _load_exact(text: str) -> tuple[Any, str | None]:
    try:
        value = json.loads(
            text, object_pairs_hook=_first_key_wins, parse_constant=_no_constant, parse_float=_float, parse_int=_int
        )
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    try:
        render(value)
    except UnicodeEncodeError:
        return None, UNPAIRED_SURROGATE
    except ValueError:  # 1e400 nested deeper than 254 levels
        return None, "number out of range"
    return value, None
