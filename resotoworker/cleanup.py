"""The ``cleanup_plan`` and ``cleanup`` actions.

cleanup_plan first lifts its own earlier marks (reason ``expired``) from the resources of this worker's
clouds that are no longer expired, then marks the expired, unprotected resources (the core's clean
endpoint). cleanup lifts such stale marks as well (cleanup_plan may have failed or not run), fetches
what is marked and not yet cleaned, deletes it wave by wave in delete-edge
order (see ordering) with the collector of each resource's cloud, and writes the outcome back to the
graph after every wave: ``cleaned`` plus an event log entry for each deleted resource, an event log
entry with the reason for each failed or skipped one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from pydantic import JsonValue

from resotolib.graph import CleanRequest, Comparison, Filter, Node, NodePatch, SearchRequest
from resotoworker.collector import Collector
from resotoworker.handler import ActionFailed, GraphApi, Reporter, describe_error
from resotoworker.ordering import DeletePlan, delete_waves

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
EXPIRED = "expired"
"""The reason cleanup_plan marks with; only marks of this reason are lifted when they no longer hold."""
LISTED_FAILURES = 10
WRITE_BACK_BATCH = 1000
WRITE_BACK_SECONDS = 5.0
"""Within a wave, outcomes are written back every WRITE_BACK_BATCH resources or WRITE_BACK_SECONDS."""


async def cleanup_plan(clouds: Sequence[str], client: GraphApi, graph: str, reporter: Reporter, now: datetime) -> int:
    """Mark the expired resources of `clouds` for cleanup; returns how many were marked.

    First, marks set for expiry that no longer hold are lifted (see unmark_unexpired), so that a resource
    whose expiry was removed or moved into the future since it was marked is not deleted.
    """
    unmarked = await unmark_unexpired(clouds, client, graph, now)
    selector = Filter(cloud=list(clouds), expired_before=now, protected=False, cleaned=False)
    marked = await client.clean(graph, CleanRequest(filter=selector, reason=EXPIRED))
    log.info("expired_marked", clouds=list(clouds), marked=marked, unmarked=unmarked, expired_before=now.isoformat())
    message = f"marked {marked} expired resources of {', '.join(clouds)} for cleanup"
    await reporter.info(f"{message}; unmarked {unmarked} no longer expired")
    return marked


async def unmark_unexpired(clouds: Sequence[str], client: GraphApi, graph: str, now: datetime) -> int:
    """Lift the marks of reason ``expired`` on the resources of `clouds` that are not cleaned and no longer
    expired (no expiry, or not before `now`): the tags changed since, in the cloud (the next collect
    recomputes the expiry) or through a patch. Marks of any other reason, and protected resources (never
    deleted anyway), are left as they are. Each lifted mark gets an event log entry; returns how many."""
    reason = Comparison(path="metadata.clean_reason", op="==", value=EXPIRED)
    selector = Filter(cloud=list(clouds), clean=True, cleaned=False, protected=False, fields=[reason])
    found = client.search(graph, SearchRequest(filter=selector))
    stale = [item async for item in found if isinstance(item, Node) and stale_mark(item, now)]
    return await lift_marks(client, graph, stale, now)


async def lift_marks(client: GraphApi, graph: str, nodes: Sequence[Node], now: datetime) -> int:
    """Lift the cleanup marks of `nodes` (marked for an expiry that no longer holds at `now`), each with
    an event log entry; returns how many the core updated."""
    at = now.isoformat()
    patches: list[NodePatch] = []
    for node in nodes:
        expires = node.metadata.get("expires")
        why = f"no longer expired: expires {expires}" if expires else "no longer expired: no expiry"
        log.info("expired_unmarked", resource=describe(node), node_id=node.id, expires=expires)
        patches.append(NodePatch(id=node.id, clean=False, event_log=[_entry(at, "unmarked", why)]))
    unmarked = 0
    for start in range(0, len(patches), WRITE_BACK_BATCH):
        answer = await client.patch_nodes(graph, patches[start : start + WRITE_BACK_BATCH])
        unmarked += int(answer.get("updated", 0))  # a node gone since the search (a merge) is not counted
    return unmarked


def stale_mark(node: Node, now: datetime) -> bool:
    """Whether the node is marked for an expiry that no longer holds at `now`."""
    return node.metadata.get("clean_reason") == EXPIRED and not still_expired(node, now)


def still_expired(node: Node, now: datetime) -> bool:
    """Whether the node's expiry (``metadata.expires``, as the core computes it) is before `now` in whole
    seconds, as the core's ``expired_before`` compares; an expiry that cannot be read counts as expired,
    so that such a mark stays as it was set."""
    expires = node.metadata.get("expires")
    if expires is None:
        return False
    try:
        at = datetime.fromisoformat(expires) if isinstance(expires, str) else None
    except ValueError:
        at = None
    if at is None:
        return True
    return (at if at.tzinfo else at.replace(tzinfo=UTC)) < now.replace(microsecond=0)


@dataclass
class CleanupResult:
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Node id to why it was not deleted (the delete failed, or it was skipped)."""
    errors: list[str] = field(default_factory=list)
    """Everything that went wrong, one line each, for the answer."""


async def cleanup(
    collectors: Mapping[str, Collector],
    client: GraphApi,
    graph: str,
    reporter: Reporter,
    *,
    parallel: int,
    dry_run: bool,
    clock: Clock,
    actor: str,
) -> CleanupResult:
    """Delete every resource of `collectors`' clouds marked for cleanup; raise ActionFailed if any is left."""
    now = clock()
    nodes, stale, plan = await fetch_plan(client, graph, list(collectors), now)
    if stale and not dry_run:  # cleanup_plan lifts these too; it may not have run, or not to its end
        await lift_marks(client, graph, stale, now)
    log.info("cleanup_planned", resources=len(nodes), waves=len(plan.waves), cyclic=len(plan.cyclic), dry_run=dry_run)
    if dry_run:
        for number, wave in enumerate(plan.waves, 1):
            for nid in wave:
                log.info("cleanup_would_delete", wave=number, resource=describe(nodes[nid]), node_id=nid)
        await reporter.info(f"dry run: would delete {sum(map(len, plan.waves))} resources; nothing deleted")
        return CleanupResult()
    cleaner = _Cleaner(collectors, client, graph, reporter, nodes, plan, parallel, clock, actor)
    result = await cleaner.run()
    log.info("cleanup_finished", deleted=len(result.deleted), failed=len(result.failed))
    await reporter.info(f"deleted {len(result.deleted)} of {len(plan)} resources marked for cleanup")
    if result.errors:
        listed = "; ".join(result.errors[:LISTED_FAILURES])
        if len(result.errors) > LISTED_FAILURES:
            listed += f"; and {len(result.errors) - LISTED_FAILURES} more"
        raise ActionFailed(f"cleanup: {len(result.failed)} of {len(plan)} resources not deleted: {listed}")
    return result


@dataclass
class _Cleaner:
    collectors: Mapping[str, Collector]
    client: GraphApi
    graph: str
    reporter: Reporter
    nodes: dict[str, Node]
    plan: DeletePlan
    parallel: int
    clock: Clock
    actor: str
    result: CleanupResult = field(default_factory=CleanupResult)
    pending: list[NodePatch] = field(default_factory=list)
    """Outcomes not written back yet."""
    flushed_at: float = 0.0

    async def run(self) -> CleanupResult:
        for wave in self.plan.waves:
            await self._wave(wave)
            await self._flush()
        for nid in self.plan.cyclic:
            self._record(nid, "part of a cycle of delete dependencies")
        await self._flush()
        return self.result

    async def _wave(self, wave: list[str]) -> None:
        """Delete a wave with `parallel` workers taking ids in turn."""
        ids = iter(wave)
        self.flushed_at = time.monotonic()

        async def work() -> None:
            for nid in ids:
                self._record(nid, await self._delete(nid))
                if len(self.pending) >= WRITE_BACK_BATCH or time.monotonic() - self.flushed_at > WRITE_BACK_SECONDS:
                    await self._flush()

        await asyncio.gather(*(work() for _ in range(min(self.parallel, len(wave)))))

    async def _delete(self, nid: str) -> str | None:
        """None when deleted, else why not."""
        node = self.nodes[nid]
        blocker = self.plan.blocker(nid, self.result.failed)
        if blocker is not None:
            log.warning("cleanup_skipped", resource=describe(node), blocked_by=describe(self.nodes[blocker]))
            return f"skipped: {describe(self.nodes[blocker])} must be deleted first and was not"
        collector = self.collectors.get(ancestor(node, "cloud") or "")
        if collector is None:
            return f"no collector for cloud {ancestor(node, 'cloud')!r}"
        try:
            await collector.delete(node)
        except Exception as e:
            log.warning("cleanup_delete_failed", resource=describe(node), error=describe_error(e))
            return describe_error(e)
        log.info("resource_deleted", resource=describe(node), node_id=nid)
        return None

    def _record(self, nid: str, error: str | None) -> None:
        at = self.clock().isoformat()
        if error is None:
            self.result.deleted.append(nid)
            entry = _entry(at, "cleaned", f"deleted by {self.actor}")
            self.pending.append(NodePatch(id=nid, cleaned=True, event_log=[entry]))
        else:
            self.result.failed[nid] = error
            self.result.errors.append(f"{describe(self.nodes[nid])}: {error}")
            self.pending.append(NodePatch(id=nid, event_log=[_entry(at, "cleanup_failed", error)]))

    async def _flush(self) -> None:
        patches, self.pending = self.pending, []
        self.flushed_at = time.monotonic()
        if not patches:
            return
        try:
            await self.client.patch_nodes(self.graph, patches)
        except Exception as e:
            log.error("cleanup_write_back_failed", resources=len(patches), error=describe_error(e))
            self.result.errors.append(f"writing back {len(patches)} resources failed: {describe_error(e)}")
        done = len(self.result.deleted) + len(self.result.failed)
        await self.reporter.progress("cleanup", done, len(self.plan), [self.graph])


async def fetch_plan(
    client: GraphApi, graph: str, clouds: list[str], now: datetime
) -> tuple[dict[str, Node], list[Node], DeletePlan]:
    """In one search: the resources marked for cleanup (not cleaned, not protected, not marked for an
    expiry that no longer holds at `now`), those marked for such an expiry, and the order to delete the
    first in."""
    selector = Filter(cloud=clouds, clean=True, cleaned=False, protected=False)
    nodes: dict[str, Node] = {}
    stale: list[Node] = []
    edges: list[tuple[str, str]] = []
    async for item in client.search(graph, SearchRequest(filter=selector, with_edges="delete")):
        if isinstance(item, Node):
            if stale_mark(item, now):
                stale.append(item)
            else:
                nodes[item.id] = item
        elif item.edge_type == "delete":
            edges.append((item.from_id, item.to_id))
    return nodes, stale, delete_waves(nodes, edges)


def ancestor(node: Node, kind: str) -> str | None:
    ancestors = node.metadata.get("ancestors")
    value = ancestors.get(kind) if isinstance(ancestors, dict) else None
    return value if isinstance(value, str) else None


def describe(node: Node) -> str:
    """``cloud/account/region kind id``, how logs and answers name a resource."""
    where = "/".join(a for a in (ancestor(node, k) for k in ("cloud", "account", "region")) if a)
    return f"{where} {node.kind} {node.reported.get('id', node.id)}".strip()


def _entry(at: str, kind: str, message: str) -> dict[str, JsonValue]:
    return {"at": at, "kind": kind, "message": message}
