"""Test support for the aws collector: a moto server on loopback, fake credentials, boto3 clients for it."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_s3 import S3Client

ACCOUNT = "123456789012"  # moto's account for any plain access key
AMI = "ami-12c6146b"
NO_TAGS: Mapping[str, str] = {}


def fake_aws_env(config_dir: Path) -> dict[str, str]:
    """Credentials moto accepts, and no user configuration that could point elsewhere."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config_dir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "aws-credentials"),
    }


@contextlib.contextmanager
def moto_server(config_dir: Path) -> Iterator[str]:
    """A moto server on a free loopback port, with this process's AWS environment set for it; yields its URL."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        for name, value in fake_aws_env(config_dir).items():
            env.setenv(name, value)
        # moto's stock AMIs come with 2,500 snapshots owned by the test account: keep the account empty
        env.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def ec2(url: str, region: str, session: boto3.Session | None = None) -> EC2Client:
    return session.client("ec2", region_name=region, endpoint_url=url) if session else _ec2(url, region)


@functools.cache
def _ec2(url: str, region: str) -> EC2Client:  # creating a client parses EC2's large model: do it once
    return boto3.client("ec2", region_name=region, endpoint_url=url)


@functools.cache
def s3(url: str, region: str = "us-east-1") -> S3Client:
    return boto3.client("s3", region_name=region, endpoint_url=url)


def tag_spec(kind: Any, tags: Mapping[str, str]) -> Any:
    """A TagSpecifications argument."""
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def run_instance(
    client: EC2Client,
    instance_type: InstanceTypeType = "t3.micro",
    tags: Mapping[str, str] = NO_TAGS,
    groups: Sequence[str] = (),
) -> str:
    spec = tag_spec("instance", tags) if tags else []
    reservation = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=instance_type, TagSpecifications=spec,
        SecurityGroupIds=list(groups),
    )  # fmt: skip
    return reservation["Instances"][0]["InstanceId"]


def create_bucket(
    url: str, name: str, region: str = "us-east-1", objects: int = 0, tags: Mapping[str, str] = NO_TAGS
) -> str:
    client = s3(url, region)
    location: Any = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    client.create_bucket(Bucket=name, **location)
    if tags:
        client.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
    for n in range(objects):
        client.put_object(Bucket=name, Key=f"objects/{n}.txt", Body=b"data")
    return name
