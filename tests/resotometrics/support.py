"""Helpers of the exporter's tests: a real exporter process, scraping and parsing /metrics."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import LoggedProcess

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


class MetricsProcess(LoggedProcess):
    """A real `resotometrics` process; its JSON log lines are collected as they come."""

    command = "resotometrics"
    within = 15.0

    def __init__(self, *args: str) -> None:
        super().__init__(*args)
        self.url = ""

    async def start(self, listening: bool = True) -> MetricsProcess:
        """Start it; with ``listening``, wait until it serves and note its URL."""
        await self.spawn()
        if listening:
            self.url = str((await self.wait_for("listening"))["url"])
        return self
