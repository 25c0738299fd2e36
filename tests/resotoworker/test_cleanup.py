"""cleanup_plan and cleanup: what is asked of the core, the order of deletes, what is written back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from resotolib.graph import Comparison, Edge, Filter, Node
from resotoworker import cleanup as cleanup_module
from resotoworker.cleanup import cleanup, cleanup_plan
from resotoworker.handler import ActionFailed
from tests.resotoworker.support import FakeCollector, FakeGraph, RecordingReporter, delete_edge, resource

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def marked(provider_id: str, expires: str | None) -> Node:
    """A resource marked for cleanup because it expired (at `expires`, as the core computed it then)."""
    node = resource(provider_id)
    return node.model_copy(update={"metadata": {**node.metadata, "clean_reason": "expired", "expires": expires}})


async def test_cleanup_plan_marks_the_expired_resources_of_the_workers_clouds() -> None:
    graph, reporter = FakeGraph(marked=7), RecordingReporter()
    assert await cleanup_plan(["example", "aws"], graph, "resoto", reporter, NOW) == 7
    [request] = graph.cleans
    assert request.filter == Filter(cloud=["example", "aws"], expired_before=NOW, protected=False, cleaned=False)
    assert request.reason == "expired"
    assert reporter.infos == [
        ("info", "marked 7 expired resources of example, aws for cleanup; unmarked 0 no longer expired")
    ]


async def test_cleanup_plan_first_lifts_its_marks_from_resources_no_longer_expired() -> None:
    items: list[Node | Edge] = [
        marked("gone", None), marked("later", "2026-03-01T12:00:00Z"), marked("earlier", "2026-03-01T11:59:59Z"),
        marked("unreadable", "soon"), marked("naive-later", "2026-03-02T00:00:00"),
    ]  # fmt: skip
    graph, reporter = FakeGraph(items, marked=2), RecordingReporter()
    assert await cleanup_plan(["fake"], graph, "resoto", reporter, NOW.replace(microsecond=500)) == 2
    [search] = graph.searches
    reason = Comparison(path="metadata.clean_reason", op="==", value="expired")
    assert search.filter == Filter(cloud=["fake"], clean=True, cleaned=False, protected=False, fields=[reason])
    [patches] = graph.patches
    assert [(p.id, p.clean, p.event_log[0]["message"]) for p in patches] == [
        ("n-gone", False, "no longer expired: no expiry"),
        ("n-later", False, "no longer expired: expires 2026-03-01T12:00:00Z"),  # not before now, in whole seconds
        ("n-naive-later", False, "no longer expired: expires 2026-03-02T00:00:00"),
    ]
    assert {(e["at"], e["kind"]) for p in patches for e in p.event_log} == {
        (NOW.replace(microsecond=500).isoformat(), "unmarked")
    }
    assert reporter.infos == [("info", "marked 2 expired resources of fake for cleanup; unmarked 3 no longer expired")]


async def run_cleanup(
    graph: FakeGraph, collector: FakeCollector, *, parallel: int = 10, dry_run: bool = False
) -> RecordingReporter:
    reporter = RecordingReporter()
    await cleanup(
        {collector.cloud: collector}, graph, "resoto", reporter,
        parallel=parallel, dry_run=dry_run, clock=clock, actor="test.worker",
    )  # fmt: skip
    return reporter


async def test_cleanup_deletes_in_dependency_order_and_writes_back() -> None:
    items: list[Node | Edge] = [resource("v1"), resource("v2"), resource("i1"), resource("b1")]
    items += [delete_edge("i1", "v1"), delete_edge("i1", "v2")]
    graph, collector = FakeGraph(items), FakeCollector()
    reporter = await run_cleanup(graph, collector)
    [search] = graph.searches
    assert search.filter == Filter(cloud=["fake"], clean=True, cleaned=False, protected=False)
    assert search.with_edges == "delete"
    assert collector.deleted[:2] in (["i1", "b1"], ["b1", "i1"])
    assert sorted(collector.deleted[2:]) == ["v1", "v2"]
    assert [[p.id for p in wave] for wave in graph.patches] == [["n-i1", "n-b1"], ["n-v1", "n-v2"]]
    patch = graph.patches[0][0]
    assert patch.cleaned is True
    assert patch.event_log == [{"at": NOW.isoformat(), "kind": "cleaned", "message": "deleted by test.worker"}]
    assert reporter.progress_calls[-1] == ("cleanup", 4, 4, ("resoto",))
    assert reporter.infos == [("info", "deleted 4 of 4 resources marked for cleanup")]


async def test_cleanup_lifts_marks_for_an_expiry_that_no_longer_holds_found_in_the_same_search() -> None:
    # cleanup_plan lifts these too, but it may not have run, or not to its end
    items: list[Node | Edge] = [
        resource("v1"),
        marked("later", "2026-03-02T00:00:00Z"),
        marked("due", "2026-03-01T11:00:00Z"),
    ]
    graph, collector = FakeGraph(items), FakeCollector()
    reporter = await run_cleanup(graph, collector)
    assert len(graph.searches) == 1
    assert sorted(collector.deleted) == ["due", "v1"]
    lifted, *written = graph.patches
    assert [(p.id, p.clean, p.event_log[0]["message"]) for p in lifted] == [
        ("n-later", False, "no longer expired: expires 2026-03-02T00:00:00Z")
    ]
    assert sorted(p.id for wave in written for p in wave if p.cleaned) == ["n-due", "n-v1"]
    assert reporter.infos == [("info", "deleted 2 of 2 resources marked for cleanup")]

    dry = FakeGraph(items)
    await run_cleanup(dry, FakeCollector(), dry_run=True)
    assert dry.patches == []


async def test_a_failed_delete_skips_what_depends_on_it() -> None:
    items: list[Node | Edge] = [resource("i1"), resource("v1"), resource("s1"), resource("b1")]
    items += [delete_edge("i1", "v1"), delete_edge("v1", "s1")]
    graph, collector = FakeGraph(items), FakeCollector(failing_deletes=["i1"])
    with pytest.raises(ActionFailed) as failed:
        await run_cleanup(graph, collector)
    assert collector.deleted == ["b1"]
    patches = {p.id: p for wave in graph.patches for p in wave}
    assert patches["n-b1"].cleaned is True
    for nid in ("n-i1", "n-v1", "n-s1"):
        assert patches[nid].cleaned is None
        assert patches[nid].event_log[0]["kind"] == "cleanup_failed"
    assert patches["n-i1"].event_log[0]["message"] == "RuntimeError: resource is locked"
    assert (
        patches["n-v1"].event_log[0]["message"] == "skipped: fake/a1/r1 fake_thing i1 must be deleted first and was not"
    )
    assert (
        patches["n-s1"].event_log[0]["message"] == "skipped: fake/a1/r1 fake_thing v1 must be deleted first and was not"
    )
    message = str(failed.value)
    assert message.startswith("cleanup: 3 of 4 resources not deleted: fake/a1/r1 fake_thing i1: RuntimeError")


async def test_cycles_unknown_clouds_and_write_back_failures_are_reported() -> None:
    items: list[Node | Edge] = [resource("a"), resource("b"), resource("z", cloud="elsewhere")]
    items += [delete_edge("a", "b"), delete_edge("b", "a")]
    graph, collector = FakeGraph(items), FakeCollector()
    graph.fail_patch = True
    with pytest.raises(ActionFailed) as failed:
        await run_cleanup(graph, collector)
    message = str(failed.value)
    assert "elsewhere/a1/r1 fake_thing z: no collector for cloud 'elsewhere'" in message
    assert "fake/a1/r1 fake_thing a: part of a cycle of delete dependencies" in message
    assert "writing back 1 resources failed: RuntimeError: core refused the patch" in message
    assert collector.deleted == []


async def test_deletes_run_in_parallel_up_to_the_limit() -> None:
    graph = FakeGraph([resource(f"r{n}") for n in range(25)])
    collector = FakeCollector()
    await run_cleanup(graph, collector, parallel=4)
    assert len(collector.deleted) == 25
    assert collector.max_active == 4


async def test_dry_run_deletes_and_patches_nothing() -> None:
    graph = FakeGraph([resource("i1"), resource("v1"), delete_edge("i1", "v1")])
    collector = FakeCollector()
    reporter = await run_cleanup(graph, collector, dry_run=True)
    assert collector.deleted == [] and graph.patches == []
    assert reporter.infos == [("info", "dry run: would delete 2 resources; nothing deleted")]


async def test_nothing_marked_is_a_quick_success() -> None:
    graph = FakeGraph()
    reporter = await run_cleanup(graph, FakeCollector())
    assert graph.patches == []
    assert reporter.infos == [("info", "deleted 0 of 0 resources marked for cleanup")]


async def test_outcomes_of_a_large_wave_are_written_back_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup_module, "WRITE_BACK_BATCH", 3)
    graph = FakeGraph([resource(f"r{n}") for n in range(10)])
    reporter = await run_cleanup(graph, FakeCollector(), parallel=2)
    assert len(graph.patches) >= 3
    assert sorted(p.id for batch in graph.patches for p in batch) == sorted(f"n-r{n}" for n in range(10))
    assert [call[1] for call in reporter.progress_calls] == sorted(call[1] for call in reporter.progress_calls)
