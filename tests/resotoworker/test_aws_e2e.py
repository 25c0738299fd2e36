"""Core, worker and a moto server as real processes (moto in this one): the collect_and_cleanup workflow
deletes the expired, unprotected AWS resources, in dependency order, and nothing else.

moto stamps every resource with the time it was created, so expiry comes from ``resoto:expires``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from resotolib.client import CoreClient
from resotolib.graph import Filter, Node, SearchRequest
from tests.resotoworker.moto_support import NO_TAGS, create_bucket, ec2, moto_server, run_instance, s3, tag_spec
from tests.resotoworker.support import WorkerProcess, logs, run_workflow
from tests.support import StartCore

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

StartWorker = Callable[..., Awaitable[WorkerProcess]]

REGION = "us-east-1"
PAST = {"resoto:expires": "2024-01-01T00:00:00Z"}
FUTURE = {"resoto:expires": "2099-01-01T00:00:00Z"}
PROTECTED = {**PAST, "resoto:protected": "true"}
RUN_WITHIN = 60.0


class Resources:
    """What the test creates in moto: `doomed` must go, `kept` must stay (instance, volume, snapshot and
    security group ids, bucket names)."""

    def __init__(self, url: str) -> None:
        east = ec2(url, REGION)
        self.group = east.create_security_group(GroupName="doomed", Description="used by an expired instance")[
            "GroupId"
        ]
        east.create_tags(Resources=[self.group], Tags=[{"Key": k, "Value": v} for k, v in PAST.items()])
        self.instance = run_instance(east, tags=PAST, groups=[self.group])
        self.attached = volume(east, PAST)
        east.attach_volume(VolumeId=self.attached, InstanceId=self.instance, Device="/dev/sdf")
        # AWS would delete both volumes with the instance: the expired one must go, the protected root stay
        east.modify_instance_attribute(
            InstanceId=self.instance,
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}],
        )
        mappings = east.describe_instances(InstanceIds=[self.instance])["Reservations"][0]["Instances"][0].get(
            "BlockDeviceMappings", []
        )
        assert all(m.get("Ebs", {}).get("DeleteOnTermination") for m in mappings) and len(mappings) == 2
        root = next(m["Ebs"]["VolumeId"] for m in mappings if m.get("DeviceName") == "/dev/sda1")
        east.create_tags(Resources=[root], Tags=[{"Key": k, "Value": v} for k, v in PROTECTED.items()])
        kept_volume = volume(east)
        snapshot = east.create_snapshot(VolumeId=kept_volume, TagSpecifications=tag_spec("snapshot", PAST))
        protected_snapshot = east.create_snapshot(
            VolumeId=kept_volume, TagSpecifications=tag_spec("snapshot", PROTECTED)
        )
        versioned = create_bucket(url, "expired-versions", tags=PAST)
        s3(url).put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
        for body in (b"v1", b"v2"):
            s3(url).put_object(Bucket=versioned, Key="doc", Body=body)
        self.doomed = {
            self.group, self.instance, self.attached, volume(east, PAST), snapshot["SnapshotId"], versioned,
            create_bucket(url, "expired-logs", objects=3, tags=PAST),
        }  # fmt: skip
        self.kept = {
            run_instance(east, tags=PROTECTED), run_instance(east, tags=FUTURE), run_instance(east),
            kept_volume, root, volume(east, PROTECTED), volume(east, FUTURE), protected_snapshot["SnapshotId"],
            create_bucket(url, "protected-logs", objects=1, tags=PROTECTED), create_bucket(url, "kept"),
        }  # fmt: skip
        self.kept |= {g["GroupId"] for g in east.describe_security_groups()["SecurityGroups"]} - self.doomed


def volume(client: EC2Client, tags: Mapping[str, str] = NO_TAGS) -> str:
    spec = tag_spec("volume", tags) if tags else []
    return client.create_volume(Size=1, AvailabilityZone="us-east-1a", TagSpecifications=spec)["VolumeId"]


def in_moto(url: str) -> set[str]:
    """Ids of every resource moto still has (terminated instances do not count)."""
    east = ec2(url, REGION)
    found = {
        i["InstanceId"]
        for r in east.describe_instances()["Reservations"]
        for i in r.get("Instances", [])
        if i.get("State", {}).get("Name") != "terminated"
    }
    found |= {v["VolumeId"] for v in east.describe_volumes()["Volumes"]}
    found |= {s["SnapshotId"] for s in east.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    found |= {g["GroupId"] for g in east.describe_security_groups()["SecurityGroups"]}
    return found | {b["Name"] for b in s3(url).list_buckets().get("Buckets", [])}


async def aws_nodes(client: CoreClient) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    async for item in client.search("resoto", SearchRequest(filter=Filter(cloud=["aws"]))):
        if isinstance(item, Node) and item.kind.startswith("aws_"):
            nodes[str(item.reported["id"])] = item
    return nodes


async def test_collect_and_cleanup_deletes_expired_aws_resources(
    core_process: StartCore, worker_process: StartWorker, tmp_path: Path
) -> None:
    with moto_server(tmp_path / "aws") as url:  # the worker inherits this process's fake AWS credentials
        resources = Resources(url)
        doomed, kept = resources.doomed, resources.kept
        assert doomed | kept <= in_moto(url)
        core = await core_process()
        worker = await worker_process(
            "--resotocore-uri", core.url, "--collector", "aws", "--aws-endpoint-url", url, "--aws-region", REGION,
            "--cleanup", "--cleanup-expired", "--data-dir", str(tmp_path / "worker"), "--timeout", "60",
        )  # fmt: skip
        await worker.wait_for("subscriber_connected", within=20)
        async with CoreClient(core.url) as client:
            await run_workflow(client, core, worker, RUN_WITHIN)

            left = in_moto(url)
            assert left.isdisjoint(doomed), f"not deleted: {left & doomed}\n{logs(core, worker)}"
            assert kept <= left, f"deleted too much: {kept - left}\n{logs(core, worker)}"
            nodes = await aws_nodes(client)
            assert {i for i, n in nodes.items() if n.metadata.get("cleaned")} == doomed, logs(core, worker)
            # the instance went before its attached volume and its security group
            order = [e["id"] for e in worker.log if e.get("event") == "aws_resource_deleted"]
            assert order.index(resources.instance) < order.index(resources.attached), order
            assert order.index(resources.instance) < order.index(resources.group), order

            await run_workflow(client, core, worker, RUN_WITHIN)  # the next collect no longer sees them
            nodes = await aws_nodes(client)
            assert doomed.isdisjoint(nodes) and kept <= nodes.keys(), logs(core, worker)
            assert not any(n.metadata.get("cleaned") for n in nodes.values())
            assert kept <= in_moto(url)
