"""The global options of ``resotoctl`` and the one place that turns them into clients of the core.

``Connection`` is the settings model: each field is a flag before the command and a ``RESOTOCTL_*``
environment variable. ``Ctl`` travels to every command; its ``client()`` and ``subscriber()`` are the
only places a ``CoreClient`` or ``ActionSubscriber`` is made, so connection options (pre-shared key,
CA certificate, timeouts) reach every request through ``_connection_kwargs`` alone: a new connection
option is one field in ``Connection`` and one line there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath

from resotolib.auth import Psk
from resotolib.client import CoreClient, CoreUri
from resotolib.protocol import Subscription
from resotolib.subscriber import ActionSubscriber

ENV_PREFIX = "RESOTOCTL_"
LogLevel = Literal["auto", "debug", "info", "warning", "error"]


class Connection(BaseModel):
    """How to reach the core; every field is a global flag and a RESOTOCTL_* environment variable."""

    model_config = ConfigDict(frozen=True)

    resotocore_uri: CoreUri = Field("http://127.0.0.1:8900", description="Base URL of the core.")
    psk: Psk = Field(
        None,
        repr=False,
        description="Pre-shared key of a core started with --psk; every request carries a JWT signed with it.",
    )
    ca_cert: FilePath | None = Field(None, description="PEM CA certificate to verify a core that serves HTTPS.")
    request_timeout: float = Field(30.0, gt=0, description="Seconds to wait for the core to answer one request.")
    log_level: LogLevel = Field(
        "auto", description="Lowest level logged to stderr; auto: info for subscribe, warning otherwise."
    )


@dataclass(frozen=True)
class Ctl:
    """What every command gets: the connection settings and the output mode."""

    connection: Connection
    as_json: bool = False

    @property
    def url(self) -> str:
        return self.connection.resotocore_uri

    def client(self) -> CoreClient:
        return CoreClient(self.url, **_connection_kwargs(self.connection))

    def subscriber(self, subscriber_id: str, subscriptions: Sequence[Subscription]) -> ActionSubscriber:
        """A hook's subscriber: it owns its id, so finding the id taken before connecting ends it."""
        kwargs = _connection_kwargs(self.connection)
        return ActionSubscriber(self.url, subscriber_id, subscriptions, exclusive=True, **kwargs)


def _connection_kwargs(connection: Connection) -> dict[str, Any]:
    """Keyword arguments of every client beyond the URL: the single spot connection options are applied."""
    return {
        "request_timeout": connection.request_timeout,
        "psk": connection.psk,
        "ca_cert": connection.ca_cert,
    }
