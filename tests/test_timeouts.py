"""The worker and the exporter refuse, at start-up, a ``--timeout`` the core would refuse at every
registration (exit code 2 naming the flag, instead of a process that is refused for ever); the limit is
the core's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from resotolib.protocol import MAX_TIMEOUT_SECONDS
from resotometrics.config import MetricsConfig
from resotoworker.config import WorkerConfig
from tests.support import CoreClientFactory, parse_settings

PROGRAMS = [
    pytest.param("resotoworker", WorkerConfig, "RESOTOWORKER_", id="worker"),
    pytest.param("resotometrics", MetricsConfig, "RESOTOMETRICS_", id="exporter"),
]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers there
RULE = f"expected 1 to {MAX_TIMEOUT_SECONDS} seconds"


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
@pytest.mark.parametrize("value", ["0", "-1", str(MAX_TIMEOUT_SECONDS + 1), "99999999999"])
def test_a_timeout_the_core_refuses_is_a_usage_error(
    program: str, config: type[BaseModel], prefix: str, value: str
) -> None:
    for result in (
        parse_settings(config, prefix, "--timeout", value),
        parse_settings(config, prefix, env={prefix + "TIMEOUT": value}),
    ):
        assert result.exit_code == 2
        assert f"--timeout: invalid timeout {value}: {RULE}" in result.output


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
def test_every_timeout_the_core_takes_is_accepted(
    program: str, config: type[WorkerConfig] | type[MetricsConfig], prefix: str
) -> None:
    for value in (1, 60, MAX_TIMEOUT_SECONDS):
        result = parse_settings(config, prefix, "--timeout", str(value))
        assert result.exit_code == 0, result.output
        parsed = config.model_validate_json(result.output)
        assert parsed.timeout == value
        assert {s.timeout for s in parsed.subscriptions()} == {value}
    help_text = " ".join(parse_settings(config, prefix, "--help").output.split())
    assert f"Seconds (1 to {MAX_TIMEOUT_SECONDS})" in help_text


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
def test_a_bad_timeout_stops_the_program_before_it_starts(
    tmp_path: Path, program: str, config: type[BaseModel], prefix: str
) -> None:
    args = ["--resotocore-uri", UNREACHABLE, "--timeout", "99999999999"]
    env = {prefix + "DATA_DIR": str(tmp_path)} if "data_dir" in config.model_fields else {}
    command = [sys.executable, "-m", program, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert result.returncode == 2
    assert f"--timeout: invalid timeout 99999999999: {RULE}" in result.stderr and "Traceback" not in result.stderr


async def test_the_limit_is_the_cores(core_client: CoreClientFactory) -> None:
    client = await core_client()
    taken = await client.post("/subscriber/w/collect", params={"timeout": str(MAX_TIMEOUT_SECONDS)})
    assert taken.status == 200, await taken.text()
    refused = await client.post("/subscriber/w/collect", params={"timeout": str(MAX_TIMEOUT_SECONDS + 1)})
    assert refused.status == 400
    assert (await refused.json())["error"] == f"invalid timeout {MAX_TIMEOUT_SECONDS + 1}: {RULE}"
