"""The pure parts of ``resotoctl stack``: its command lines (parsed by the real CLIs), the readiness
check on the core's answers, the lines it prints, the report of a process that died."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from resotoctl.output import Output
from resotoctl.stack_plan import (
    SUBSCRIPTIONS,
    StackConfig,
    ctl_hint,
    describe_exit,
    last_lines,
    missing_subscriptions,
    plan,
    run_started,
)
from resotoctl.stack_procs import Child
from resotoctl.stack_view import StackView, died_report


def clis() -> dict[str, click.Command]:
    from resotocore.__main__ import main as core
    from resotometrics.__main__ import main as metrics
    from resotoworker.__main__ import main as worker

    return {"resotocore": core, "resotoworker": worker, "resotometrics": metrics}


def test_every_command_line_parses_with_the_real_cli(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path, core_port=1234, metrics_port=5678, psk="secret")
    specs = plan(config, "/venv/bin/python")
    assert [s.name for s in specs] == ["resotocore", "resotoworker", "resotometrics"]
    for spec in specs:
        assert spec.argv[:3] == ("/venv/bin/python", "-m", spec.name)
        ctx = clis()[spec.name].make_context(spec.name, list(spec.argv[3:]), resilient_parsing=False)
        assert ctx.params["log_format"] is None  # the processes keep their own default: JSON into the log file
        assert spec.log_file == tmp_path / "logs" / f"{spec.name}.log"
        assert "secret" not in spec.argv
    core, worker, metrics = (ctx_params(s.name, s.argv) for s in specs)
    assert core["port"] == 1234 and core["data_dir"] == tmp_path / "core" and core["host"] == "127.0.0.1"
    assert worker["collector"] == ("example",) and worker["cleanup"] and worker["cleanup_expired"]
    assert worker["resotocore_uri"] == metrics["resotocore_uri"] == "http://127.0.0.1:1234"
    assert worker["example_resources"] == 10 and worker["data_dir"] == tmp_path / "worker"
    assert metrics["web_port"] == 5678
    assert [dict(s.env) for s in specs] == [
        {"RESOTOCORE_PSK": "secret"},
        {"RESOTOWORKER_PSK": "secret"},
        {"RESOTOMETRICS_PSK": "secret"},
    ]
    assert all(not s.env for s in plan(StackConfig(), "python"))


def ctx_params(name: str, argv: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = clis()[name].make_context(name, list(argv[3:])).params
    return params


def test_missing_subscriptions() -> None:
    worker = {"id": "resoto.worker"}
    everything = {action: [{"id": "other"}, worker] for action in ("collect", "cleanup_plan", "cleanup")}
    assert missing_subscriptions({}) == [f"{process}: {action}" for action, (process, _) in SUBSCRIPTIONS.items()]
    assert missing_subscriptions(everything) == ["resotometrics: generate_metrics"]
    everything["generate_metrics"] = [{"id": "resoto.metrics"}]
    assert missing_subscriptions(everything) == []


def test_lines_exits_and_hints() -> None:
    assert last_lines(b"a\n\nb\nc\n", 2) == ["b", "c"]
    assert last_lines(b"ut line\nwhole\n", 5, cut=True) == ["whole"]
    assert last_lines(b"x\n", 0) == []
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
    assert "task t-1" in run_started({"status": "started", "task_id": "t-1"})
    assert "queued" in run_started({"status": "queued"})
    assert "not started now: busy" in run_started({"status": "skipped", "reason": "busy"})
    assert ctl_hint(StackConfig(), "workflows running") == "resotoctl workflows running"
    hint = ctl_hint(StackConfig(core_port=9000, psk="s"), "workflows running")
    assert hint == "resotoctl --resotocore-uri http://127.0.0.1:9000 --psk ... workflows running"


async def test_the_report_of_a_death_shows_whole_lines(tmp_path: Path) -> None:
    spec = plan(StackConfig(data_dir=tmp_path), sys.executable)[1]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(3)")
    await proc.wait()
    long_line = '{"event": "collect_failed", "error": "' + "x" * 300 + '"}'
    err = Console(record=True, width=80, soft_wrap=True)
    StackView(Output(False), err).died(Child(spec, proc, 0), ["first", long_line])
    lines = err.export_text(styles=False).splitlines()
    assert lines == [
        f"resotoworker (pid {proc.pid}) died: exit code 3",
        f"last 2 lines of {spec.log_file}:",
        "  first",
        "  " + long_line,
    ]
    empty = Console(record=True, width=80)
    empty.print(died_report(Child(spec, proc, 0), []))
    assert f"{spec.log_file} is empty" in empty.export_text(styles=False).replace("\n", "")
