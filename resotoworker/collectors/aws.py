"""The ``aws`` collector: EC2 instances, EBS volumes and snapshots, security groups and S3 buckets of
every configured account, listed with boto3 and deleted on request.

Options (``CollectorContext.options``, set from the worker's flags):

- ``aws_region``: regions to collect; empty: every region enabled for the account.
- ``aws_endpoint_url``: send every call there (moto, localstack).
- ``aws_profile``: one account per profile; empty: the default credentials.
- ``aws_role`` and ``aws_account``: assume the role (a name) in each account through STS.

Buckets sit under their own region and are collected when that region is. Resources tagged
``resoto:protected=true`` and the ``default`` security groups are protected. Delete edges make instances
go before their attached volumes and their security groups. Terminating an instance deletes none of its
volumes (DeleteOnTermination is cleared first): each goes or stays by its own cleanup decision. With a
role, credentials are assumed again when they are about to expire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import structlog

from resotolib.graph import Node, node_id
from resotoworker.collector import Collector, CollectorContext, GraphBatch, Progress
from resotoworker.collectors import aws_delete
from resotoworker.collectors.aws_resources import Resource, buckets, collect_ec2, enabled_regions
from resotoworker.collectors.aws_session import DEFAULT_REGION, AwsAccounts, AwsError, AwsOptions, describe

log = structlog.get_logger(__name__)

PARALLEL_REGIONS = 4
BUCKETS = "s3"
P = ParamSpec("P")
T = TypeVar("T")


class AwsCollector(Collector):
    cloud = "aws"

    def __init__(self, context: CollectorContext) -> None:
        super().__init__(context)
        self.options = AwsOptions.from_options(context.options)
        self._accounts = AwsAccounts(self.options)

    async def accounts(self) -> Sequence[str]:
        return await asyncio.to_thread(self._accounts.discover)

    async def collect_account(self, account: str, progress: Progress) -> GraphBatch:
        """Every region of the account in parallel (a few at a time), then the buckets; one failing region
        fails the account with an error naming it."""
        aws = await asyncio.to_thread(self._accounts.get, account)
        regions = list(self.options.regions)
        if not regions:
            regions = await in_thread(where(account, DEFAULT_REGION), enabled_regions, aws)
        parts = [*regions, BUCKETS]
        done = 0
        limit = asyncio.Semaphore(PARALLEL_REGIONS)

        async def collect(part: str) -> list[Resource]:
            nonlocal done
            async with limit:
                if part == BUCKETS:
                    found = await in_thread(f"aws account {account} s3", buckets, aws, regions)
                else:
                    found = await in_thread(where(account, part), collect_ec2, aws, part)
            done += 1
            await progress(account, done, len(parts))
            return found

        log.info("aws_collect_started", account=account, regions=regions)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(collect(part)) for part in parts]
        except ExceptionGroup as failed:
            raise AwsError("; ".join(str(e) for e in failed.exceptions)) from failed
        batch = GraphBatch(self.cloud, account)
        for region in regions:
            batch.region(region)
        resources = [resource for task in tasks for resource in task.result()]
        add_resources(batch, resources)
        log.info("aws_collect_done", account=account, regions=len(regions), resources=len(resources))
        return batch

    async def delete(self, node: Node) -> None:
        if node.kind not in aws_delete.DELETERS:
            raise ValueError(
                f"aws cannot delete resources of kind {node.kind}; known: {', '.join(aws_delete.DELETERS)}"
            )
        account, region = location(node)
        resource_id = str(node.reported.get("id", ""))
        if node.metadata.get("protected") is True:
            raise AwsError(f"{where(account, region)}: {node.kind} {resource_id} is protected")
        aws = await asyncio.to_thread(self._accounts.get, account)
        await in_thread(where(account, region), aws_delete.delete, aws, node.kind, region, resource_id)
        log.info("aws_resource_deleted", account=account, region=region, kind=node.kind, id=resource_id)


def where(account: str, region: str) -> str:
    return f"aws account {account} region {region}"


async def in_thread(place: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking boto3 function in a thread; its failure becomes an AwsError naming the place."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except AwsError:
        raise
    except Exception as e:
        raise AwsError(f"{place}: {describe(e)}") from e


def location(node: Node) -> tuple[str, str]:
    """The node's account and region, from the ancestors the core records at merge."""
    ancestors = node.metadata.get("ancestors")
    account = ancestors.get("account") if isinstance(ancestors, dict) else None
    region = ancestors.get("region") if isinstance(ancestors, dict) else None
    if not isinstance(account, str) or not isinstance(region, str):
        raise ValueError(f"node {node.id} ({node.kind}) has no account and region in metadata.ancestors")
    return account, region


def add_resources(batch: GraphBatch, resources: Sequence[Resource]) -> None:
    """Add nodes, then the delete edges whose both ends were collected."""
    ids: set[str] = set()
    for res in resources:
        ids.add(
            batch.resource(
                res.kind,
                res.region,
                res.id,
                name=res.name,
                tags=res.tags,
                ctime=res.ctime,
                protected=res.protected,
                **res.fields,
            )
        )
    for res in resources:
        source = node_id(res.kind, batch.cloud, batch.account, res.region, res.id)
        for kind, resource_id in res.delete_first:
            target = node_id(kind, batch.cloud, batch.account, res.region, resource_id)
            if target in ids:
                batch.edge(source, target, "delete")
