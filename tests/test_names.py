"""The worker and the exporter refuse, at start-up, the names the core would refuse later: a graph name
and a subscriber id (exit code 2 and one line naming the flag, instead of a process that retries for ever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from resotometrics.config import MetricsConfig
from resotoworker.config import WorkerConfig
from tests.support import parse_settings

PROGRAMS = [
    pytest.param("resotoworker", WorkerConfig, "RESOTOWORKER_", id="worker"),
    pytest.param("resotometrics", MetricsConfig, "RESOTOMETRICS_", id="exporter"),
]
RULES = {
    "--graph": ("graph", "invalid graph name", "1-64 letters, digits, _ and -"),
    "--subscriber-id": ("subscriber_id", "invalid subscriber id", "1-128 letters, digits and _.:@-"),
}
REFUSED = {
    "--graph": ("my graph", "", "a" * 65, "a/b", "gräph", "g\n"),
    "--subscriber-id": ("my id", "", "w" * 129, "a/b", "wörker", "w\n"),
}
TAKEN = {"--graph": ("resoto", "my-graph_2", "a" * 64), "--subscriber-id": ("resoto.worker", "w-1_a:b@c", "w" * 128)}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers there


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
@pytest.mark.parametrize(("option", "value"), [(option, v) for option, values in REFUSED.items() for v in values])
def test_a_name_the_core_refuses_is_a_usage_error(
    program: str, config: type[BaseModel], prefix: str, option: str, value: str
) -> None:
    result = parse_settings(config, prefix, option, value)
    _, what, rule = RULES[option]
    assert result.exit_code == 2
    assert f"{option}: {what}" in result.output and rule in result.output


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
@pytest.mark.parametrize("option", RULES)
def test_every_name_the_core_takes_is_accepted(program: str, config: type[BaseModel], prefix: str, option: str) -> None:
    field = RULES[option][0]
    for value in TAKEN[option]:
        result = parse_settings(config, prefix, option, value)
        assert result.exit_code == 0, result.output
        assert getattr(config.model_validate_json(result.output), field) == value
    result = parse_settings(config, prefix, env={prefix + field.upper(): "from-env"})
    assert getattr(config.model_validate_json(result.output), field) == "from-env"


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
@pytest.mark.parametrize("option", RULES)
def test_a_bad_name_stops_the_program_before_it_starts(
    tmp_path: Path, program: str, config: type[BaseModel], prefix: str, option: str
) -> None:
    args = [option, "my name", "--resotocore-uri", UNREACHABLE]
    env = {prefix + "DATA_DIR": str(tmp_path)} if "data_dir" in config.model_fields else {}
    command = [sys.executable, "-m", program, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert result.returncode == 2
    assert f"{option}: {RULES[option][1]} 'my name'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("program", "uri", "message"),
    [
        ("resotoworker", "notaurl", "use http://HOST:PORT or https://HOST:PORT, not 'notaurl'"),
        ("resotometrics", "ftp://core:8900", "use http://HOST:PORT or https://HOST:PORT, not 'ftp://core:8900'"),
        ("resotoctl", "http://127.0.0.1:notaport", "invalid port in 'http://127.0.0.1:notaport'"),
    ],
)
def test_a_core_uri_that_names_no_core_is_a_usage_error(program: str, uri: str, message: str) -> None:
    subcommand = ["subscribers"] if program == "resotoctl" else []
    command = [sys.executable, "-m", program, "--resotocore-uri", uri, *subcommand]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and f"--resotocore-uri: {message}" in result.stderr, result.stderr


@pytest.mark.parametrize(("program", "config", "prefix"), PROGRAMS)
def test_an_empty_psk_is_a_usage_error_not_no_authentication(
    program: str, config: type[BaseModel], prefix: str
) -> None:
    result = parse_settings(config, prefix, "--psk", " ")
    assert result.exit_code == 2 and "--psk: empty: give a key" in result.output
