"""Fixtures of the worker's tests: real worker processes, stopped after the test."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.resotoworker.support import WorkerProcess


@pytest.fixture
async def worker_process() -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    started: list[WorkerProcess] = []

    async def start(*args: str) -> WorkerProcess:
        process = await WorkerProcess(*args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc and process.proc.returncode is None:
            process.signal(signal.SIGKILL)
            await process.wait()
