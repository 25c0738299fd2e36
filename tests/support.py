"""Test support: a fake clock, a core process, websocket helpers for subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import click
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from pydantic import BaseModel

from resotocore.core import CORE, Core
from resotocore.db.arango_conn import ArangoConnection
from resotolib.settings import build, model_options

START = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
NEVER = "0 0 1 1 *"
"""A schedule that does not fire during a test, so only the runs a test starts exist."""


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that moves only when a test says so; due timers fire in order on advance()."""

    def __init__(self, now: datetime = START) -> None:
        self._now = now
        self._timers: list[tuple[datetime, int, FakeTimer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def call_at(self, when: datetime, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._seq), timer, callback))
        return timer

    def advance(self, delta: timedelta) -> None:
        target = self._now + delta
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback()
        self._now = target

    def pending(self) -> list[datetime]:
        return sorted(when for when, _, timer, _ in self._timers if not timer.cancelled)


CoreClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def core_of(client: TestClient[Any, Any]) -> Core:
    app: web.Application = client.app
    return app[CORE]


async def subscribe(
    client: TestClient[Any, Any], sid: str, *message_types: str, answer_within: int = 60, wait: bool = True
) -> aiohttp.ClientWebSocketResponse:
    """Register subscriptions the way Resoto's client does, then open the action channel."""
    for message_type in message_types:
        params = {"timeout": str(answer_within), "wait_for_completion": str(wait)}
        response = await client.post(f"/subscriber/{sid}/{message_type}", params=params)
        assert response.status == 200, await response.text()
    return await client.ws_connect(f"/subscriber/{sid}/handle")


async def receive_json(ws: aiohttp.ClientWebSocketResponse, within: float = 5) -> Any:
    msg = await asyncio.wait_for(ws.receive(), within)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r} {msg.extra!r}"
    return msg.json()


async def answer(ws: aiohttp.ClientWebSocketResponse, action: dict[str, Any], error: str | None = None) -> None:
    kind = "action_done" if error is None else "action_error"
    data: dict[str, Any] = {"task": action["data"]["task"], "step": action["data"]["step"]}
    if error is not None:
        data["error"] = error
    await ws.send_json({"kind": kind, "message_type": action["message_type"], "data": data})


async def settle(core: Core) -> None:
    """Let the core process what is in flight: socket reads, spawned tasks."""
    for _ in range(5):
        await asyncio.sleep(0.01)
        await core.engine.drain()


class CoreProcess:
    """A real `resotocore` process on a free loopback port."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.log: list[dict[str, Any]] = []

    async def start(self, within: float = 20) -> CoreProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resotocore", "--port", "0", "--data-dir", str(self.data_dir),
            "--log-format", "json", *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(within):
            while not self.url:
                entry = await self._next_log()
                if entry.get("event") == "listening":
                    self.url = str(entry["url"])
        self._drain = asyncio.get_running_loop().create_task(self._read_rest())
        return self

    async def _next_log(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stderr is not None
        line = await self.proc.stderr.readline()
        if not line:
            raise RuntimeError(f"resotocore exited early: {self.log}")
        try:
            entry: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            entry = {"event": "raw", "line": line.decode(errors="replace")}
        self.log.append(entry)
        return entry

    async def _read_rest(self) -> None:
        with contextlib.suppress(RuntimeError):
            while True:
                await self._next_log()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self, within: float = 10) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._drain, within)
        return code


StartCore = Callable[..., Awaitable[CoreProcess]]
"""The ``core_process`` fixture: starts a real core with the given flags."""


class LoggedProcess:
    """A real process of one of our commands, logging JSON lines that are collected as they come."""

    command = ""
    within = 10.0

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[dict[str, Any]] = []
        self._logged = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.command, "--log-format", "json", *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            try:
                entry: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                entry = {"event": "raw", "line": line.decode(errors="replace").rstrip()}
            async with self._logged:
                self.log.append(entry)
                self._logged.notify_all()
        async with self._logged:
            self._logged.notify_all()

    async def wait_for(self, event: str, within: float | None = None, after: int = 0) -> dict[str, Any]:
        """The first log entry named `event` at index `after` or later; fails with the log on timeout or exit."""
        limit = self.within if within is None else within

        def found() -> dict[str, Any] | None:
            return next((e for e in self.log[after:] if e.get("event") == event), None)

        try:
            async with asyncio.timeout(limit), self._logged:
                await self._logged.wait_for(lambda: found() is not None or self._reader is None or self._reader.done())
        except TimeoutError:
            raise AssertionError(f"{self.command} did not log {event} within {limit}s:\n{self.tail()}") from None
        entry = found()
        if entry is None:
            raise AssertionError(f"{self.command} exited before logging {event}:\n{self.tail()}")
        return entry

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float | None = None) -> int:
        assert self.proc is not None and self._reader is not None
        limit = self.within if within is None else within
        code = await asyncio.wait_for(self.proc.wait(), limit)
        await asyncio.wait_for(self._reader, limit)
        return code

    def tail(self, lines: int = 60) -> str:
        return "\n".join(json.dumps(e) for e in self.log[-lines:])


def free_ports(count: int) -> list[int]:
    """Ports free on loopback right now (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


ARANGO_URL = os.environ.get("RESOTOCORE_TEST_ARANGO_URL", "")
needs_arango = pytest.mark.skipif(
    not ARANGO_URL, reason="RESOTOCORE_TEST_ARANGO_URL is not set (an ArangoDB server, e.g. http://root:pw@host:8529)"
)


@contextlib.contextmanager
def arango_test_database() -> Iterator[ArangoConnection]:
    """A connection to a fresh database on the server at RESOTOCORE_TEST_ARANGO_URL, dropped afterwards."""
    parts = urlsplit(ARANGO_URL)
    url = f"{parts.scheme}://{parts.hostname}:{parts.port or 8529}"
    name = f"resoto_test_{uuid.uuid4().hex[:12]}"
    conn = ArangoConnection.connect(url, name, unquote(parts.username or "root"), unquote(parts.password or ""))
    try:
        yield conn
    finally:
        conn.drop()
        conn.close()


async def until(condition: Callable[[], bool], within: float = 5) -> None:
    """Wait for in-process state that offers no event to await (counters, connection tables)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - plain state, nothing to await
            await asyncio.sleep(0.002)


def parse_settings(config: type[BaseModel], prefix: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Flags and environment read into `config` as the programs read them (click's result: output, exit code)."""

    @click.command()
    @model_options(config, prefix)
    def parse(**values: Any) -> None:
        click.echo(build(config, values).model_dump_json())

    return CliRunner().invoke(parse, list(args), env=env)
