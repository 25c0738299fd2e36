"""The exporter's settings: one model, mapped onto ``--flags`` and ``RESOTOMETRICS_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath

from resotolib.auth import Psk
from resotolib.client import CoreUri
from resotolib.graph import DEFAULT_GRAPH, GraphName
from resotolib.protocol import MAX_TIMEOUT_SECONDS, SubscriberIdName, Subscription, TimeoutSeconds

MESSAGE_TYPE = "generate_metrics"


class MetricsConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    resotocore_uri: CoreUri = Field("http://127.0.0.1:8900", description="Base URL of the core.")
    psk: Psk = Field(
        None,
        repr=False,
        description="Pre-shared key of a core started with --psk; every request carries a JWT signed with it.",
    )
    ca_cert: FilePath | None = Field(None, description="PEM CA certificate to verify a core that serves HTTPS.")
    web_host: str = Field("127.0.0.1", description="Address to serve /metrics and /health on.")
    web_port: int = Field(9955, ge=0, le=65535, description="Port to serve /metrics and /health on (0: any free port).")
    subscriber_id: SubscriberIdName = Field(
        "resoto.metrics", description="Id this exporter subscribes with: 1-128 letters, digits and _.:@-."
    )
    timeout: TimeoutSeconds = Field(
        300,
        description=f"Seconds (1 to {MAX_TIMEOUT_SECONDS}) the core waits for an answer; also the time limit of "
        "one metrics update.",
    )
    metrics_file: Path | None = Field(
        None,
        description="YAML file of metric definitions; with 'extend: true' (the default) it adds to the built-in "
        "metrics and replaces those of the same name, with 'extend: false' it replaces them all. "
        "Not set: the built-in metrics only.",
    )
    graph: GraphName = Field(DEFAULT_GRAPH, description="Name of the graph in the core: 1-64 letters, digits, _ and -.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log lines as JSON, for humans, or JSON unless on a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")

    def subscriptions(self) -> list[Subscription]:
        """generate_metrics, waited for by the core for up to ``timeout`` seconds."""
        return [Subscription(message_type=MESSAGE_TYPE, wait_for_completion=True, timeout=self.timeout)]
