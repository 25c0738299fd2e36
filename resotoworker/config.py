"""The worker's settings: one model, mapped onto ``--flags`` and ``RESOTOWORKER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from resotolib.auth import Psk
from resotolib.client import CoreUri
from resotolib.graph import DEFAULT_GRAPH, GraphName
from resotolib.protocol import MAX_TIMEOUT_SECONDS, SubscriberIdName, Subscription, TimeoutSeconds


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("resotoworker"))


class WorkerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    resotocore_uri: CoreUri = Field("http://127.0.0.1:8900", description="Base URL of the core.")
    psk: Psk = Field(
        None,
        repr=False,
        description="Pre-shared key of a core started with --psk; every request carries a JWT signed with it.",
    )
    ca_cert: Path | None = Field(None, description="PEM CA certificate to verify a core that serves HTTPS.")
    collector: list[str] = Field(
        default_factory=lambda: ["example"],
        min_length=1,
        description="Collector plugin to run (repeatable), found by entry point in group resoto.collectors.",
    )
    cleanup: bool = Field(False, description="Subscribe to cleanup: delete the resources marked for cleanup.")
    cleanup_expired: bool = Field(
        False, description="Subscribe to cleanup_plan: mark expired resources of this worker's clouds for cleanup."
    )
    cleanup_dry_run: bool = Field(False, description="On cleanup, log what would be deleted; delete nothing.")
    subscriber_id: SubscriberIdName = Field(
        "resoto.worker", description="Id this worker subscribes with: 1-128 letters, digits and _.:@-."
    )
    timeout: TimeoutSeconds = Field(
        10800,
        description=f"Seconds (1 to {MAX_TIMEOUT_SECONDS}) the core waits for an answer; also the time limit of "
        "each collector.",
    )
    data_dir: Path = Field(default_factory=default_data_dir, description="Directory for the collectors' state.")
    graph: GraphName = Field(DEFAULT_GRAPH, description="Name of the graph in the core: 1-64 letters, digits, _ and -.")
    parallel_deletes: int = Field(10, ge=1, description="Resources deleted at the same time during cleanup.")
    example_accounts: int = Field(2, ge=1, description="Example cloud: number of accounts.")
    example_regions: int = Field(2, ge=1, description="Example cloud: regions per account.")
    example_resources: int = Field(20, ge=0, description="Example cloud: resources per region.")
    example_seed: int = Field(42, description="Example cloud: seed of the generated resources.")
    example_journal: Path | None = Field(
        None,
        description="Example cloud: append a JSON line per deleted resource to this file (an audit trail, "
        "written before the deletion is saved).",
    )
    aws_region: list[str] = Field(
        default_factory=list, description="AWS region to collect (repeatable; default: the account's enabled regions)."
    )
    aws_endpoint_url: str | None = Field(None, description="AWS endpoint URL, e.g. of a moto server or localstack.")
    aws_profile: list[str] = Field(
        default_factory=list, description="AWS profile to collect (repeatable; default: the default credentials)."
    )
    aws_role: str | None = Field(None, description="AWS role name to assume in each account given by --aws-account.")
    aws_account: list[str] = Field(
        default_factory=list, description="AWS account id to assume --aws-role in (repeatable)."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines as JSON, for humans, or JSON unless on a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")

    def subscriptions(self) -> list[Subscription]:
        """collect always; cleanup_plan with --cleanup-expired; cleanup with --cleanup."""
        types = ["collect"]
        if self.cleanup_expired:
            types.append("cleanup_plan")
        if self.cleanup:
            types.append("cleanup")
        return [Subscription(message_type=t, wait_for_completion=True, timeout=self.timeout) for t in types]
