"""The global options of ``resotoctl`` and the one place that turns them into clients of the core.

``Connection`` is the settings model: each field is a flag before the command and a ``RESOTOCTL_*``
environment variable. ``Ctl`` travels to every command; its ``client()`` and ``subscriber()`` are the
only places a ``CoreClient`` or ``ActionSubscriber`` is made, so connection options (the pre-shared
key among them) reach every request through ``_connection_kwargs`` alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from resotoctl.errors import CtlError
from resotolib.client import CoreClient
from resotolib.protocol import Subscription
from resotolib.subscriber import ActionSubscriber

ENV_PREFIX = "RESOTOCTL_"
LogLevel = Literal["debug", "info", "warning", "error"]


class Connection(BaseModel):
    """How to reach the core; every field is a global flag and a RESOTOCTL_* environment variable."""

    model_config = ConfigDict(frozen=True)

    resotocore_uri: str = Field("http://127.0.0.1:8900", description="Base URL of the core.")
    psk: str | None = Field(
        None, description="Pre-shared key of a core started with --psk; requests are signed with it."
    )
    request_timeout: float = Field(30.0, gt=0, description="Seconds to wait for the core to answer one request.")
    log_level: LogLevel | None = Field(
        None, description="Lowest level logged to stderr [default: info for subscribe, warning otherwise]."
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
        options = _connection_kwargs(self.connection, CoreClient)
        return CoreClient(self.url, request_timeout=self.connection.request_timeout, **options)

    def subscriber(self, subscriber_id: str, subscriptions: Sequence[Subscription]) -> ActionSubscriber:
        options = _connection_kwargs(self.connection, ActionSubscriber)
        timeout = self.connection.request_timeout
        return ActionSubscriber(self.url, subscriber_id, subscriptions, request_timeout=timeout, **options)


def _connection_kwargs(connection: Connection, target: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments for a client class beyond the URL: the single spot where ``--psk`` is applied.

    The key is passed as ``psk=`` once the client library accepts it; until then a given key is refused
    with a clear message instead of being ignored (requests would fail with 401 anyway).
    """
    if connection.psk is None:
        return {}
    if "psk" in inspect.signature(target).parameters:
        return {"psk": connection.psk}
    raise CtlError(f"--psk: {target.__name__} of this resotolib cannot sign requests yet")
