"""How the aws collector deletes one resource of each kind it lists.

Each function blocks (boto3) and raises on failure. A resource that is already gone counts as
deleted. Terminating an instance deletes none of its volumes: AWS would delete every volume attached
with DeleteOnTermination along with the instance, protected or not, so that flag is cleared first and
each volume is deleted (or kept) by its own cleanup decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import ClientError

from resotoworker.collectors.aws_resources import BUCKET, INSTANCE, SECURITY_GROUP, SNAPSHOT, VOLUME
from resotoworker.collectors.aws_session import AwsAccount, error_code

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceBlockDeviceMappingSpecificationTypeDef, WaiterConfigTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = structlog.get_logger(__name__)

# terminate waits for the instance to be gone (so its volumes are free), at most 10 minutes
TERMINATE_WAIT: WaiterConfigTypeDef = {"Delay": 5, "MaxAttempts": 120}
GONE = {
    "InvalidInstanceID.NotFound",
    "InvalidVolume.NotFound",
    "InvalidSnapshot.NotFound",
    "InvalidGroup.NotFound",
    "NoSuchBucket",
}
DELETE_BATCH = 1000  # most keys one DeleteObjects call takes
# after clearing DeleteOnTermination, how often and how many seconds apart terminate checks that it took
KEEP_CHECKS = 5
KEEP_CHECK_DELAY = 2.0

Deleter = Callable[[AwsAccount, str, str], None]


def terminate_instance(account: AwsAccount, region: str, instance_id: str) -> None:
    """Terminate the instance once none of its volumes would go with it."""
    ec2 = account.ec2(region)
    keep_volumes(ec2, instance_id)
    ec2.terminate_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=TERMINATE_WAIT)


def keep_volumes(ec2: EC2Client, instance_id: str) -> None:
    """Clear DeleteOnTermination on every EBS volume attached to the instance; raise unless the instance then
    reports it cleared on all of them (the change may take a moment to show)."""
    deleted_along = volumes_deleted_along(ec2, instance_id)
    if not deleted_along:
        return
    mappings: list[InstanceBlockDeviceMappingSpecificationTypeDef] = [
        {"DeviceName": device, "Ebs": {"DeleteOnTermination": False}} for device in deleted_along
    ]
    ec2.modify_instance_attribute(InstanceId=instance_id, BlockDeviceMappings=mappings)
    log.info("aws_instance_volumes_kept", id=instance_id, volumes=sorted(deleted_along.values()))
    for check in range(KEEP_CHECKS):
        if check:
            time.sleep(KEEP_CHECK_DELAY)
        deleted_along = volumes_deleted_along(ec2, instance_id)
        if not deleted_along:
            return
    raise RuntimeError(
        f"instance {instance_id} not terminated: its volumes {', '.join(sorted(deleted_along.values()))} "
        "would still be deleted with it (DeleteOnTermination could not be cleared)"
    )


def volumes_deleted_along(ec2: EC2Client, instance_id: str) -> dict[str, str]:
    """Device name to volume id of the attached EBS volumes AWS would delete with the instance."""
    reservations = ec2.describe_instances(InstanceIds=[instance_id]).get("Reservations", [])
    return {
        mapping["DeviceName"]: mapping["Ebs"].get("VolumeId", "?")
        for reservation in reservations
        for instance in reservation.get("Instances", [])
        if instance.get("State", {}).get("Name") not in ("shutting-down", "terminated")  # too late to change
        for mapping in instance.get("BlockDeviceMappings", [])
        if "DeviceName" in mapping and mapping.get("Ebs", {}).get("DeleteOnTermination") is True
    }


def delete_volume(account: AwsAccount, region: str, volume_id: str) -> None:
    account.ec2(region).delete_volume(VolumeId=volume_id)


def delete_snapshot(account: AwsAccount, region: str, snapshot_id: str) -> None:
    account.ec2(region).delete_snapshot(SnapshotId=snapshot_id)


def delete_security_group(account: AwsAccount, region: str, group_id: str) -> None:
    account.ec2(region).delete_security_group(GroupId=group_id)


def delete_bucket(account: AwsAccount, region: str, name: str) -> None:
    """Empty the bucket (every object version, delete marker and unfinished upload), then delete it."""
    s3 = account.s3(region)
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    batch: list[ObjectIdentifierTypeDef] = []
    for key in object_versions(s3, name):
        batch.append(key)
        if len(batch) == DELETE_BATCH:
            delete_objects(s3, name, batch)
            batch = []
    if batch:
        delete_objects(s3, name, batch)
    s3.delete_bucket(Bucket=name)


def object_versions(s3: S3Client, name: str) -> Iterator[ObjectIdentifierTypeDef]:
    """Every object version and delete marker (unversioned objects are the version "null")."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if "Key" in entry and "VersionId" in entry:
                yield {"Key": entry["Key"], "VersionId": entry["VersionId"]}


def delete_objects(s3: S3Client, name: str, keys: list[ObjectIdentifierTypeDef]) -> None:
    errors = s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True}).get("Errors", [])
    if errors:
        first = errors[0]
        raise RuntimeError(
            f"{len(errors)} objects of bucket {name} could not be deleted, "
            f"e.g. {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
        )


DELETERS: dict[str, Deleter] = {
    INSTANCE: terminate_instance,
    VOLUME: delete_volume,
    SNAPSHOT: delete_snapshot,
    SECURITY_GROUP: delete_security_group,
    BUCKET: delete_bucket,
}


def delete(account: AwsAccount, kind: str, region: str, resource_id: str) -> None:
    """Delete one resource of a kind in DELETERS; a resource that is already gone is not an error."""
    try:
        DELETERS[kind](account, region, resource_id)
    except ClientError as e:
        if error_code(e) not in GONE:
            raise
        log.info("aws_resource_already_gone", kind=kind, id=resource_id, region=region)
