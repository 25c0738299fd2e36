"""The aws collector against a moto server on loopback: what it lists, how it deletes, how it fails.

Tests that only read share one populated cloud; tests that delete create their own resources.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from resotolib.graph import Node
from resotoworker.collector import CollectorContext, GraphBatch
from resotoworker.collectors import aws as aws_module
from resotoworker.collectors import aws_delete
from resotoworker.collectors.aws import AwsCollector
from resotoworker.collectors.aws_resources import enabled_regions
from resotoworker.collectors.aws_session import AwsAccount, AwsError
from tests.resotoworker.moto_support import ACCOUNT, create_bucket, ec2, moto_server, run_instance, s3, tag_spec

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client

REGIONS = ["us-east-1", "eu-west-1"]
CLOUDS = itertools.count()


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture(scope="module")
def cloud(moto_url: str) -> Cloud:
    """One populated cloud for the tests that only read."""
    return Cloud(moto_url)


def collector(moto_url: str, tmp_path: Path, **options: Any) -> AwsCollector:
    options = {"aws_endpoint_url": moto_url, "aws_region": REGIONS, **options}
    return AwsCollector(CollectorContext(data_dir=tmp_path, options=options))


class Cloud:
    """Resources in moto, by role; every instance of this class makes new ones."""

    def __init__(self, url: str) -> None:
        n = next(CLOUDS)
        east, west = ec2(url, "us-east-1"), ec2(url, "eu-west-1")
        self.web = run_instance(east, "t3.micro", {"Name": "web", "owner": "ops"})
        self.db = run_instance(east, "m5.large", {"resoto:protected": "true"})
        self.data = east.create_volume(
            Size=8,
            AvailabilityZone="us-east-1a",
            VolumeType="gp3",
            TagSpecifications=tag_spec("volume", {"app": "web"}),
        )["VolumeId"]
        east.attach_volume(VolumeId=self.data, InstanceId=self.web, Device="/dev/sdf")
        self.spare = east.create_volume(Size=3, AvailabilityZone="us-east-1b")["VolumeId"]
        self.snapshot = east.create_snapshot(
            VolumeId=self.spare, TagSpecifications=tag_spec("snapshot", {"backup": "daily"})
        )["SnapshotId"]
        self.group = east.create_security_group(GroupName=f"web-{n}", Description="web servers")["GroupId"]
        east.create_tags(Resources=[self.group], Tags=[{"Key": "team", "Value": "ops"}])
        self.default_group = east.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        self.west = run_instance(west, "t3.small")
        self.bucket = create_bucket(url, f"logs-{n}", objects=2, tags={"expiration": "1d"})
        self.versioned = create_bucket(url, f"versioned-{n}")
        east_s3 = s3(url)
        east_s3.put_bucket_versioning(Bucket=self.versioned, VersioningConfiguration={"Status": "Enabled"})
        for body in (b"one", b"two"):
            east_s3.put_object(Bucket=self.versioned, Key="doc", Body=body)
        east_s3.delete_object(Bucket=self.versioned, Key="doc")  # leaves a delete marker
        self.west_bucket = create_bucket(url, f"west-{n}", "eu-west-1")


def by_id(batch: GraphBatch) -> dict[str, Node]:
    return {str(node.reported["id"]): node for node in batch.nodes}


def region_of(batch: GraphBatch, node: Node) -> str:
    regions = {n.id: str(n.reported["id"]) for n in batch.nodes if n.kind == "region"}
    parents = [regions[e.from_id] for e in batch.edges if e.to_id == node.id and e.from_id in regions]
    assert len(parents) == 1, parents
    return parents[0]


def merged(batch: GraphBatch, node: Node) -> Node:
    """The node as the core hands it back: with its ancestors in the metadata."""
    ancestors = {"cloud": "aws", "account": batch.account, "region": region_of(batch, node)}
    return node.model_copy(update={"metadata": {**node.metadata, "ancestors": ancestors}})


async def collect(aws: AwsCollector) -> GraphBatch:
    """Collect the account, checking the progress: one step per region, then one for the buckets."""
    calls: list[tuple[str, int, int]] = []

    async def progress(name: str, current: int, total: int) -> None:
        calls.append((name, current, total))

    batch = await aws.collect_account(ACCOUNT, progress)
    steps = len({n.id for n in batch.nodes if n.kind == "region"}) + 1
    assert sorted(calls) == [(ACCOUNT, n, steps) for n in range(1, steps + 1)]
    return batch


async def test_accounts_of_default_credentials(moto_url: str, tmp_path: Path) -> None:
    assert await collector(moto_url, tmp_path).accounts() == [ACCOUNT]


async def test_collects_every_kind_with_tags_ctime_and_protection(moto_url: str, cloud: Cloud, tmp_path: Path) -> None:
    batch = await collect(collector(moto_url, tmp_path))
    nodes = by_id(batch)

    kinds = {(str(n.reported["id"]), n.kind, region_of(batch, n)) for n in batch.nodes if n.kind.startswith("aws_")}
    assert (cloud.web, "aws_ec2_instance", "us-east-1") in kinds
    assert (cloud.west, "aws_ec2_instance", "eu-west-1") in kinds
    assert (cloud.data, "aws_ec2_volume", "us-east-1") in kinds
    assert (cloud.snapshot, "aws_ec2_snapshot", "us-east-1") in kinds
    assert (cloud.group, "aws_ec2_security_group", "us-east-1") in kinds
    assert (cloud.bucket, "aws_s3_bucket", "us-east-1") in kinds
    assert (cloud.west_bucket, "aws_s3_bucket", "eu-west-1") in kinds

    web = nodes[cloud.web].reported
    assert web["name"] == "web" and web["tags"] == {"Name": "web", "owner": "ops"}
    assert (web["instance_type"], web["instance_status"], web["instance_cores"]) == ("t3.micro", "running", 2)
    assert web["instance_memory"] == 1.0
    assert nodes[cloud.data].reported["tags"] == {"app": "web"}
    assert nodes[cloud.data].reported["volume_size"] == 8
    assert nodes[cloud.data].reported["volume_type"] == "gp3"
    assert nodes[cloud.data].reported["volume_status"] == "in-use"
    assert nodes[cloud.snapshot].reported["volume_id"] == cloud.spare
    assert nodes[cloud.snapshot].reported["tags"] == {"backup": "daily"}
    assert nodes[cloud.group].reported["tags"] == {"team": "ops"}
    assert nodes[cloud.bucket].reported["tags"] == {"expiration": "1d"}
    assert nodes[cloud.west_bucket].reported["tags"] == {}
    for kind_id in (cloud.web, cloud.data, cloud.snapshot, cloud.bucket):
        ctime = datetime.fromisoformat(str(nodes[kind_id].reported["ctime"]))
        assert ctime.utcoffset() is not None and abs((datetime.now(ctime.tzinfo) - ctime).total_seconds()) < 600

    protected = {str(n.reported["id"]) for n in batch.nodes if n.metadata.get("protected")}
    assert cloud.db in protected and cloud.default_group in protected
    assert protected.isdisjoint({cloud.web, cloud.data, cloud.group, cloud.bucket})


async def test_delete_edges_put_instances_before_their_volumes(moto_url: str, cloud: Cloud, tmp_path: Path) -> None:
    batch = await collect(collector(moto_url, tmp_path))
    ids = {n.id: str(n.reported["id"]) for n in batch.nodes}
    kinds = {n.id: n.kind for n in batch.nodes}
    delete_edges = {(ids[e.from_id], ids[e.to_id]) for e in batch.edges if e.edge_type == "delete"}
    assert (cloud.web, cloud.data) in delete_edges
    assert {kinds[e.from_id] for e in batch.edges if e.edge_type == "delete"} == {"aws_ec2_instance"}
    root_volumes = {ids[e.to_id] for e in batch.edges if e.edge_type == "delete" and ids[e.from_id] == cloud.db}
    assert len(root_volumes) == 1  # moto gives every instance a root volume
    assert all(e.from_id in ids and e.to_id in ids for e in batch.edges)  # no edge to a node outside the batch
    assert len(batch.ndjson()) == len(batch.nodes) + len(batch.edges)


async def test_deletes_each_kind(moto_url: str, tmp_path: Path) -> None:
    cloud = Cloud(moto_url)
    aws = collector(moto_url, tmp_path)
    batch = await collect(aws)
    nodes = by_id(batch)
    east = ec2(moto_url, "us-east-1")

    with pytest.raises(AwsError, match=rf"account {ACCOUNT} region us-east-1: .*VolumeInUse"):
        await aws.delete(merged(batch, nodes[cloud.data]))  # still attached: the instance must go first

    await aws.delete(merged(batch, nodes[cloud.web]))
    state = east.describe_instances(InstanceIds=[cloud.web])["Reservations"][0]["Instances"][0]["State"]
    assert state.get("Name") == "terminated"
    await aws.delete(merged(batch, nodes[cloud.data]))
    await aws.delete(merged(batch, nodes[cloud.snapshot]))
    await aws.delete(merged(batch, nodes[cloud.group]))
    await aws.delete(merged(batch, nodes[cloud.bucket]))
    await aws.delete(merged(batch, nodes[cloud.versioned]))

    assert [v["VolumeId"] for v in east.describe_volumes()["Volumes"] if v["VolumeId"] == cloud.data] == []
    assert cloud.snapshot not in {s["SnapshotId"] for s in east.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert cloud.group not in {g["GroupId"] for g in east.describe_security_groups()["SecurityGroups"]}
    buckets = {b["Name"] for b in s3(moto_url).list_buckets()["Buckets"]}
    assert cloud.west_bucket in buckets and buckets.isdisjoint({cloud.bucket, cloud.versioned})

    after = by_id(await collect(aws))
    assert {cloud.web, cloud.data, cloud.snapshot, cloud.group, cloud.bucket, cloud.versioned}.isdisjoint(after)
    assert {cloud.db, cloud.spare, cloud.west, cloud.default_group, cloud.west_bucket} <= after.keys()

    await aws.delete(merged(batch, nodes[cloud.snapshot]))  # already gone: nothing to do


def volumes_of(client: EC2Client, instance_id: str) -> dict[str, tuple[str, bool]]:
    """Device name to (volume id, DeleteOnTermination) of every EBS volume attached to the instance."""
    instance = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {
        m["DeviceName"]: (m["Ebs"]["VolumeId"], m["Ebs"].get("DeleteOnTermination", False))
        for m in instance.get("BlockDeviceMappings", [])
        if "DeviceName" in m and "VolumeId" in m.get("Ebs", {})
    }


async def test_terminating_an_instance_deletes_none_of_its_volumes(moto_url: str, tmp_path: Path) -> None:
    """AWS deletes a volume attached with DeleteOnTermination along with its instance; the collector clears
    that flag first, so each volume goes (or stays) by its own cleanup decision."""
    east = ec2(moto_url, "us-east-1")
    instance = run_instance(east, tags={"resoto:expires": "2020-01-01T00:00:00Z"})
    data = east.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    east.attach_volume(VolumeId=data, InstanceId=instance, Device="/dev/sdf")
    east.modify_instance_attribute(
        InstanceId=instance, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}]
    )
    attached = volumes_of(east, instance)
    assert sorted(attached) == ["/dev/sda1", "/dev/sdf"] and all(delete for _, delete in attached.values())
    root = attached["/dev/sda1"][0]
    east.create_tags(Resources=[root], Tags=[{"Key": "resoto:protected", "Value": "true"}])
    aws = collector(moto_url, tmp_path)
    batch = await collect(aws)
    nodes = by_id(batch)
    assert nodes[root].metadata.get("protected") is True

    await aws.delete(merged(batch, nodes[instance]))
    state = east.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]
    assert state.get("Name") == "terminated"
    left = {v["VolumeId"]: v.get("State") for v in east.describe_volumes()["Volumes"] if v["VolumeId"] in (root, data)}
    assert left == {root: "available", data: "available"}

    await aws.delete(merged(batch, nodes[data]))  # the data volume was marked for cleanup as well
    assert [v["VolumeId"] for v in east.describe_volumes()["Volumes"] if v["VolumeId"] in (root, data)] == [root]


async def test_instance_stays_when_its_volumes_cannot_be_kept(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    east = ec2(moto_url, "us-east-1")
    instance = run_instance(east)
    aws = collector(moto_url, tmp_path)
    nodes = by_id(batch := await collect(aws))
    make_client = AwsAccount.ec2

    def client(self: AwsAccount, region: str) -> EC2Client:
        made = make_client(self, region)
        made.meta.events.register("before-parameter-build.ec2.ModifyInstanceAttribute", undone)
        return made

    monkeypatch.setattr(AwsAccount, "ec2", client)
    monkeypatch.setattr(aws_delete, "KEEP_CHECK_DELAY", 0.0)
    with pytest.raises(AwsError, match=rf"instance {instance} not terminated: its volumes vol-.* would still be"):
        await aws.delete(merged(batch, nodes[instance]))
    state = east.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]
    assert state.get("Name") == "running"
    assert all(delete for _, delete in volumes_of(east, instance).values())


def undone(params: dict[str, Any], **_: Any) -> None:
    """A botocore before-parameter-build hook: the call sets DeleteOnTermination back on instead of off."""
    for mapping in params.get("BlockDeviceMappings", []):
        mapping["Ebs"]["DeleteOnTermination"] = True


async def test_refuses_protected_and_unknown_nodes(moto_url: str, cloud: Cloud, tmp_path: Path) -> None:
    aws = collector(moto_url, tmp_path)
    batch = await collect(aws)
    nodes = by_id(batch)
    with pytest.raises(AwsError, match="is protected"):
        await aws.delete(merged(batch, nodes[cloud.db]))
    with pytest.raises(ValueError, match="no account and region"):
        await aws.delete(nodes[cloud.web])
    with pytest.raises(ValueError, match="cannot delete resources of kind region"):
        await aws.delete(nodes["us-east-1"])
    state = ec2(moto_url, "us-east-1").describe_instances(InstanceIds=[cloud.db])["Reservations"][0]["Instances"][0]
    assert state.get("State", {}).get("Name") == "running"


def deny(operation: str) -> Callable[..., None]:
    """A botocore before-call hook: the call fails as AWS answers a missing permission."""

    def denied(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not here"}}, operation)

    return denied


async def test_failing_region_fails_the_account_naming_it(
    moto_url: str, cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_client = AwsAccount.ec2

    def client(self: AwsAccount, region: str) -> EC2Client:
        made = make_client(self, region)
        if region == "eu-west-1":
            made.meta.events.register("before-call.ec2.DescribeInstances", deny("DescribeInstances"))
        return made

    monkeypatch.setattr(AwsAccount, "ec2", client)
    with pytest.raises(AwsError, match=rf"aws account {ACCOUNT} region eu-west-1: .*AccessDenied.*not here"):
        await collect(collector(moto_url, tmp_path))


async def test_bucket_whose_tags_cannot_be_read_is_protected(
    moto_url: str, cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_client = AwsAccount.s3

    def client(self: AwsAccount, region: str) -> S3Client:
        made = make_client(self, region)
        made.meta.events.register("before-call.s3.GetBucketTagging", deny("GetBucketTagging"), "deny-tags")
        return made

    monkeypatch.setattr(AwsAccount, "s3", client)
    bucket = by_id(await collect(collector(moto_url, tmp_path)))[cloud.bucket]
    assert bucket.metadata.get("protected") is True and bucket.reported["tags"] == {}


async def test_role_is_assumed_in_each_account(moto_url: str, tmp_path: Path) -> None:
    first, second = "111111111111", "222222222222"
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=moto_url)
    credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{first}:role/resoto", RoleSessionName="setup")["Credentials"]
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    volume = ec2(moto_url, "us-east-1", session).create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]

    aws = collector(moto_url, tmp_path, aws_role="resoto", aws_account=[first, second], aws_region=["us-east-1"])
    assert await aws.accounts() == [first, second]

    async def ignore(name: str, current: int, total: int) -> None:
        pass

    batches = {account: await aws.collect_account(account, ignore) for account in (first, second)}
    assert volume in by_id(batches[first]) and volume not in by_id(batches[second])
    assert batches[first].account == first
    await aws.delete(merged(batches[first], by_id(batches[first])[volume]))
    assert ec2(moto_url, "us-east-1", session).describe_volumes()["Volumes"] == []


async def test_default_regions_are_the_enabled_ones(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = collector(moto_url, tmp_path, aws_region=[])
    account = AwsAccount(ACCOUNT, boto3.Session(), aws.options)
    expected = sorted(r["RegionName"] for r in ec2(moto_url, "us-east-1").describe_regions()["Regions"])
    assert enabled_regions(account) == expected and "eu-west-1" in expected
    asked: list[str] = []

    def two_regions(account: AwsAccount) -> list[str]:  # collecting moto's 30+ regions takes long
        asked.append(account.account_id)
        return REGIONS

    monkeypatch.setattr(aws_module, "enabled_regions", two_regions)
    batch = await collect(aws)
    assert asked == [ACCOUNT]
    assert sorted(str(n.reported["id"]) for n in batch.nodes if n.kind == "region") == sorted(REGIONS)


async def test_profiles_are_accounts(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile ops]\naws_access_key_id = ops\naws_secret_access_key = ops\n"
        "[profile dev]\naws_access_key_id = dev\naws_secret_access_key = dev\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    # moto maps every plain key to one account; a profile that does not exist is left out
    assert await collector(moto_url, tmp_path, aws_profile=["ops", "missing", "dev"]).accounts() == [ACCOUNT]
    with pytest.raises(AwsError, match="none of the profiles missing could be reached"):
        await collector(moto_url, tmp_path, aws_profile=["missing"]).accounts()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="aws_account needs aws_role"):
        AwsCollector(CollectorContext(data_dir=Path("."), options={"aws_account": ["111111111111"]}))
    with pytest.raises(ValueError, match="at most one aws_profile"):
        AwsCollector(CollectorContext(data_dir=Path("."), options={"aws_role": "r", "aws_profile": ["a", "b"]}))
