"""The local stack's questions to its host and its core: are its ports free, is its core ready, has everyone
subscribed, start the first run.

The ports are checked by binding them before anything starts: a port that is taken would make the core or
the exporter die at start, and another core answering on the port must never be mistaken for the stack's
own. Readiness is ``GET /system/ready`` (open without a key), and counts only while the core the stack
started still runs; the subscriptions are read from
``GET /subscribers/for/{action}`` and judged by ``stack_plan.missing_subscriptions``; the first run is
``POST /workflows/collect_and_cleanup/run``. Waiting polls every ``POLL_SECONDS``: the answers come
from other processes, so there is no event to wait on until the core is up.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from resotoctl.errors import CtlError
from resotoctl.stack_plan import HOST, SUBSCRIPTIONS, WORKFLOW, StackConfig, missing_subscriptions
from resotolib.auth import TokenSource
from resotolib.client import TRANSPORT_ERRORS, CoreClient

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.2
REQUEST_SECONDS = 5.0


def check_ports(config: StackConfig) -> None:
    """CtlError naming the port and its flag unless the core's and the exporter's ports can be bound on
    ``HOST``. Bound the way their servers bind (SO_REUSEADDR), so a port in TIME_WAIT counts as free."""
    if config.core_port == config.metrics_port:
        raise CtlError(f"--core-port and --metrics-port are both {config.core_port}; give them different ports")
    ports = (
        (config.core_port, "the core's API", "--core-port"),
        (config.metrics_port, "the exporter's /metrics", "--metrics-port"),
    )
    for port, what, flag in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError as e:
                why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror or e})"
                raise CtlError(f"port {port} on {HOST} {why}, needed for {what}; choose another with {flag}") from e


class Probe:
    """Requests of the stack to its own core, signed when the stack has a PSK."""

    def __init__(self, session: aiohttp.ClientSession, config: StackConfig) -> None:
        self._session = session
        self._config = config
        self._tokens = TokenSource(config.psk) if config.psk else None
        self._timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)

    async def wait_ready(self, running: Callable[[], bool]) -> None:
        """Until ``GET /system/ready`` answers 200 while ``running()`` says the stack's core still runs;
        CtlError after ``ready_timeout`` seconds. A core that died is the caller's news to report."""
        deadline = time.monotonic() + self._config.ready_timeout
        while not (await self._ready() and running()):
            if time.monotonic() > deadline:
                log_file = self._config.log_dir / "resotocore.log"
                raise CtlError(f"the core was not ready within {self._config.ready_timeout:g} s; see {log_file}")
            await asyncio.sleep(POLL_SECONDS)
        log.info("core_ready", url=self._config.core_url)

    async def wait_subscribed(self) -> None:
        """Until the worker and the exporter are listed for each of their actions; CtlError after
        ``ready_timeout`` seconds, naming what is missing."""
        deadline = time.monotonic() + self._config.ready_timeout
        while missing := missing_subscriptions(await self._subscribers()):
            if time.monotonic() > deadline:
                raise CtlError(
                    f"not subscribed within {self._config.ready_timeout:g} s: {', '.join(missing)}; "
                    f"see the logs in {self._config.log_dir}"
                )
            await asyncio.sleep(POLL_SECONDS)
        log.info("subscribed", actions=list(SUBSCRIPTIONS))

    async def run_workflow(self) -> dict[str, Any]:
        """Start the default workflow once; the answer says started, queued or skipped."""
        client = CoreClient(
            self._config.core_url, session=self._session, psk=self._config.psk, request_timeout=REQUEST_SECONDS
        )
        return await client.run_workflow(WORKFLOW)

    async def _ready(self) -> bool:
        try:
            async with self._session.get(f"{self._config.core_url}/system/ready", timeout=self._timeout) as response:
                return response.status == 200
        except TRANSPORT_ERRORS:
            return False

    async def _subscribers(self) -> dict[str, list[dict[str, Any]]]:
        """``GET /subscribers/for/{action}`` for each action the stack needs; a failed request counts as none."""
        found: dict[str, list[dict[str, Any]]] = {}
        headers = {"Authorization": self._tokens.authorization()} if self._tokens else {}
        for action in SUBSCRIPTIONS:
            url = f"{self._config.core_url}/subscribers/for/{action}"
            try:
                async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                    if response.status == 200:
                        body = await response.json()
                        found[action] = body if isinstance(body, list) else []
                    else:
                        log.warning("subscribers_not_read", status=response.status, body=await response.text())
            except (*TRANSPORT_ERRORS, ValueError) as e:
                log.warning("subscribers_not_read", error=repr(e))
        return found
