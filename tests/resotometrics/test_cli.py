"""The exporter's command line: flags, environment variables, help, refusal of bad files, signals."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from resotolib.settings import build, model_options
from resotometrics.config import MetricsConfig
from tests.resotometrics.support import MetricsProcess, only, scrape

StartMetrics = Callable[..., Awaitable[MetricsProcess]]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing answers there


@click.command()
@model_options(MetricsConfig, "RESOTOMETRICS_")
def parse(**values: Any) -> None:
    click.echo(build(MetricsConfig, values).model_dump_json())


def config_of(*args: str, env: dict[str, str] | None = None) -> MetricsConfig:
    result = CliRunner().invoke(parse, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return MetricsConfig.model_validate_json(result.output)


def test_defaults() -> None:
    config = config_of()
    assert config.resotocore_uri == "http://127.0.0.1:8900"
    assert (config.web_host, config.web_port) == ("127.0.0.1", 9955)
    assert (config.subscriber_id, config.timeout, config.graph) == ("resoto.metrics", 300, "resoto")
    assert config.metrics_file is None
    [subscription] = config.subscriptions()
    assert (subscription.message_type, subscription.wait_for_completion, subscription.timeout) == (
        "generate_metrics", True, 300,
    )  # fmt: skip


def test_flags_and_environment_variables() -> None:
    config = config_of(
        "--resotocore-uri", "http://core:8900", "--web-host", "0.0.0.0", "--web-port", "9000",
        "--subscriber-id", "m2", "--timeout", "60", "--metrics-file", "/etc/m.yaml", "--graph", "g",
    )  # fmt: skip
    assert (config.resotocore_uri, config.web_host, config.web_port) == ("http://core:8900", "0.0.0.0", 9000)
    assert (config.subscriber_id, config.timeout, config.metrics_file, config.graph) == (
        "m2", 60, Path("/etc/m.yaml"), "g",
    )  # fmt: skip
    env = {
        "RESOTOMETRICS_RESOTOCORE_URI": "http://core:1234", "RESOTOMETRICS_WEB_PORT": "0",
        "RESOTOMETRICS_TIMEOUT": "5", "RESOTOMETRICS_METRICS_FILE": "m.yaml", "RESOTOMETRICS_LOG_LEVEL": "debug",
    }  # fmt: skip
    config = config_of(env=env)
    assert (config.resotocore_uri, config.web_port, config.timeout) == ("http://core:1234", 0, 5)
    assert (config.metrics_file, config.log_level) == (Path("m.yaml"), "debug")
    assert config_of("--timeout", "7", env=env).timeout == 7  # a flag wins over its variable


def test_bad_values_name_the_flag() -> None:
    result = CliRunner().invoke(parse, ["--timeout", "0"])
    assert result.exit_code == 2 and "--timeout" in result.output
    result = CliRunner().invoke(parse, ["--web-port", "70000"])
    assert result.exit_code == 2 and "--web-port" in result.output


def test_help_lists_every_option_with_its_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resotometrics", "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    for name in MetricsConfig.model_fields:
        assert f"--{name.replace('_', '-')}" in result.stdout
        assert f"RESOTOMETRICS_{name.upper()}" in result.stdout
    assert "generate_metrics" in result.stdout and "extend: false" in result.stdout


async def test_bad_definition_file_is_refused_at_start_up(metrics_process: StartMetrics, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("metrics:\n  - name: my_metric\n    help: Mine.\n    lables: {cloud: cloud}\n")
    process = await metrics_process("--metrics-file", str(path), "--web-port", "0", listening=False)
    assert await process.wait() == 2
    [entry] = [e for e in process.log if e["event"] == "definitions_invalid"]
    assert entry["error"] == f"{path}:4: unknown field 'lables' (did you mean 'labels'?) in metrics[0]"
    assert (entry["file"], entry["line"], entry["level"]) == (str(path), 4, "error")
    assert not [e for e in process.log if e["event"] == "listening"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly_while_the_core_is_away(metrics_process: StartMetrics, sig: int) -> None:
    process = await metrics_process("--resotocore-uri", UNREACHABLE, "--web-port", "0")
    await process.wait_for("core_unreachable")
    _, samples = await scrape(process.url)  # serves its own metrics even without a core
    assert only(samples, "resotometrics_update_failures_total") == {frozenset(): 0.0}
    process.signal(sig)
    assert await process.wait() == 0
    events = [e["event"] for e in process.log]
    assert events.index("metrics_stopping") < events.index("metrics_stopped") == len(events) - 1
    assert not [e for e in process.log if e["level"] in ("error", "critical")]
