"""AWS accounts for the aws collector: its options, one boto3 session per account, and the account's clients.

An account is reached in one of three ways: the default credentials, one named profile per account
(``aws_profile``), or a role assumed through STS in every listed account (``aws_role`` + ``aws_account``).
Everything here blocks; the collector calls it through ``asyncio.to_thread``. boto3 clients are
thread-safe but sessions are not, so each account creates its clients under a lock and caches them
per service and region.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

log = structlog.get_logger(__name__)

DEFAULT_REGION = "us-east-1"
ROLE_SESSION_NAME = "resoto-worker"
REFRESH_BEFORE = timedelta(minutes=10)
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
PATH_STYLE = Config(s3={"addressing_style": "path"})


class AwsError(RuntimeError):
    """An AWS call failed; the message names the account (and region) it failed in."""


@dataclass(frozen=True)
class AwsOptions:
    """The collector's part of the worker settings (keys ``aws_*`` of ``CollectorContext.options``)."""

    regions: tuple[str, ...] = ()
    endpoint_url: str | None = None
    profiles: tuple[str, ...] = ()
    role: str | None = None
    accounts: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AwsOptions:
        endpoint_url = options.get("aws_endpoint_url") or None
        role = options.get("aws_role") or None
        return cls(
            regions=_strings(options.get("aws_region")),
            endpoint_url=str(endpoint_url) if endpoint_url else None,
            profiles=_strings(options.get("aws_profile")),
            role=str(role) if role else None,
            accounts=_strings(options.get("aws_account")),
        )


def _strings(value: Any) -> tuple[str, ...]:
    """None, one string or an iterable of strings, as a tuple without empty entries."""
    if value is None:
        return ()
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    return tuple(str(v) for v in items if v)


def describe(error: Exception) -> str:
    """A one-line description of a boto3 failure (the error code and message for service errors)."""
    return str(error) if isinstance(error, ClientError | BotoCoreError) else f"{type(error).__name__}: {error}"


def error_code(error: ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")


class AwsAccount:
    """One reachable account: its session and the clients created from it."""

    def __init__(
        self, account_id: str, session: boto3.Session, options: AwsOptions, expires: datetime | None = None
    ) -> None:
        self.account_id = account_id
        self.session = session
        self.expires = expires
        self._endpoint_url = options.endpoint_url
        self._lock = threading.Lock()
        self._ec2: dict[str, EC2Client] = {}
        self._s3: dict[str, S3Client] = {}

    def ec2(self, region: str) -> EC2Client:
        with self._lock:
            if region not in self._ec2:
                self._ec2[region] = self.session.client(
                    "ec2", region_name=region, endpoint_url=self._endpoint_url, config=CLIENT_CONFIG
                )
            return self._ec2[region]

    def s3(self, region: str) -> S3Client:
        with self._lock:
            if region not in self._s3:
                # custom endpoints (moto, localstack) are addressed by host, so buckets go in the path
                config = CLIENT_CONFIG.merge(PATH_STYLE) if self._endpoint_url else CLIENT_CONFIG
                self._s3[region] = self.session.client(
                    "s3", region_name=region, endpoint_url=self._endpoint_url, config=config
                )
            return self._s3[region]

    def needs_refresh(self, now: datetime) -> bool:
        return self.expires is not None and self.expires - now < REFRESH_BEFORE


class AwsAccounts:
    """Finds the configured accounts and hands out one `AwsAccount` per account id."""

    def __init__(self, options: AwsOptions) -> None:
        if options.role and len(options.profiles) > 1:
            raise ValueError("aws_role is assumed from one set of credentials: give at most one aws_profile")
        if options.accounts and not options.role:
            raise ValueError("aws_account needs aws_role: the role assumed in each account")
        self.options = options
        self._accounts: dict[str, AwsAccount] = {}
        self._lock = threading.Lock()

    def discover(self) -> list[str]:
        """The ids of every configured account; a profile that cannot be reached is logged and left out."""
        with self._lock:
            if self.options.role:
                return list(self.options.accounts) or [self._identify(self._base_profile)[1]]
            if not self.options.profiles:
                session, account_id = self._identify(None)
                self._accounts.setdefault(account_id, AwsAccount(account_id, session, self.options))
                return [account_id]
            found: list[str] = []
            for profile in self.options.profiles:
                try:
                    session, account_id = self._identify(profile)
                except AwsError as e:
                    log.error("aws_profile_unreachable", profile=profile, error=str(e))
                    continue
                self._accounts.setdefault(account_id, AwsAccount(account_id, session, self.options))
                if account_id not in found:
                    found.append(account_id)
            if not found:
                raise AwsError(f"aws: none of the profiles {', '.join(self.options.profiles)} could be reached")
            return found

    def get(self, account_id: str) -> AwsAccount:
        """The account's session and clients; with a role, the role is (re-)assumed when needed."""
        with self._lock:
            account = self._accounts.get(account_id)
            if self.options.role and (account is None or account.needs_refresh(datetime.now(UTC))):
                account = self._accounts[account_id] = self._assume_role(account_id, self.options.role)
        if account is None:
            self.discover()
            account = self._accounts.get(account_id)
        if account is None:
            raise AwsError(f"aws account {account_id} is not reachable with the configured credentials")
        return account

    @property
    def _base_profile(self) -> str | None:
        """The profile the role is assumed from (None: the default credentials)."""
        return self.options.profiles[0] if self.options.profiles else None

    def _sts(self, session: boto3.Session) -> STSClient:
        region = session.region_name or DEFAULT_REGION
        return session.client("sts", region_name=region, endpoint_url=self.options.endpoint_url, config=CLIENT_CONFIG)

    def _identify(self, profile: str | None) -> tuple[boto3.Session, str]:
        """A session of the profile (None: the default credentials) and the id of the account it belongs to."""
        try:
            session = boto3.Session(profile_name=profile)
            return session, self._sts(session).get_caller_identity()["Account"]
        except (ClientError, BotoCoreError) as e:
            credentials = f"profile {profile}" if profile else "the default credentials"
            raise AwsError(f"aws: cannot identify the account of {credentials}: {describe(e)}") from e

    def _assume_role(self, account_id: str, role: str) -> AwsAccount:
        arn = f"arn:aws:iam::{account_id}:role/{role}"
        try:
            sts = self._sts(boto3.Session(profile_name=self._base_profile))
            credentials = sts.assume_role(RoleArn=arn, RoleSessionName=ROLE_SESSION_NAME)["Credentials"]
        except (ClientError, BotoCoreError) as e:
            raise AwsError(f"aws account {account_id}: cannot assume role {arn}: {describe(e)}") from e
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        log.info("aws_role_assumed", account=account_id, role=arn, expires=credentials["Expiration"].isoformat())
        return AwsAccount(account_id, session, self.options, credentials["Expiration"])
