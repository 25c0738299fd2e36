"""What the aws collector lists: EC2 instances, EBS volumes and snapshots, security groups and S3 buckets.

Each function blocks (boto3) and returns plain `Resource` records; the collector turns them into
graph nodes and edges on the event loop. Every listing is paginated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import ClientError

from resotoworker.collectors.aws_session import DEFAULT_REGION, AwsAccount, describe, error_code

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_s3 import S3Client

log = structlog.get_logger(__name__)

INSTANCE = "aws_ec2_instance"
VOLUME = "aws_ec2_volume"
SNAPSHOT = "aws_ec2_snapshot"
SECURITY_GROUP = "aws_ec2_security_group"
BUCKET = "aws_s3_bucket"
PROTECTED_TAG = "resoto:protected"
DEFAULT_SECURITY_GROUP = "default"
# S3 answers these codes for the old region names of a bucket's location
LEGACY_LOCATIONS = {"": "us-east-1", "EU": "eu-west-1"}


@dataclass
class Resource:
    """One cloud resource as listed; `delete_first` holds (kind, id) of resources that must wait for it."""

    kind: str
    id: str
    region: str
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ctime: datetime | None = None
    protected: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    delete_first: list[tuple[str, str]] = field(default_factory=list)


def tags_of(tag_list: Iterable[Mapping[str, object]] | None) -> dict[str, str]:
    """AWS's ``[{"Key": k, "Value": v}]`` as a dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tag_list or [] if "Key" in t}


def is_protected(tags: Mapping[str, str]) -> bool:
    return tags.get(PROTECTED_TAG, "").strip().lower() == "true"


def utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


def enabled_regions(account: AwsAccount) -> list[str]:
    """The regions enabled for the account (opt-in regions only when opted in)."""
    regions = account.ec2(DEFAULT_REGION).describe_regions()["Regions"]
    return sorted(r["RegionName"] for r in regions if "RegionName" in r)


def collect_ec2(account: AwsAccount, region: str) -> list[Resource]:
    """Every instance, volume, own snapshot and security group of one region."""
    ec2 = account.ec2(region)
    return instances(ec2, region) + volumes(ec2, region) + snapshots(ec2, region) + security_groups(ec2, region)


def instances(ec2: EC2Client, region: str) -> list[Resource]:
    found = [
        instance
        for page in ec2.get_paginator("describe_instances").paginate()
        for reservation in page.get("Reservations", [])
        for instance in reservation.get("Instances", [])
        if instance.get("State", {}).get("Name") != "terminated"  # listed for a while after, but gone
    ]
    shapes = instance_shapes(ec2, region, {i["InstanceType"] for i in found if "InstanceType" in i})
    return [instance_resource(i, region, shapes) for i in found]


def instance_resource(instance: InstanceTypeDef, region: str, shapes: Mapping[str, tuple[int, float]]) -> Resource:
    tags = tags_of(instance.get("Tags"))
    instance_type = instance.get("InstanceType", "")
    cpu = instance.get("CpuOptions", {})
    cores, memory = shapes.get(instance_type, (cpu.get("CoreCount", 0) * cpu.get("ThreadsPerCore", 1), None))
    fields: dict[str, Any] = {
        "instance_type": instance_type,
        "instance_status": instance.get("State", {}).get("Name", "unknown"),
        "instance_cores": cores,
    }
    if memory is not None:
        fields["instance_memory"] = memory
    # attached volumes and the instance's security groups can only go once the instance is gone
    delete_first = [
        (VOLUME, mapping["Ebs"]["VolumeId"])
        for mapping in instance.get("BlockDeviceMappings", [])
        if "VolumeId" in mapping.get("Ebs", {})
    ]
    delete_first += [(SECURITY_GROUP, g["GroupId"]) for g in instance.get("SecurityGroups", []) if "GroupId" in g]
    return Resource(
        kind=INSTANCE,
        id=instance["InstanceId"],
        region=region,
        name=tags.get("Name"),
        tags=tags,
        ctime=utc(instance.get("LaunchTime")),
        protected=is_protected(tags),
        fields=fields,
        delete_first=delete_first,
    )


def instance_shapes(ec2: EC2Client, region: str, instance_types: set[str]) -> dict[str, tuple[int, float]]:
    """vCPUs and memory (GiB) per instance type; unknown when the account may not describe types."""
    shapes: dict[str, tuple[int, float]] = {}
    wanted = sorted(instance_types)
    try:
        for start in range(0, len(wanted), 100):  # at most 100 types per call
            chunk: Sequence[Any] = wanted[start : start + 100]
            for info in ec2.describe_instance_types(InstanceTypes=chunk).get("InstanceTypes", []):
                vcpus = info.get("VCpuInfo", {}).get("DefaultVCpus", 0)
                memory = info.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024
                shapes[info.get("InstanceType", "")] = (vcpus, memory)
    except ClientError as e:
        log.warning("aws_instance_types_unknown", region=region, error=describe(e))
    return shapes


def volumes(ec2: EC2Client, region: str) -> list[Resource]:
    found = []
    for page in ec2.get_paginator("describe_volumes").paginate():
        for volume in page.get("Volumes", []):
            tags = tags_of(volume.get("Tags"))
            fields = {
                "volume_size": volume.get("Size", 0),
                "volume_type": volume.get("VolumeType", ""),
                "volume_status": volume.get("State", "unknown"),
            }
            name = tags.get("Name")
            ctime = utc(volume.get("CreateTime"))
            found.append(Resource(VOLUME, volume["VolumeId"], region, name, tags, ctime, is_protected(tags), fields))
    return found


def snapshots(ec2: EC2Client, region: str) -> list[Resource]:
    found = []
    for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"]):
        for snapshot in page.get("Snapshots", []):
            tags = tags_of(snapshot.get("Tags"))
            fields = {
                "volume_id": snapshot.get("VolumeId", ""),
                "volume_size": snapshot.get("VolumeSize", 0),
                "snapshot_status": snapshot.get("State", "unknown"),
                "description": snapshot.get("Description", ""),
            }
            name = tags.get("Name")
            ctime = utc(snapshot.get("StartTime"))
            found.append(
                Resource(SNAPSHOT, snapshot["SnapshotId"], region, name, tags, ctime, is_protected(tags), fields)
            )
    return found


def security_groups(ec2: EC2Client, region: str) -> list[Resource]:
    found = []
    for page in ec2.get_paginator("describe_security_groups").paginate():
        for group in page.get("SecurityGroups", []):
            tags = tags_of(group.get("Tags"))
            name = group.get("GroupName", "")
            # the default group of a VPC cannot be deleted: never plan it for cleanup
            protected = is_protected(tags) or name == DEFAULT_SECURITY_GROUP
            fields = {"vpc_id": group.get("VpcId", ""), "description": group.get("Description", "")}
            found.append(Resource(SECURITY_GROUP, group["GroupId"], region, name, tags, None, protected, fields))
    return found


def buckets(account: AwsAccount, regions: Sequence[str]) -> list[Resource]:
    """The account's buckets located in one of `regions`, each under its own region."""
    s3 = account.s3(regions[0] if regions else DEFAULT_REGION)
    found = []
    for bucket in list_buckets(s3):
        name = bucket["Name"]
        try:
            region = bucket.get("BucketRegion") or bucket_region(s3, name)
            if region not in regions:
                continue
            tags, protected = bucket_tags(account.s3(region), name)
        except ClientError as e:
            if error_code(e) == "NoSuchBucket":
                continue  # deleted while we were listing
            raise
        found.append(Resource(BUCKET, name, region, name, tags, utc(bucket.get("CreationDate")), protected))
    return found


def list_buckets(s3: S3Client) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    token: str | None = None
    while True:
        # older S3 endpoints answer every bucket at once and no ContinuationToken
        page = s3.list_buckets(ContinuationToken=token) if token else s3.list_buckets()
        found += page.get("Buckets", [])
        token = page.get("ContinuationToken")
        if not token:
            return found


def bucket_region(s3: S3Client, name: str) -> str:
    location = s3.get_bucket_location(Bucket=name).get("LocationConstraint") or ""
    return LEGACY_LOCATIONS.get(location, location)


def bucket_tags(s3: S3Client, name: str) -> tuple[dict[str, str], bool]:
    """The bucket's tags and whether it is protected. A bucket without tags has none; one whose tags
    may not be read is kept protected, since nobody can tell whether it should be."""
    try:
        tags = tags_of(s3.get_bucket_tagging(Bucket=name).get("TagSet"))
    except ClientError as e:
        code = error_code(e)
        if code == "NoSuchTagSet":
            return {}, False
        if code == "AccessDenied":
            log.warning("aws_bucket_tags_denied", bucket=name, error=describe(e))
            return {}, True
        raise
    return tags, is_protected(tags)
