"""Shared fixtures: a fake clock, a core on loopback, event sockets, core processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from resotocore.app import create_app
from resotocore.config import CoreConfig
from resotocore.workflow.model import Workflow
from tests.support import CoreClientFactory, CoreProcess, FakeClock

# Core processes started by tests (directly, or by the stack and chaos harnesses) must not start runs
# of their own at the top of the hour while a test counts runs: their schedule is once a year.
os.environ.setdefault("RESOTOCORE_SCHEDULE", "0 0 1 1 *")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> CoreConfig:
    return CoreConfig(data_dir=tmp_path / "data", port=0, heartbeat=5)


@pytest.fixture
def core_client(aiohttp_client: Any, config: CoreConfig, clock: FakeClock) -> CoreClientFactory:
    """Start a core app (fake clock by default) and return a test client for it."""

    async def start(
        cfg: CoreConfig | None = None, clk: Any = None, workflows: list[Workflow] | None = None
    ) -> TestClient[Any, Any]:
        app = create_app(cfg or config, clk or clock, workflows)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start


@pytest.fixture
async def events_ws(core_client: CoreClientFactory) -> AsyncIterator[Callable[..., Any]]:
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open_events(client: TestClient[Any, Any], show: str | None = None) -> aiohttp.ClientWebSocketResponse:
        ws = await client.ws_connect("/events" + (f"?show={show}" if show else ""))
        sockets.append(ws)
        return ws

    yield open_events
    for ws in sockets:
        await ws.close()


@pytest.fixture
async def core_process(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[CoreProcess]]]:
    started: list[CoreProcess] = []

    async def start(*args: str, data_dir: Path | None = None) -> CoreProcess:
        process = await CoreProcess(data_dir or tmp_path / "core", *args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc and process.proc.returncode is None:
            process.kill()
            await process.wait()
