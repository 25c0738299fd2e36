"""Filters and aggregates translated to SQL over the nodes table: pure functions, bind variables only.

Paths are validated by the models in resotolib.graph (letters, digits, ``_:-`` per segment) and JSON
paths are always passed as bound parameters, never formatted into the statement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resotocore.graph.expiry import format_time
from resotolib.graph import AggregateRequest, Comparison, Filter, SearchRequest

COLUMNS = {
    "id": "id", "kind": "kind", "cloud": "cloud", "account": "account", "region": "region",
    "name": "name", "ctime": "ctime", "expires": "expires",
    "metadata.expires": "expires", "metadata.protected": "protected", "metadata.cleaned": "cleaned",
    "metadata.clean_reason": "clean_reason", "desired.clean": "clean",
}  # fmt: skip
BOOLEAN_COLUMNS = {"protected", "cleaned", "clean"}
_OPS = {"==": "IS", "!=": "IS NOT", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

NODE_JSON = """json_object(
    'id', id,
    'reported', json(reported),
    'metadata', json_patch(metadata, json_object(
        'expires', expires,
        'protected', json(CASE protected WHEN 1 THEN 'true' ELSE 'false' END),
        'cleaned', json(CASE cleaned WHEN 1 THEN 'true' ELSE 'false' END),
        'clean_reason', clean_reason,
        'event_log', json(coalesce(event_log, '[]')),
        'ancestors', json_object('cloud', cloud, 'account', account, 'region', region))),
    'desired', json(CASE clean WHEN 1 THEN '{"clean":true}' ELSE '{}' END))"""


@dataclass
class Sql:
    text: str
    params: list[Any] = field(default_factory=list)


def json_path(segments: list[str]) -> str:
    return "$" + "".join(f'."{s}"' for s in segments)


def expression(path: str) -> Sql:
    """The SQL expression of a path: a column, or json_extract with the JSON path as a parameter."""
    if path in COLUMNS:
        return Sql(COLUMNS[path])
    root, *rest = path.split(".")
    if root == "desired":  # the core keeps only desired.clean (a column)
        return Sql("NULL")
    return Sql(f"json_extract({root}, ?)", [json_path(rest)])


def comparison(c: Comparison) -> Sql:
    expr = expression(c.path)
    value = _sql_value(c.value)
    match c.op:
        case "exists":
            return Sql(f"{expr.text} IS NOT NULL", expr.params)
        case "in" | "not_in":
            values = c.value if isinstance(c.value, list) else [c.value]
            if not values:
                return Sql("0" if c.op == "in" else "1")
            marks = ",".join("?" * len(values))
            negate = "NOT " if c.op == "not_in" else ""
            return Sql(f"{expr.text} {negate}IN ({marks})", [*expr.params, *map(_sql_value, values)])
        case _:
            return Sql(f"{expr.text} {_OPS[c.op]} ?", [*expr.params, value])


def where(f: Filter) -> Sql:
    """The WHERE condition (after ``graph = ?``) of a filter; the empty filter is ``1``."""
    parts: list[Sql] = []
    for column, values in (
        ("id", f.ids),
        ("kind", f.kinds),
        ("cloud", f.cloud),
        ("account", f.account),
        ("region", f.region),
    ):
        if values is not None:
            parts.append(Sql(f"{column} IN ({','.join('?' * len(values))})" if values else "0", list(values)))
    parts.extend(comparison(c) for c in f.fields)
    for tag, value in f.tags.items():
        path = json_path(["tags", tag])
        if value is None:
            parts.append(Sql("json_extract(reported, ?) IS NOT NULL", [path]))
        else:
            parts.append(Sql("json_extract(reported, ?) IS ?", [path, value]))
    if f.expired_before is not None:
        parts.append(Sql("expires IS NOT NULL AND expires < ?", [format_time(f.expired_before)]))
    for column, flag in (("clean", f.clean), ("cleaned", f.cleaned), ("protected", f.protected)):
        if flag is not None:
            parts.append(Sql(f"{column} = ?", [int(flag)]))
    if not parts:
        return Sql("1")
    return Sql(" AND ".join(f"({p.text})" for p in parts), [p for part in parts for p in part.params])


def search(graph: str, request: SearchRequest) -> Sql:
    cond = where(request.filter)
    limit = -1 if request.limit is None else request.limit
    return Sql(
        f"SELECT {NODE_JSON} FROM nodes WHERE graph = ? AND {cond.text} ORDER BY id LIMIT ? OFFSET ?",
        [graph, *cond.params, limit, request.offset],
    )


def search_edges(graph: str, request: SearchRequest) -> Sql:
    """Edges of ``request.with_edges`` type whose both ends are among the nodes the search finds."""
    cond = where(request.filter)
    limit = -1 if request.limit is None else request.limit
    found = f"SELECT id FROM nodes WHERE graph = ? AND {cond.text} ORDER BY id LIMIT ? OFFSET ?"
    # found is computed once; each found node's edges come from the primary key, the other end is
    # looked up in found (an automatic index): linear in the found nodes and their edges.
    return Sql(
        f"WITH found(id) AS MATERIALIZED ({found}) "
        "SELECT json_object('from', e.from_id, 'to', e.to_id, 'edge_type', e.edge_type) "
        "FROM found f JOIN edges e ON e.graph = ? AND e.from_id = f.id "
        "WHERE e.edge_type = ? AND +e.to_id IN (SELECT id FROM found) ORDER BY e.from_id, e.to_id",
        [graph, *cond.params, limit, request.offset, graph, request.with_edges],
    )


def aggregate(graph: str, request: AggregateRequest, exact: bool = True) -> Sql:
    """GROUP BY the paths; `exact=False` sums as floats (for sums beyond 64-bit integers)."""
    cond = where(request.filter)
    groups = [expression(p) for p in request.group_by]
    selects: list[Sql] = list(groups)
    for fn in request.functions:
        if fn.path is None:  # only count goes without a path (AggregateFunction checks)
            selects.append(Sql("count(*)"))
        else:
            inner = expression(fn.path)
            name = "total" if fn.function == "sum" and not exact else fn.function
            selects.append(Sql(f"{name}({inner.text})", inner.params))
    columns = ", ".join(s.text for s in selects)
    params = [p for s in selects for p in s.params] + [graph, *cond.params]
    text = f"SELECT {columns} FROM nodes WHERE graph = ? AND {cond.text}"
    if groups:
        positions = ", ".join(str(i + 1) for i in range(len(groups)))
        text += f" GROUP BY {positions} ORDER BY {positions}"
    return Sql(text, params)


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return None
    return value
