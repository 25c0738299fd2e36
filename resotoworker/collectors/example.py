"""The ``example`` collector: lists and deletes the resources of the simulated cloud in
``<data_dir>/example-cloud.json`` (see example_cloud). A cleanup really removes resources, so the next
collect no longer sees them. Sized by the worker's ``--example-*`` options.

A delete returns once the state file holds it, as a real cloud's API answers once the deletion is
done. With ``--example-journal PATH`` every deletion is also appended to PATH as one JSON line (the
resource, and what the node said about it: marked for cleanup, why, expiry, protection) before the
state file is written, so an audit sees every deletion, including one cut short by a crash.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from resotolib.graph import Node
from resotoworker.collector import Collector, CollectorContext, GraphBatch, Progress
from resotoworker.collectors.example_cloud import (
    STATE_FILE,
    CloudSpec,
    ExampleCloud,
    ResourceGone,
    new_spec,
    write_atomically,
)

log = structlog.get_logger(__name__)


class ExampleCollector(Collector):
    cloud = "example"

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self._state: ExampleCloud | None = None
        self._lock = asyncio.Lock()
        self._generating = asyncio.Lock()  # CPU-bound: one account at a time is as fast, and holds one batch
        self._changes = 0
        self._saved_change = 0
        self._saving: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.context.data_dir / STATE_FILE

    def spec(self) -> CloudSpec:
        """The spec of a new cloud, from the worker's options."""
        options = self.context.options
        return new_spec(
            seed=int(options.get("example_seed", 42)),
            accounts=int(options.get("example_accounts", 2)),
            regions=int(options.get("example_regions", 2)),
            resources=int(options.get("example_resources", 20)),
        )

    async def state(self) -> ExampleCloud:
        async with self._lock:
            if self._state is None:
                wanted = self.spec()
                self._state = await asyncio.to_thread(ExampleCloud.open, self.path, wanted)
                found = self._state.spec
                sizes = (found.seed, found.accounts, found.regions, found.resources)
                if sizes != (wanted.seed, wanted.accounts, wanted.regions, wanted.resources):
                    log.warning("example_cloud_options_ignored", path=str(self.path), reason="the cloud exists")
                log.info("example_cloud_opened", path=str(self.path), created_at=found.now.isoformat())
            return self._state

    async def accounts(self) -> Sequence[str]:
        return (await self.state()).spec.account_ids()

    async def collect_account(self, account: str, progress: Progress) -> GraphBatch:
        cloud = await self.state()
        regions = cloud.spec.region_ids()
        batch = GraphBatch(self.cloud, account, account_name=account.replace("-", " ").title())
        async with self._generating:
            for done, region in enumerate(regions, 1):
                await asyncio.to_thread(add_region, batch, cloud, account, region)
                await progress(account, done, len(regions))
        return batch

    async def delete(self, node: Node) -> None:
        ancestors = node.metadata.get("ancestors")
        account = ancestors.get("account") if isinstance(ancestors, dict) else None
        region = ancestors.get("region") if isinstance(ancestors, dict) else None
        if not isinstance(account, str) or not isinstance(region, str):
            raise ValueError(f"node {node.id} has no account and region in metadata.ancestors")
        cloud = await self.state()
        if not cloud.indexed(account, region):
            async with self._lock:  # generating a region's index takes a moment: off the event loop
                await asyncio.to_thread(cloud.region_index, account, region)
        try:
            cloud.remove(account, region, str(node.reported["id"]))
        except ResourceGone:  # deleted by a cleanup that stopped before it wrote `cleaned` back
            log.info("example_resource_already_gone", node_id=node.id, account=account, region=region)
            return
        self._journal(node, account, region)
        self._changes += 1
        await self._saved(self._changes)

    def _journal(self, node: Node, account: str, region: str) -> None:
        """Append the deletion to --example-journal, if given (one small write, so no thread)."""
        path = self.context.options.get("example_journal")
        if not path:
            return
        meta = node.metadata
        entry = {
            "at": datetime.now(UTC).isoformat(), "pid": os.getpid(), "account": account, "region": region,
            "id": node.reported["id"], "kind": node.kind, "node_id": node.id, "clean": node.desired.get("clean"),
            "clean_reason": meta.get("clean_reason"), "expires": meta.get("expires"),
            "protected": meta.get("protected"),
        }  # fmt: skip
        with Path(path).open("a") as journal:
            journal.write(json.dumps(entry) + "\n")

    async def _saved(self, change: int) -> None:
        """Return once the state file holds `change`. Group commit: one write covers every change made
        while the previous write was in progress."""
        while self._saved_change < change:
            if self._saving is None or self._saving.done():
                self._saving = asyncio.get_running_loop().create_task(self._save())
            await asyncio.shield(self._saving)

    async def _save(self) -> None:
        cloud = await self.state()
        change, text = self._changes, cloud.dump()
        await asyncio.to_thread(write_atomically, cloud.path, text)
        self._saved_change = max(self._saved_change, change)


def add_region(batch: GraphBatch, cloud: ExampleCloud, account: str, region: str) -> None:
    """Add one region's resources to the batch, with a delete edge from each instance to its volumes."""
    batch.region(region)
    instances: dict[str, str] = {}
    for res in cloud.resources(account, region):
        nid = batch.resource(
            res.kind, region, res.id, tags=res.tags, ctime=res.ctime, protected=res.protected, **res.fields
        )
        if res.kind == "example_instance":
            instances[res.id] = nid
        elif res.attached_to is not None and res.attached_to in instances:
            batch.edge(instances[res.attached_to], nid, "delete")
