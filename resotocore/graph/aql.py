"""Every AQL statement of the ArangoDB backend: pure functions returning (query, bind variables).

User input — graph names, ids, values, attribute paths, reasons — only ever travels as a bind
variable; a path becomes ``n[@p0][@p1]``, one bound name per segment. The query text is built from
constants of this module alone, so it never contains a value a request sent.

Filters follow the SQLite backend (graph/query.py) value for value: JSON booleans compare as 1/0,
objects and arrays as their JSON text, NULL never satisfies ``<``/``in``, a text column compares a
number as text, a flag column a numeric text as a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resotocore.db.graph_docs import real_text
from resotocore.graph.expiry import format_time
from resotocore.graph.query import BOOLEAN_COLUMNS, COLUMNS
from resotolib.graph import AggregateRequest, Comparison, EdgeType, Filter, SearchRequest

NODES = "graph_nodes"
EDGES: dict[EdgeType, str] = {"default": "graph_default", "delete": "graph_delete"}
SUBSCRIBERS = "core_subscribers"
RUNS = "core_runs"
STEPS = "core_run_steps"
QUEUE = "core_wait_queue"
TRIGGERS = "core_trigger_times"
RECORD = (
    "id", "kind", "cloud", "account", "region", "name", "ctime", "expires", "protected", "clean", "cleaned",
    "clean_reason", "event_log", "replace_root", "reported", "metadata",
)  # fmt: skip
NO_LIMIT = 2**53 - 1
_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class Aql:
    query: str
    bind_vars: dict[str, Any] = field(default_factory=dict)


class _Binds:
    """Hands out bind variable names (p0, p1, ...) for values."""

    def __init__(self, start: dict[str, Any] | None = None) -> None:
        self.vars: dict[str, Any] = dict(start or {})

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.vars)}"
        self.vars[name] = value
        return "@" + name


# ---- filters -------------------------------------------------------------------------------------


def _normalized(access: str) -> str:
    """A JSON value as SQLite's json_extract yields it: booleans as numbers, containers as JSON text."""
    container = f"(IS_ARRAY({access}) OR IS_OBJECT({access}))"
    return f"(IS_BOOL({access}) ? TO_NUMBER({access}) : {container} ? JSON_STRINGIFY({access}) : {access})"


def expression(path: str, bind: _Binds) -> tuple[str, str]:
    """The AQL expression of a path and its kind: 'text' or 'flag' for a column, 'json' otherwise."""
    if path in COLUMNS:
        column = COLUMNS[path]
        if column in BOOLEAN_COLUMNS:
            return f"(n.{column} ? 1 : 0)", "flag"
        return f"n.{column}", "text"
    root, *rest = path.split(".")
    if root == "desired":  # only desired.clean is kept (a column), as in the SQLite backend
        return "null", "json"
    access = f"n[{bind(root)}]" + "".join(f"[{bind(segment)}]" for segment in rest)
    return _normalized(access), "json"


def _affinity(kind: str, value: Any) -> Any:
    """A value as SQLite compares it with the expression: bool as 0/1; to text or number for columns."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, dict | list):
        return None
    if kind == "text" and isinstance(value, int | float):
        return real_text(value) if isinstance(value, float) else str(value)
    if kind == "flag" and isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value.strip())
            except ValueError:
                pass
    return value


def _kind(path: str) -> str:
    if path in COLUMNS:
        return "flag" if COLUMNS[path] in BOOLEAN_COLUMNS else "text"
    return "json"


def comparison(c: Comparison, bind: _Binds) -> str:
    """One comparison; constant outcomes bind nothing (ArangoDB refuses unused bind variables)."""
    kind = _kind(c.path)
    match c.op:
        case "exists":
            return f"{expression(c.path, bind)[0]} != null"
        case "in" | "not_in":
            values = [_affinity(kind, v) for v in (c.value if isinstance(c.value, list) else [c.value])]
            if not values:
                return "false" if c.op == "in" else "true"
            if c.op == "not_in" and None in values:
                return "false"  # x NOT IN (..., NULL) is never true in SQL
            present = [v for v in values if v is not None]
            if not present:
                return "false"
            expr = expression(c.path, bind)[0]
            negate = "NOT " if c.op == "not_in" else ""
            return f"({expr} != null AND {expr} {negate}IN {bind(present)})"
        case "==" | "!=":
            return f"{expression(c.path, bind)[0]} {c.op} {bind(_affinity(kind, c.value))}"
        case _:
            value = _affinity(kind, c.value)
            if value is None:
                return "false"
            expr = expression(c.path, bind)[0]
            return f"({expr} != null AND {expr} {_OPS[c.op]} {bind(value)})"


def condition(f: Filter, bind: _Binds) -> str:
    """The condition (after ``n.graph == @graph``) of a filter; the empty filter is ``true``."""
    parts: list[str] = []
    for column, values in (("id", f.ids), ("kind", f.kinds), ("cloud", f.cloud), ("account", f.account),
                           ("region", f.region)):  # fmt: skip
        if values is not None:
            parts.append(f"n.{column} IN {bind(list(values))}" if values else "false")
    parts.extend(comparison(c, bind) for c in f.fields)
    for tag, value in f.tags.items():
        access = f"n.reported.tags[{bind(tag)}]"
        parts.append(f"{access} != null" if value is None else f"{_normalized(access)} == {bind(value)}")
    if f.expired_before is not None:
        parts.append(f"(n.expires != null AND n.expires < {bind(format_time(f.expired_before))})")
    for column, flag in (("clean", f.clean), ("cleaned", f.cleaned), ("protected", f.protected)):
        if flag is not None:
            parts.append(f"n.{column} == {bind(flag)}")
    return " AND ".join(f"({p})" for p in parts) if parts else "true"


def _found(graph: str, request: SearchRequest, bind: _Binds) -> str:
    text = f"FOR n IN {NODES} FILTER n.graph == {bind(graph)} AND {condition(request.filter, bind)} SORT n.order"
    if request.limit is not None or request.offset:
        limit = NO_LIMIT if request.limit is None else request.limit
        text += f" LIMIT {bind(request.offset)}, {bind(limit)}"
    return text


def search(graph: str, request: SearchRequest) -> Aql:
    """Matching nodes as records, ordered by id (``order``: the id's bytes in hex)."""
    bind = _Binds()
    return Aql(f"{_found(graph, request, bind)} RETURN KEEP(n, {_fields(RECORD)})", bind.vars)


def search_edges(graph: str, request: SearchRequest, edge_type: EdgeType) -> Aql:
    """[from, to] of the edges of one type whose both ends are among the nodes the search finds."""
    bind = _Binds({"@edges": EDGES[edge_type]})
    found = _found(graph, request, bind)
    return Aql(
        f"LET found = ({found} RETURN n._id) "
        "FOR e IN @@edges FILTER e._from IN found AND e._to IN found SORT e.from_order, e.to_order "
        "RETURN [e.from, e.to]",
        bind.vars,
    )


def aggregate(graph: str, request: AggregateRequest) -> Aql:
    """One row per group: [group values..., function values...]; the caller orders the rows."""
    bind = _Binds()
    lets, keys, aggregates, values = [], [], [], []
    for i, path in enumerate(request.group_by):
        lets.append(f"g{i} = {expression(path, bind)[0]}")
        keys.append(f"k{i} = g{i}")
    for i, fn in enumerate(request.functions):
        if fn.path is None:  # only count goes without a path (AggregateFunction checks)
            aggregates.append(f"a{i} = SUM(1)")
            values.append(f"a{i}")
            continue
        lets.append(f"v{i} = {expression(fn.path, bind)[0]}")
        match fn.function:
            case "count":
                aggregates.append(f"a{i} = SUM(v{i} != null ? 1 : 0)")
                values.append(f"a{i}")
            case "sum":
                aggregates.append(f"a{i} = SUM(IS_NUMBER(v{i}) ? v{i} : 0), c{i} = SUM(IS_NUMBER(v{i}) ? 1 : 0)")
                values.append(f"(c{i} == 0 ? null : a{i})")
            case _:
                aggregates.append(f"a{i} = {fn.function.upper()}(v{i})")
                values.append(f"a{i}")
    text = f"FOR n IN {NODES} FILTER n.graph == {bind(graph)} AND {condition(request.filter, bind)}"
    if lets:
        text += "".join(f" LET {let}" for let in lets)
    text += " COLLECT " + ", ".join(keys) + " AGGREGATE " + ", ".join(aggregates)
    groups = [f"k{i}" for i in range(len(keys))]
    return Aql(f"{text} RETURN [{', '.join([*groups, *values])}]", bind.vars)


def _fields(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


# ---- graph writes --------------------------------------------------------------------------------


def clean(graph: str, f: Filter, reason: str) -> Aql:
    bind = _Binds()
    return Aql(
        f"RETURN LENGTH((FOR n IN {NODES} FILTER n.graph == {bind(graph)} AND n.clean == false "
        f"AND {condition(f, bind)} UPDATE n WITH {{clean: true, clean_reason: {bind(reason)}}} IN {NODES} RETURN 1))",
        bind.vars,
    )


def nodes_by_key(keys: list[str]) -> Aql:
    return Aql(f"FOR n IN {NODES} FILTER n._key IN @keys RETURN n", {"keys": keys})


def stored(keys: list[str]) -> Aql:
    """What a merge needs to know of the stored nodes among the batch's ids."""
    return Aql(
        f"FOR n IN {NODES} FILTER n._key IN @keys "
        "RETURN [n.id, n.digest, n.cloud, n.account, n.region, n.replace_root]",
        {"keys": keys},
    )


def under_roots(graph: str, roots: list[str]) -> Aql:
    return Aql(
        f"FOR n IN {NODES} FILTER n.graph == @graph AND n.replace_root IN @roots RETURN n.id",
        {"graph": graph, "roots": roots},
    )


def remove_nodes(keys: list[str]) -> Aql:
    return Aql(f"FOR k IN @keys REMOVE k IN {NODES} OPTIONS {{ignoreErrors: true}}", {"keys": keys})


def remove_edges(edge_type: EdgeType, from_handles: list[str], to_handles: list[str]) -> Aql:
    """Edges leaving any of `from_handles` or entering any of `to_handles` (document handles)."""
    return Aql(
        "FOR e IN @@edges FILTER e._from IN @from OR e._to IN @to REMOVE e IN @@edges",
        {"@edges": EDGES[edge_type], "from": from_handles, "to": to_handles},
    )


def insert_nodes(docs: list[dict[str, Any]], overwrite: bool = False) -> Aql:
    options = ' OPTIONS {overwriteMode: "replace"}' if overwrite else ""
    return Aql(f"FOR d IN @docs INSERT d INTO {NODES}{options}", {"docs": docs})


def update_nodes(docs: list[dict[str, Any]]) -> Aql:
    """Set the given attributes (objects replaced, not merged); attributes not given stay."""
    return Aql(f"FOR d IN @docs UPDATE d IN {NODES} OPTIONS {{mergeObjects: false}}", {"docs": docs})


def insert_edges(edge_type: EdgeType, docs: list[dict[str, Any]]) -> Aql:
    return Aql(
        'FOR d IN @docs INSERT d INTO @@edges OPTIONS {overwriteMode: "ignore"}',
        {"@edges": EDGES[edge_type], "docs": docs},
    )


def graphs() -> Aql:
    return Aql(f"FOR n IN {NODES} COLLECT g = n.graph RETURN g")


def exists(graph: str) -> Aql:
    return Aql(f"FOR n IN {NODES} FILTER n.graph == @graph LIMIT 1 RETURN true", {"graph": graph})


def delete_nodes(graph: str) -> Aql:
    return Aql(
        f"RETURN LENGTH((FOR n IN {NODES} FILTER n.graph == @graph REMOVE n IN {NODES} RETURN 1))", {"graph": graph}
    )


def delete_edges(graph: str, edge_type: EdgeType) -> Aql:
    return Aql(
        "FOR e IN @@edges FILTER e.graph == @graph REMOVE e IN @@edges", {"@edges": EDGES[edge_type], "graph": graph}
    )


def dump_nodes(graph: str) -> Aql:
    return Aql(
        f"FOR n IN {NODES} FILTER n.graph == @graph SORT n.order RETURN KEEP(n, {_fields(RECORD)})", {"graph": graph}
    )


def dump_edges(graph: str, edge_type: EdgeType) -> Aql:
    return Aql(
        "FOR e IN @@edges FILTER e.graph == @graph SORT e.from_order, e.to_order RETURN [e.from, e.to]",
        {"@edges": EDGES[edge_type], "graph": graph},
    )


# ---- workflow state ------------------------------------------------------------------------------


def upsert_runs(docs: list[dict[str, Any]]) -> Aql:
    """Insert new runs; update stored ones (their header replaced) keeping the insertion number ``seq``."""
    return Aql(
        f'FOR d IN @docs UPSERT {{_key: d._key}} INSERT d UPDATE UNSET(d, "seq") IN {RUNS} '
        "OPTIONS {mergeObjects: false}",
        {"docs": docs},
    )


def replace_docs(collection: str, docs: list[dict[str, Any]]) -> Aql:
    return Aql('FOR d IN @docs INSERT d INTO @@c OPTIONS {overwriteMode: "replace"}', {"@c": collection, "docs": docs})


def remove_keys(collection: str, keys: list[str]) -> Aql:
    return Aql("FOR k IN @keys REMOVE k IN @@c OPTIONS {ignoreErrors: true}", {"@c": collection, "keys": keys})


def all_docs(collection: str) -> Aql:
    return Aql("FOR d IN @@c RETURN d", {"@c": collection})


def running(status: str) -> Aql:
    return Aql(f"FOR r IN {RUNS} FILTER r.status == @status SORT r.created_us, r.seq RETURN r", {"status": status})


def run_by_key(key: str) -> Aql:
    return Aql(f"FOR r IN {RUNS} FILTER r._key == @key RETURN r", {"key": key})


def steps_of(run_ids: list[str]) -> Aql:
    return Aql(f"FOR s IN {STEPS} FILTER s.run_id IN @ids SORT s.idx RETURN [s.run_id, s.step]", {"ids": run_ids})


def history(workflow_id: str, limit: int, offset: int) -> Aql:
    return Aql(
        f"FOR r IN {RUNS} FILTER r.workflow_id == @workflow SORT r.created_us DESC, r.seq DESC "
        "LIMIT @offset, @limit RETURN r",
        {"workflow": workflow_id, "limit": limit, "offset": offset},
    )


def history_total(workflow_id: str) -> Aql:
    return Aql(
        f"RETURN LENGTH((FOR r IN {RUNS} FILTER r.workflow_id == @workflow RETURN 1))", {"workflow": workflow_id}
    )


def every_run() -> Aql:
    return Aql(f"FOR r IN {RUNS} SORT r.seq RETURN r")


def last_seq() -> Aql:
    return Aql(f"RETURN MAX((FOR r IN {RUNS} RETURN r.seq))")
