"""Fixtures of the exporter's tests: real exporter processes, killed after the test."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.resotometrics.support import MetricsProcess


@pytest.fixture
async def metrics_process() -> AsyncIterator[Callable[..., Awaitable[MetricsProcess]]]:
    started: list[MetricsProcess] = []

    async def start(*args: str, listening: bool = True) -> MetricsProcess:
        process = MetricsProcess(*args)
        started.append(process)
        return await process.start(listening)

    yield start
    for process in started:
        if process.proc and process.proc.returncode is None:
            process.signal(signal.SIGKILL)
            await process.wait()
