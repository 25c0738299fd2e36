"""The collect handler: parallel collectors and accounts, merge per account, failures named."""

from __future__ import annotations

import pytest

from resotoworker.collect import collect
from resotoworker.handler import ActionFailed
from tests.resotoworker.support import FakeCollector, FakeGraph, RecordingReporter


class OtherCollector(FakeCollector):
    cloud = "other"


async def test_every_account_of_every_collector_is_merged() -> None:
    graph, reporter = FakeGraph(), RecordingReporter()
    await collect([FakeCollector(), OtherCollector(["b1"])], graph, "resoto", 10, reporter)
    assert set(graph.merges) == {"a1", "a2", "a3", "b1"}
    things = [line for line in graph.merges["a2"] if line.get("reported", {}).get("kind") == "fake_thing"]
    assert [t["reported"]["id"] for t in things] == ["a2-0", "a2-1"]
    parts = {  # one part per account: listed (0 of 1), then as its collector counts
        account: [call[1:] for call in reporter.progress_calls if call[0] == account]
        for account in ("a1", "a2", "a3", "b1")
    }
    cloud = {"a1": "fake", "a2": "fake", "a3": "fake", "b1": "other"}
    assert parts == {a: [(0, 1, (c, a)), (1, 2, (c, a)), (2, 2, (c, a))] for a, c in cloud.items()}
    assert len(reporter.progress_calls) == 12
    assert reporter.infos == []


async def test_a_failing_account_is_named_and_the_others_are_merged() -> None:
    graph, reporter = FakeGraph(), RecordingReporter()
    graph.fail_merge = {"a3"}
    with pytest.raises(ActionFailed) as failed:
        await collect([FakeCollector(failing=["a2"])], graph, "resoto", 10, reporter)
    assert set(graph.merges) == {"a1"}
    message = str(failed.value)
    assert message.startswith("collect failed for 2 of 3 accounts")
    assert "fake/a2: collecting failed: PermissionError: access denied" in message
    assert "fake/a3: merging failed: RuntimeError: merge of a3 refused" in message
    assert [level for level, _ in reporter.infos] == ["error", "error"]


async def test_a_collector_over_its_time_limit_fails_only_its_unfinished_accounts() -> None:
    graph = FakeGraph()
    with pytest.raises(ActionFailed, match=r"fake/a2: collecting failed: timed out after 0.2s"):
        await collect(
            [FakeCollector(hanging=["a2"]), OtherCollector(["b1"])], graph, "resoto", 0.2, RecordingReporter()
        )
    assert set(graph.merges) == {"a1", "a3", "b1"}


async def test_a_collector_that_cannot_list_its_accounts() -> None:
    class Broken(FakeCollector):
        async def accounts(self) -> list[str]:
            raise ConnectionError("no route")

    graph = FakeGraph()
    with pytest.raises(ActionFailed, match=r"fake: listing accounts failed: ConnectionError: no route"):
        await collect([Broken(), OtherCollector(["b1"])], graph, "resoto", 10, RecordingReporter())
    assert set(graph.merges) == {"b1"}
