"""Helpers of the exporter's tests: a real exporter process, scraping and parsing /metrics."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Series = tuple[str, frozenset[tuple[str, str]]]
"""sample name and its labels"""


def parse_metrics(text: str) -> dict[Series, float]:
    """Every sample of a text exposition, parsed by prometheus-client's own parser; a series twice fails."""
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"series twice: {key}"
            samples[key] = sample.value
    return samples


def only(samples: dict[Series, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one name, by label set."""
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


async def scrape(url: str) -> tuple[str, dict[Series, float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        text = await response.text()
    return text, parse_metrics(text)


class MetricsProcess:
    """A real `resotometrics` process; its JSON log lines are collected as they come."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[dict[str, Any]] = []
        self.url = ""
        self._logged = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, listening: bool = True) -> MetricsProcess:
        """Start it; with ``listening``, wait until it serves and note its URL."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "resotometrics", "--log-format", "json", *self.args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if listening:
            self.url = str((await self.wait_for("listening"))["url"])
        return self

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

    async def wait_for(self, event: str, within: float = 15, after: int = 0) -> dict[str, Any]:
        """The first log entry named `event` at index `after` or later; fails with the log on timeout or exit."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.log[after:] if e.get("event") == event), None)

        try:
            async with asyncio.timeout(within), self._logged:
                await self._logged.wait_for(lambda: found() is not None or self._reader is None or self._reader.done())
        except TimeoutError:
            raise AssertionError(f"resotometrics did not log {event} within {within}s:\n{self.tail()}") from None
        entry = found()
        if entry is None:
            raise AssertionError(f"resotometrics exited before logging {event}:\n{self.tail()}")
        return entry

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 15) -> int:
        assert self.proc is not None and self._reader is not None
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._reader, within)
        return code

    def tail(self, lines: int = 60) -> str:
        return "\n".join(json.dumps(e) for e in self.log[-lines:])
