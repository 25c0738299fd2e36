"""The AQL each operation builds: user input travels only as bind variables, never in the query text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from resotocore.graph import aql
from resotolib.graph import AggregateRequest, Comparison, Filter, SearchRequest

HOSTILE = "\" RETURN 1 // x' REMOVE n IN graph_nodes /* @@c"
HOSTILE_PATH = "reported.x-1:REMOVE.n_IN.graph_nodes"  # letters, digits and _:- are all a path segment may hold
HOSTILE_GRAPH = 'g" FILTER true //'


def assert_bound(statement: aql.Aql, *values: Any) -> None:
    """Every value is a bind variable (somewhere in one) and no text of it shows in the query."""
    bound = repr(statement.bind_vars)
    for value in values:
        assert repr(value)[1:-1] in bound or value in statement.bind_vars.values(), value
        if isinstance(value, str) and len(value) > 3:
            assert value not in statement.query, (value, statement.query)
    for name in re.findall(r"@@?(\w+)", statement.query):
        key = name if f"@@{name}" not in statement.query else f"@{name}"
        assert key in statement.bind_vars, (name, statement.query)
    used = set(re.findall(r"@(@?\w+)", statement.query))
    assert used == set(statement.bind_vars), (used, statement.bind_vars)


def test_filters_bind_every_value_and_path_segment() -> None:
    f = Filter(
        ids=[HOSTILE], kinds=["k"], cloud=[HOSTILE], account=["a"], region=[],
        fields=[Comparison(path=HOSTILE_PATH, op="==", value=HOSTILE), Comparison(path="name", op=">", value=5),
                Comparison(path="reported.tags.x", op="in", value=[HOSTILE, None, True])],
        tags={HOSTILE: HOSTILE, "owner": None}, expired_before=datetime(2026, 1, 1, tzinfo=UTC), clean=True,
    )  # fmt: skip
    statement = aql.search(HOSTILE_GRAPH, SearchRequest(filter=f, limit=3, offset=2))
    assert_bound(statement, HOSTILE, HOSTILE_GRAPH, "x-1:REMOVE", "n_IN", "2026-01-01T00:00:00Z")
    bound = list(statement.bind_vars.values())
    start = bound.index("x-1:REMOVE") - 1
    assert bound[start : start + 4] == ["reported", "x-1:REMOVE", "n_IN", "graph_nodes"]  # one name per segment
    assert "n[@p" in statement.query and "SORT n.order LIMIT @" in statement.query
    assert "false" in statement.query  # region=[] matches nothing, like SQL's IN ()
    assert statement.bind_vars[next(k for k, v in statement.bind_vars.items() if v == "5")] == "5"  # name is text
    assert [HOSTILE, 1] in statement.bind_vars.values()  # NULL dropped from IN, true compares as 1


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (Comparison(path="reported.a", op="<", value=None), "false"),
        (Comparison(path="reported.a", op="not_in", value=[1, None]), "false"),
        (Comparison(path="reported.a", op="in", value=[]), "false"),
        (Comparison(path="reported.a", op="not_in", value=[]), "true"),
        (Comparison(path="reported.a", op="exists"), "!= null"),
        (Comparison(path="reported.a", op="<=", value=3), "!= null AND"),
        (Comparison(path="metadata.protected", op="==", value="1"), "(n.protected ? 1 : 0) =="),
    ],
)
def test_comparisons_follow_sql_null_and_type_rules(comparison: Comparison, expected: str) -> None:
    statement = aql.search("g", SearchRequest(filter=Filter(fields=[comparison])))
    assert expected in statement.query
    assert_bound(statement, "g")


def test_flag_and_text_columns_convert_values_like_sqlite_affinity() -> None:
    statement = aql.search("g", SearchRequest(filter=Filter(fields=[
        Comparison(path="metadata.protected", value="1"), Comparison(path="kind", value=2.0),
        Comparison(path="ctime", value=True)])))  # fmt: skip
    assert [v for k, v in statement.bind_vars.items() if k != "p0"] == [1, "2.0", "1"]


def test_search_without_paging_has_no_limit_and_edges_bind_their_collection() -> None:
    assert "LIMIT" not in aql.search("g", SearchRequest()).query
    edges = aql.search_edges(HOSTILE_GRAPH, SearchRequest(filter=Filter(kinds=[HOSTILE]), offset=4), "delete")
    assert edges.bind_vars["@edges"] == aql.EDGES["delete"]
    assert "FOR e IN @@edges" in edges.query and "SORT e.from_order, e.to_order" in edges.query
    assert_bound(edges, HOSTILE_GRAPH, HOSTILE)
    assert aql.NO_LIMIT in edges.bind_vars.values()


def test_aggregate_binds_paths_and_names_only_constants() -> None:
    request = AggregateRequest.model_validate({
        "filter": {"tags": {HOSTILE: None}},
        "group_by": ["account", HOSTILE_PATH],
        "functions": [
            {"function": "count", "as": "DROP_ALL"}, {"function": "sum", "path": HOSTILE_PATH, "as": "s"},
            {"function": "min", "path": "reported.size", "as": "m"},
        ],
    })  # fmt: skip
    statement = aql.aggregate(HOSTILE_GRAPH, request)
    assert_bound(statement, HOSTILE, HOSTILE_GRAPH, "x-1:REMOVE")
    assert "DROP_ALL" not in statement.query  # result names are applied in Python
    assert "COLLECT k0 = g0, k1 = g1 AGGREGATE a0 = SUM(1)" in statement.query
    assert "(c1 == 0 ? null : a1)" in statement.query and "a2 = MIN(v2)" in statement.query
    assert statement.query.endswith("RETURN [k0, k1, a0, (c1 == 0 ? null : a1), a2]")
    no_groups = aql.aggregate("g", AggregateRequest.model_validate({"functions": [{"function": "count", "as": "x"}]}))
    assert no_groups.query.endswith("COLLECT  AGGREGATE a0 = SUM(1) RETURN [a0]")


def test_writes_bind_documents_keys_and_reasons() -> None:
    clean = aql.clean(HOSTILE_GRAPH, Filter(kinds=[HOSTILE]), HOSTILE)
    assert_bound(clean, HOSTILE_GRAPH, HOSTILE)
    assert "n.clean == false" in clean.query and "UPDATE n WITH {clean: true, clean_reason: @" in clean.query
    docs = [{"_key": "k", "reported": {"name": HOSTILE}}]
    for statement in (
        aql.insert_nodes(docs), aql.insert_nodes(docs, overwrite=True), aql.update_nodes(docs),
        aql.insert_edges("default", docs), aql.replace_docs(aql.QUEUE, docs), aql.upsert_runs(docs),
        aql.remove_nodes([HOSTILE]), aql.remove_keys(aql.SUBSCRIBERS, [HOSTILE]), aql.nodes_by_key([HOSTILE]),
        aql.stored([HOSTILE]), aql.under_roots(HOSTILE_GRAPH, [HOSTILE]), aql.remove_edges("delete", [HOSTILE], []),
        aql.delete_nodes(HOSTILE_GRAPH), aql.delete_edges(HOSTILE_GRAPH, "default"), aql.exists(HOSTILE_GRAPH),
        aql.dump_nodes(HOSTILE_GRAPH), aql.dump_edges(HOSTILE_GRAPH, "delete"), aql.history(HOSTILE, 10, 5),
        aql.history_total(HOSTILE), aql.running("running"), aql.run_by_key(HOSTILE), aql.steps_of([HOSTILE]),
    ):  # fmt: skip
        assert HOSTILE not in statement.query and HOSTILE_GRAPH not in statement.query
        assert_bound(statement)
    assert "mergeObjects: false" in aql.update_nodes(docs).query
    assert 'UNSET(d, "seq")' in aql.upsert_runs(docs).query  # the insertion number stays on update
    assert 'overwriteMode: "ignore"' in aql.insert_edges("default", docs).query


def test_queries_without_input_are_constant() -> None:
    for statement in (aql.graphs(), aql.every_run(), aql.last_seq(), aql.all_docs(aql.TRIGGERS)):
        assert_bound(statement)
