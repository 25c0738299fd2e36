"""cleanup_plan lifts its own marks from resources no longer expired, against a real core on loopback.

Every case starts the same way: the resources are collected expired, cleanup_plan marks them and the
cleanup fails to delete any, so the marks stay. Then some are rescued (the expiry tag removed or moved
into the future, in the cloud and seen by the next collect, or through ``PATCH /graph/{graph}/nodes``),
and the next cleanup_plan and cleanup run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from resotolib.client import CoreClient
from resotolib.graph import CleanRequest, Filter, Node, NodePatch, SearchRequest
from resotoworker.cleanup import cleanup, cleanup_plan
from resotoworker.collector import GraphBatch
from resotoworker.handler import ActionFailed
from tests.resotoworker.support import FakeCollector, RecordingReporter
from tests.support import CoreClientFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
"""When the second cleanup_plan runs."""
CTIME = NOW - timedelta(days=10)
PAST = {"resoto:expires": "2026-03-01T00:00:00"}
FUTURE = {"resoto:expires": "2026-04-01T00:00:00"}
Tags = Mapping[str, str]


@pytest.fixture
async def core(core_client: CoreClientFactory) -> AsyncIterator[CoreClient]:
    client = await core_client()
    async with aiohttp.ClientSession() as session, CoreClient(str(client.server.make_url("")), session=session) as c:
        yield c


def collected(resources: Mapping[str, Tags]) -> list[str]:
    """A collect of cloud ``fake``, account a1, region r1: one resource per id with its tags."""
    batch = GraphBatch("fake", "a1")
    for provider_id, tags in resources.items():
        batch.resource("fake_thing", "r1", provider_id, tags=tags, ctime=CTIME)
    return batch.ndjson()


async def nodes(core: CoreClient) -> dict[str, Node]:
    """The resources by provider id."""
    found = core.search("resoto", SearchRequest(filter=Filter(kinds=["fake_thing"])))
    return {str(n.reported["id"]): n async for n in found if isinstance(n, Node)}


@dataclass
class Outcome:
    plan_info: str
    deleted: list[str]
    nodes: dict[str, Node]


async def rescue_run(
    core: CoreClient,
    resources: Mapping[str, Tags],
    *,
    manual: tuple[str, ...] = (),
    recollect: Mapping[str, Tags] | None = None,
    patches: Mapping[str, Mapping[str, str | None]] | None = None,
    plan: bool = True,
) -> Outcome:
    """Collect `resources` (those in `manual` marked by hand, reason "manual"), mark and fail to delete,
    then collect `recollect` (the cloud's tags now) and patch the tags of `patches`; then run
    cleanup_plan (unless not `plan`) and cleanup once more. Answers what the second run said and did."""
    await core.merge("resoto", collected(resources))
    ids = {pid: n.id for pid, n in (await nodes(core)).items()}
    if manual:
        by_hand = CleanRequest(filter=Filter(ids=[ids[pid] for pid in manual]), reason="manual")
        assert await core.clean("resoto", by_hand) == len(manual)
    await cleanup_plan(["fake"], core, "resoto", RecordingReporter(), NOW)
    failing = FakeCollector(failing_deletes=resources)
    with pytest.raises(ActionFailed):
        await cleanup({"fake": failing}, core, "resoto", RecordingReporter(), **cleanup_options())
    assert failing.deleted == []
    assert all(n.desired.get("clean") for n in (await nodes(core)).values()), "every resource stays marked"

    if recollect is not None:
        await core.merge("resoto", collected(recollect))
    if patches:
        await core.patch_nodes("resoto", [NodePatch(id=ids[pid], tags=dict(tags)) for pid, tags in patches.items()])

    plan_info = ""
    if plan:
        reporter = RecordingReporter()
        await cleanup_plan(["fake"], core, "resoto", reporter, LATER)
        [(_, plan_info)] = reporter.infos
    collector = FakeCollector()
    await cleanup({"fake": collector}, core, "resoto", RecordingReporter(), **cleanup_options())
    return Outcome(plan_info, sorted(collector.deleted), await nodes(core))


def cleanup_options() -> dict[str, Any]:
    return {"parallel": 4, "dry_run": False, "clock": lambda: LATER, "actor": "test.worker"}


def assert_unmarked(node: Node, message: str) -> None:
    assert node.desired == {} and not node.metadata.get("cleaned"), node
    assert node.metadata.get("clean_reason") is None, node  # no reason left behind
    log = node.metadata["event_log"]
    assert isinstance(log, list) and log[-1] == {"at": LATER.isoformat(), "kind": "unmarked", "message": message}


def assert_deleted(node: Node, reason: str) -> None:
    assert node.desired == {"clean": True} and node.metadata["cleaned"] is True, node
    assert node.metadata["clean_reason"] == reason
    log = node.metadata["event_log"]
    assert isinstance(log, list) and isinstance(log[-1], dict) and log[-1]["kind"] == "cleaned", node


async def test_a_resource_whose_expiry_was_removed_is_unmarked_and_kept(core: CoreClient) -> None:
    outcome = await rescue_run(
        core,
        {"in-cloud": PAST, "patched": PAST},
        recollect={"in-cloud": {"owner": "alice"}, "patched": PAST},  # the tag removed in the cloud
        patches={"patched": {"resoto:expires": None}},  # the tag removed in the graph
    )
    assert outcome.deleted == []
    for pid in ("in-cloud", "patched"):
        assert_unmarked(outcome.nodes[pid], "no longer expired: no expiry")
    assert outcome.plan_info == "marked 0 expired resources of fake for cleanup; unmarked 2 no longer expired"


async def test_cleanup_without_cleanup_plan_before_it_lifts_such_marks_itself(core: CoreClient) -> None:
    outcome = await rescue_run(
        core,
        {"rescued": PAST, "still-due": PAST},
        recollect={"rescued": {"owner": "alice"}, "still-due": PAST},
        plan=False,
    )
    assert outcome.deleted == ["still-due"]
    assert_unmarked(outcome.nodes["rescued"], "no longer expired: no expiry")
    assert_deleted(outcome.nodes["still-due"], "expired")


async def test_a_resource_whose_expiry_moved_into_the_future_is_unmarked_and_kept(core: CoreClient) -> None:
    outcome = await rescue_run(
        core,
        {"in-cloud": {"expiration": "1d"}, "patched": PAST},
        recollect={"in-cloud": {"expiration": "30d"}, "patched": PAST},  # ctime + 30 days: 2026-03-21
        patches={"patched": FUTURE},
    )
    assert outcome.deleted == []
    assert_unmarked(outcome.nodes["in-cloud"], "no longer expired: expires 2026-03-21T12:00:00Z")
    assert_unmarked(outcome.nodes["patched"], "no longer expired: expires 2026-04-01T00:00:00Z")
    assert outcome.plan_info == "marked 0 expired resources of fake for cleanup; unmarked 2 no longer expired"


async def test_a_mark_of_another_reason_stays_and_its_resource_is_deleted(core: CoreClient) -> None:
    # both rescued alike; only the mark cleanup_plan set for expiry is lifted
    outcome = await rescue_run(
        core,
        {"by-hand": PAST, "by-plan": PAST, "by-hand-never-expiring": {}},
        manual=("by-hand", "by-hand-never-expiring"),
        patches={"by-hand": {"resoto:expires": None}, "by-plan": {"resoto:expires": None}},
    )
    assert outcome.deleted == ["by-hand", "by-hand-never-expiring"]
    assert_deleted(outcome.nodes["by-hand"], "manual")
    assert_deleted(outcome.nodes["by-hand-never-expiring"], "manual")
    assert_unmarked(outcome.nodes["by-plan"], "no longer expired: no expiry")
    assert outcome.plan_info == "marked 0 expired resources of fake for cleanup; unmarked 1 no longer expired"


async def test_a_resource_still_expired_stays_marked_and_is_deleted(core: CoreClient) -> None:
    outcome = await rescue_run(
        core,
        {"untouched": PAST, "moved-but-past": PAST, "rescued": PAST},
        recollect={"untouched": PAST, "moved-but-past": {"resoto:expires": "2026-03-01T12:30:00"}, "rescued": {}},
    )
    assert outcome.deleted == ["moved-but-past", "untouched"]
    assert_deleted(outcome.nodes["untouched"], "expired")
    assert_deleted(outcome.nodes["moved-but-past"], "expired")
    assert_unmarked(outcome.nodes["rescued"], "no longer expired: no expiry")
    assert outcome.plan_info == "marked 0 expired resources of fake for cleanup; unmarked 1 no longer expired"


async def test_cleanup_alone_keeps_a_resource_no_longer_expired(core: CoreClient) -> None:
    # cleanup_plan does not run again (it failed, or the worker has --cleanup without --cleanup-expired)
    await core.merge("resoto", collected({"rescued": PAST, "expired": PAST}))
    await cleanup_plan(["fake"], core, "resoto", RecordingReporter(), NOW)
    rescued = (await nodes(core))["rescued"]
    await core.patch_nodes("resoto", [NodePatch(id=rescued.id, tags={"resoto:expires": None})])
    dry_run = RecordingReporter()
    await cleanup({"fake": FakeCollector()}, core, "resoto", dry_run, **{**cleanup_options(), "dry_run": True})
    assert [info for _, info in dry_run.infos] == ["dry run: would delete 1 resources; nothing deleted"]
    assert (await nodes(core))["rescued"].desired == {"clean": True}  # a dry run changes nothing
    collector = FakeCollector()
    await cleanup({"fake": collector}, core, "resoto", RecordingReporter(), **cleanup_options())
    assert collector.deleted == ["expired"]
    assert_unmarked((await nodes(core))["rescued"], "no longer expired: no expiry")
