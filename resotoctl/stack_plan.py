"""What ``resotoctl stack`` runs, decided without any I/O: the settings, one command line per process,
the readiness checks on the core's answers, and the end of a log for the report of a process that died.

The stack is three processes started in this order and stopped in the reverse one: ``resotocore``
(embedded SQLite), ``resotoworker`` (the ``example`` collector with ``--cleanup --cleanup-expired``) and
``resotometrics``. Each runs as ``python -m PACKAGE`` of the interpreter running the stack, so the stack
and its processes always come from the same installation.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from resotolib.auth import Psk

ENV_PREFIX = "RESOTOCTL_STACK_"
WORKFLOW = "collect_and_cleanup"
CORE, WORKER, METRICS = "resotocore", "resotoworker", "resotometrics"
WORKER_ID = "resoto.worker"
METRICS_ID = "resoto.metrics"
HOST = "127.0.0.1"

SUBSCRIPTIONS: Mapping[str, tuple[str, str]] = {
    "collect": (WORKER, WORKER_ID),
    "cleanup_plan": (WORKER, WORKER_ID),
    "cleanup": (WORKER, WORKER_ID),
    "generate_metrics": (METRICS, METRICS_ID),
}
"""Action -> (process, subscriber id): what must be subscribed before the first run starts."""


class StackConfig(BaseModel):
    """Settings of the local stack; every field is a flag of ``resotoctl stack`` and a RESOTOCTL_STACK_* variable."""

    model_config = ConfigDict(frozen=True)

    data_dir: Path = Field(
        Path("data"), description="Directory of the stack: core/ (SQLite), worker/ (example cloud), logs/."
    )
    core_port: int = Field(8900, ge=1, le=65535, description="Port of the core's API (on 127.0.0.1).")
    metrics_port: int = Field(9955, ge=1, le=65535, description="Port of the exporter's /metrics (on 127.0.0.1).")
    psk: Psk = Field(
        None, repr=False, description="Pre-shared key: the core requires it and the worker and exporter sign with it."
    )
    example_accounts: int = Field(1, ge=1, description="Example cloud: number of accounts.")
    example_regions: int = Field(2, ge=1, description="Example cloud: regions per account.")
    example_resources: int = Field(10, ge=0, description="Example cloud: resources per region.")
    ready_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for the core to be ready, then for the subscriptions."
    )
    stop_timeout: float = Field(
        10.0, gt=0, description="Seconds each process gets to stop after SIGTERM before it is killed."
    )

    @property
    def core_url(self) -> str:
        return f"http://{HOST}:{self.core_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the stack: what to run, what to add to the environment, where its output goes."""

    name: str
    argv: tuple[str, ...]
    log_file: Path
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the stack's own environment; carries the PSK, which stays out of the command line."""


def plan(config: StackConfig, python: str) -> list[ProcessSpec]:
    """The processes in start order: core, worker, exporter."""
    data, logs, url = config.data_dir, config.log_dir, config.core_url
    core = ProcessSpec(
        CORE,
        (python, "-m", CORE, "--host", HOST, "--port", str(config.core_port), "--data-dir", str(data / "core")),
        logs / f"{CORE}.log",
        _psk_env("RESOTOCORE_", config.psk),
    )
    worker_argv = (
        python, "-m", WORKER, "--resotocore-uri", url, "--subscriber-id", WORKER_ID,
        "--collector", "example", "--cleanup", "--cleanup-expired", "--data-dir", str(data / "worker"),
        "--example-accounts", str(config.example_accounts), "--example-regions", str(config.example_regions),
        "--example-resources", str(config.example_resources),
    )  # fmt: skip
    worker = ProcessSpec(WORKER, worker_argv, logs / f"{WORKER}.log", _psk_env("RESOTOWORKER_", config.psk))
    metrics_argv = (
        python, "-m", METRICS, "--resotocore-uri", url, "--subscriber-id", METRICS_ID,
        "--web-host", HOST, "--web-port", str(config.metrics_port),
    )  # fmt: skip
    metrics = ProcessSpec(METRICS, metrics_argv, logs / f"{METRICS}.log", _psk_env("RESOTOMETRICS_", config.psk))
    return [core, worker, metrics]


def _psk_env(prefix: str, psk: str | None) -> dict[str, str]:
    return {f"{prefix}PSK": psk} if psk else {}


def missing_subscriptions(answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """What is not subscribed yet, as ``"process: action"``, given each ``GET /subscribers/for/{action}``."""
    missing = []
    for action, (process, sid) in SUBSCRIPTIONS.items():
        if not any(subscriber.get("id") == sid for subscriber in answers.get(action) or ()):
            missing.append(f"{process}: {action}")
    return missing


def run_started(answer: Mapping[str, Any]) -> str:
    """One line on the answer of ``POST /workflows/{id}/run``."""
    match answer.get("status"):
        case "started":
            return f"{WORKFLOW} started now (task {answer.get('task_id')}), then on the core's schedule (hourly)"
        case "queued":
            return f"{WORKFLOW} is running already (resumed after a restart); another run is queued after it"
        case _:
            return f"{WORKFLOW} not started now: {answer.get('reason') or answer.get('error') or answer}"


def ctl_hint(config: StackConfig, command: str) -> str:
    """The ``resotoctl`` command line to run against this stack's core."""
    options = "" if config.core_port == 8900 else f" --resotocore-uri {config.core_url}"
    if config.psk:
        options += " --psk ..."
    return f"resotoctl{options} {command}"


def stop_order(started: Iterable[str]) -> list[str]:
    """Processes are stopped in the reverse order of their start: exporter, worker, core."""
    return list(reversed(list(started)))


def last_lines(data: bytes, count: int, cut: bool = False) -> list[str]:
    """The last ``count`` non-empty lines of the end of a log; ``cut``: ``data`` starts within a line, drop it."""
    lines = data.decode(errors="replace").splitlines()
    if cut:
        lines = lines[1:]
    lines = [line for line in lines if line.strip()]
    return lines[-count:] if count > 0 else []


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` (asyncio reports a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
