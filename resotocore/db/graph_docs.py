"""One stored node as a plain record, shared by the backends that keep documents and by export/import.

A record has the columns of the SQLite ``nodes`` table under the same names (``id``, ``kind``,
``cloud``, ``account``, ``region``, ``name``, ``ctime``, ``expires``, ``protected``, ``clean``,
``cleaned``, ``clean_reason``, ``event_log``, ``replace_root``, ``reported``, ``metadata``), with
booleans as booleans and the event log as a list. ``node_line`` renders a record exactly like the
SQLite backend's search answer. Values read from a line follow SQLite's ``json_extract`` and
``CAST(... AS TEXT)`` so that both backends derive the same columns from the same line.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from resotocore.db.graph_lines import Literal
from resotocore.graph.expiry import expires_text

Record = dict[str, Any]
MERGE_FIELDS = (
    "id", "kind", "cloud", "account", "region", "name", "ctime", "expires", "protected", "replace_root",
    "reported", "metadata",
)  # fmt: skip
"""What a merge writes; the rest of a record (clean, cleaned, clean_reason, event_log) is the core's state."""
STATE_DEFAULTS: Record = {"clean": False, "cleaned": False, "clean_reason": None, "event_log": []}
METADATA_OWNED = ("replace", "expires", "protected", "cleaned", "clean_reason", "event_log", "ancestors")
"""Metadata keys the core computes or owns: removed from the stored metadata, rendered from columns."""
INT64 = 1 << 63


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def extract(value: Any) -> Any:
    """A JSON value as SQLite's json_extract returns it: booleans as 0/1, containers as JSON text."""
    if isinstance(value, Literal):
        return value.number()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -INT64 <= value < INT64:
        return float(value)
    if isinstance(value, dict | list):
        return compact(value)
    return value


def real_text(value: float) -> str:
    """A float as SQLite renders a REAL as text (``%!.15g``: 4.0 → '4.0', 1e20 → '1.0e+20', 'Inf')."""
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    text = f"{value:.15g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return (mantissa if "." in mantissa else mantissa + ".0") + "e" + exponent
    if text.lstrip("-").isdigit():
        return text + ".0"
    return text


def sql_text(value: Any) -> str | None:
    """``CAST(json_extract(...) AS TEXT)`` of a JSON value."""
    value = extract(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return real_text(value)
    return str(value)


EXPIRY_TAGS = ("resoto:expires", "resoto:expiration", "expiration")


def reported_expires(reported: dict[str, Any]) -> str | None:
    """The ``expires`` column of a node: from its tags and ctime, the same at merge and when a patch
    changes the tags."""
    tags = reported.get("tags")
    if not isinstance(tags, dict) or not any(tag in tags for tag in EXPIRY_TAGS):  # most nodes: at once
        return None
    return expires_text(
        extract(tags.get("resoto:expires")),
        extract(tags.get("resoto:expiration")),
        extract(tags.get("expiration")),
        extract(reported.get("ctime")),
    )


def is_one(value: Any) -> bool:
    """``json_extract(...) IS 1``: true, 1 and 1.0."""
    value = extract(value)
    return isinstance(value, int | float) and value == 1


def strip_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in METADATA_OWNED}


def node_line(record: Record) -> str:
    """The node as the search answer shows it: reported, metadata with the core's columns, desired."""
    metadata = dict(record["metadata"])
    extra: dict[str, Any] = {
        "expires": record["expires"],
        "protected": bool(record["protected"]),
        "cleaned": bool(record["cleaned"]),
        "clean_reason": record["clean_reason"],
        "event_log": record["event_log"] or [],
        "ancestors": {k: record[k] for k in ("cloud", "account", "region") if record[k] is not None},
    }
    for key, value in extra.items():  # json_patch: a null removes the key
        if value is None:
            metadata.pop(key, None)
        else:
            metadata.pop(key, None)
            metadata[key] = value
    desired = {"clean": True} if record["clean"] else {}
    return compact({"id": record["id"], "reported": record["reported"], "metadata": metadata, "desired": desired})


def digest(record: Record) -> str:
    """What decides whether a merge changed a node (the columns SQLite compares in its upsert)."""
    fields = [record[k] for k in ("reported", "metadata", "protected", "expires", "cloud", "account", "region")]
    return hashlib.sha256(compact([*fields, record["replace_root"]]).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def doc_key(*parts: str) -> str:
    """A document key safe for any text (ids may hold characters a key may not)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


def order_key(text: str) -> str:
    """Sorts like SQLite's BINARY collation under any collation: the hex of the UTF-8 bytes."""
    return text.encode("utf-8", "surrogatepass").hex()
