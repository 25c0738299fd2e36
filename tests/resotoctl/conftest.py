"""Fixtures of the resotoctl tests: a real core process, a client of it, resotoctl processes."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from resotolib.client import CoreClient
from tests.resotoctl.support import CtlProcess
from tests.support import NEVER, CoreProcess


@pytest.fixture
async def core(core_process: Callable[..., Awaitable[CoreProcess]]) -> CoreProcess:
    return await core_process("--schedule", NEVER)


@pytest.fixture
async def client(core: CoreProcess) -> AsyncIterator[CoreClient]:
    async with CoreClient(core.url, request_timeout=10) as client:
        yield client


@pytest.fixture
async def ctl_process() -> AsyncIterator[Callable[..., Awaitable[CtlProcess]]]:
    started: list[CtlProcess] = []

    async def start(url: str, *args: str, **env: str) -> CtlProcess:
        process = await CtlProcess(url, *args, **env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc and process.proc.returncode is None:
            process.signal(signal.SIGKILL)
            await process.wait()
