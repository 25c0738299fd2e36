"""Deletion order: waves along delete edges, cycles left out, blockers found."""

from __future__ import annotations

from resotoworker.ordering import delete_waves


def test_no_edges_is_one_wave_in_the_given_order() -> None:
    plan = delete_waves(["c", "a", "b"], [])
    assert plan.waves == [["c", "a", "b"]]
    assert plan.cyclic == []
    assert len(plan) == 3


def test_edges_put_successors_in_later_waves() -> None:
    # instance i1 before volumes v1, v2; v2 also after i2; b is free
    edges = [("i1", "v1"), ("i1", "v2"), ("i2", "v2")]
    plan = delete_waves(["v1", "v2", "i1", "b", "i2"], edges)
    assert plan.waves == [["i1", "b", "i2"], ["v1", "v2"]]
    assert plan.predecessors["v2"] == ["i1", "i2"]


def test_a_chain_is_one_wave_per_link() -> None:
    plan = delete_waves(["d", "c", "b", "a"], [("a", "b"), ("b", "c"), ("c", "d")])
    assert plan.waves == [["a"], ["b"], ["c"], ["d"]]


def test_a_node_waits_for_its_latest_predecessor() -> None:
    plan = delete_waves(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    assert plan.waves == [["a"], ["b"], ["c"]]


def test_edges_to_nodes_not_planned_and_self_loops_are_ignored() -> None:
    plan = delete_waves(["a", "b"], [("x", "a"), ("b", "y"), ("a", "a"), ("a", "b"), ("a", "b")])
    assert plan.waves == [["a"], ["b"]]
    assert plan.predecessors == {"b": ["a"]}


def test_cycles_and_what_depends_on_them_are_not_ordered() -> None:
    plan = delete_waves(["a", "b", "c", "d"], [("a", "b"), ("b", "a"), ("b", "c")])
    assert plan.waves == [["d"]]
    assert plan.cyclic == ["a", "b", "c"]
    assert len(plan) == 4


def test_duplicate_ids_are_planned_once() -> None:
    assert delete_waves(["a", "a", "b"], []).waves == [["a", "b"]]


def test_empty() -> None:
    plan = delete_waves([], [])
    assert plan.waves == []
    assert len(plan) == 0


def test_blocker_is_the_first_predecessor_not_deleted() -> None:
    plan = delete_waves(["i1", "i2", "v"], [("i1", "v"), ("i2", "v")])
    assert plan.blocker("v", set()) is None
    assert plan.blocker("v", {"i2"}) == "i2"
    assert plan.blocker("v", {"i1", "i2"}) == "i1"
    assert plan.blocker("i1", {"i2"}) is None
