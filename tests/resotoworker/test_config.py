"""The worker's command line: flags, environment variables, subscriptions per flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from resotolib.settings import build, model_options
from resotoworker.config import WorkerConfig


@click.command()
@model_options(WorkerConfig, "RESOTOWORKER_")
def parse(**values: Any) -> None:
    click.echo(build(WorkerConfig, values).model_dump_json())


def config_of(*args: str, env: dict[str, str] | None = None) -> WorkerConfig:
    result = CliRunner().invoke(parse, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return WorkerConfig.model_validate_json(result.output)


def test_defaults() -> None:
    config = config_of()
    assert config.resotocore_uri == "http://127.0.0.1:8900"
    assert config.collector == ["example"]
    assert (config.cleanup, config.cleanup_expired, config.cleanup_dry_run) == (False, False, False)
    assert config.subscriber_id == "resoto.worker"
    assert config.timeout == 10800
    assert config.data_dir.name == "resotoworker"
    assert config.graph == "resoto"
    assert config.aws_region == [] and config.aws_profile == [] and config.aws_role is None


def test_flags() -> None:
    config = config_of(
        "--resotocore-uri", "http://core:8900", "--collector", "example", "--collector", "aws", "--cleanup",
        "--cleanup-expired", "--cleanup-dry-run", "--subscriber-id", "w2", "--timeout", "60", "--data-dir", "/tmp/w",
        "--graph", "g", "--parallel-deletes", "3", "--aws-region", "us-east-1", "--aws-region", "eu-west-1",
    )  # fmt: skip
    assert config.resotocore_uri == "http://core:8900"
    assert config.collector == ["example", "aws"]
    assert (config.cleanup, config.cleanup_expired, config.cleanup_dry_run) == (True, True, True)
    assert (config.subscriber_id, config.timeout, config.data_dir, config.graph) == ("w2", 60, Path("/tmp/w"), "g")
    assert config.parallel_deletes == 3
    assert config.aws_region == ["us-east-1", "eu-west-1"]


def test_environment_variables() -> None:
    env = {
        "RESOTOWORKER_RESOTOCORE_URI": "http://core:1234",
        "RESOTOWORKER_COLLECTOR": "example, aws",
        "RESOTOWORKER_CLEANUP": "true",
        "RESOTOWORKER_CLEANUP_EXPIRED": "1",
        "RESOTOWORKER_DATA_DIR": "/var/lib/worker",
        "RESOTOWORKER_TIMEOUT": "99",
        "RESOTOWORKER_AWS_ACCOUNT": "111111111111 222222222222",
        "RESOTOWORKER_EXAMPLE_RESOURCES": "5000",
    }
    config = config_of(env=env)
    assert config.resotocore_uri == "http://core:1234"
    assert config.collector == ["example", "aws"]
    assert (config.cleanup, config.cleanup_expired, config.cleanup_dry_run) == (True, True, False)
    assert config.data_dir == Path("/var/lib/worker")
    assert config.timeout == 99
    assert config.aws_account == ["111111111111", "222222222222"]
    assert config.example_resources == 5000
    assert config_of("--collector", "aws", "--no-cleanup", env=env).collector == ["aws"]
    assert config_of("--no-cleanup", env=env).cleanup is False


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), ["collect"]),
        (("--cleanup-expired",), ["collect", "cleanup_plan"]),
        (("--cleanup",), ["collect", "cleanup"]),
        (("--cleanup", "--cleanup-expired", "--timeout", "77"), ["collect", "cleanup_plan", "cleanup"]),
    ],
)
def test_subscriptions_follow_the_flags(flags: tuple[str, ...], expected: list[str]) -> None:
    config = config_of(*flags)
    subscriptions = config.subscriptions()
    assert [s.message_type for s in subscriptions] == expected
    assert all(s.wait_for_completion and s.timeout == config.timeout for s in subscriptions)


def test_bad_values_name_the_flag() -> None:
    result = CliRunner().invoke(parse, ["--timeout", "0"])
    assert result.exit_code == 2
    assert "--timeout" in result.output


def test_help_of_the_installed_command() -> None:
    script = Path(sys.executable).parent / "resotoworker"
    assert script.exists(), "the resotoworker console script is not installed: pip install -e ."
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    for flag in ("--resotocore-uri", "--collector", "--cleanup-expired", "--cleanup-dry-run", "--subscriber-id"):
        assert flag in out
    assert "RESOTOWORKER_DATA_DIR" in out


def test_an_unknown_collector_stops_the_worker_with_a_message(tmp_path: Path) -> None:
    args = ["--collector", "nope", "--data-dir", str(tmp_path), "--log-format", "json"]
    result = subprocess.run([sys.executable, "-m", "resotoworker", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "unknown collector nope" in result.stderr
