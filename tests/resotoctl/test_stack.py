"""``resotoctl stack``: the local stack as a real process. One full run of collect_and_cleanup, /metrics of
the exporter matching the example cloud, SIGINT stopping every process; a process that dies is reported
and the rest are stopped, also while starting up. The pure parts are tested in test_stack_plan.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resotoctl.errors import CtlError
from resotoctl.stack_plan import ProcessSpec, StackConfig
from resotoctl.stack_probe import Probe
from resotoctl.stack_procs import spawn, stop
from resotolib.client import CoreClient
from resotoworker.collectors.example_cloud import generate_region, new_spec
from tests.resotoctl.support import eventually, group_alive, until_async
from tests.support import NEVER, CoreProcess, free_ports

ACCOUNTS, REGIONS, RESOURCES = 1, 2, 12
WITHIN = 45.0


class StackProcess:
    """``resotoctl [--json] stack`` in a subprocess; stdout lines and stderr collected as they come."""

    def __init__(self, data_dir: Path, *, as_json: bool = True, core_port: int = 0, metrics_port: int = 0) -> None:
        free = free_ports(2)
        self.core_port, self.metrics_port = core_port or free[0], metrics_port or free[1]
        self.argv = [
            sys.executable, "-m", "resotoctl", *(["--json"] if as_json else []), "stack",
            "--data-dir", str(data_dir), "--core-port", str(self.core_port), "--metrics-port", str(self.metrics_port),
            "--example-accounts", str(ACCOUNTS), "--example-regions", str(REGIONS),
            "--example-resources", str(RESOURCES), "--ready-timeout", "30", "--stop-timeout", "10",
        ]  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RESOTO")}
        self.env["RESOTOCORE_SCHEDULE"] = NEVER  # read by the core: only the stack's own first run happens
        self.proc: asyncio.subprocess.Process | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> StackProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env={**self.env, "COLUMNS": "200"},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        loop = asyncio.get_running_loop()
        self._readers = [
            loop.create_task(self._read(self.proc.stdout, self.stdout)),
            loop.create_task(self._read(self.proc.stderr, self.stderr)),
        ]
        return self

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.stdout if line.startswith("{")]
        return [e for e in found if name is None or e.get("event") == name]

    async def event(self, name: str, within: float = WITHIN) -> dict[str, Any]:
        async def seen() -> dict[str, Any] | None:
            assert self.proc is not None
            assert self.proc.returncode is None or self.events(name), f"stack ended: {self.stdout} {self.stderr}"
            return next(iter(self.events(name)), None)

        found: dict[str, Any] = await until_async(seen, within, every=0.1)
        return found

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = WITHIN) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(asyncio.gather(*self._readers), within)
        return code


@pytest.fixture
async def stacks() -> AsyncIterator[list[StackProcess]]:
    """Stacks started by a test; whatever is left of them is killed at the end (their groups too)."""
    started: list[StackProcess] = []
    yield started
    for stack in started:
        if stack.proc is not None and stack.proc.returncode is None:
            stack.signal(signal.SIGTERM)
            await stack.wait()


def assert_gone(pids: Sequence[int]) -> None:
    """Each process and anything in its group has exited (a zombie nobody reaped counts as exited)."""
    for pid in pids:
        assert not group_alive(pid), f"process group {pid} still runs: {group_alive(pid)}"


def kill_groups(pids: Sequence[int]) -> None:
    """After a stop that failed: the groups of these processes, perhaps left running, are killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def instances_generated() -> int:
    spec = new_spec(42, ACCOUNTS, REGIONS, RESOURCES)
    regions = [generate_region(spec, a, r) for a in range(ACCOUNTS) for r in range(REGIONS)]
    return sum(1 for region in regions for resource in region if resource.kind == "example_instance")


async def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


async def test_stack_runs_the_workflow_serves_metrics_and_stops_on_sigint(
    tmp_path: Path, stacks: list[StackProcess]
) -> None:
    stack = await StackProcess(tmp_path / "data").start()
    stacks.append(stack)
    ready = await stack.event("ready")
    pids = {p["name"]: p["pid"] for p in ready["processes"]}
    assert list(pids) == ["resotocore", "resotoworker", "resotometrics"]
    assert ready["run"]["status"] == "started"
    assert ready["metrics"] == f"http://127.0.0.1:{stack.metrics_port}/metrics"

    async with CoreClient(ready["api"], request_timeout=10) as client:

        async def ended() -> dict[str, Any] | None:
            runs = (await client.runs("collect_and_cleanup", limit=5))["runs"]
            return next((r for r in runs if r["id"] == ready["run"]["task_id"] and r["ended_at"]), None)

        run = await until_async(ended, within=30, every=0.2)
    assert run["status"] == "succeeded", run
    assert [s["name"] for s in run["steps"]][-2:] == ["generate_metrics", "post_generate_metrics"]

    samples = await scrape(ready["metrics"])
    instances = sum(value for _, value in samples["resoto_instances_total"])
    cleaned = sum(
        v for labels, v in samples.get("resoto_cleaned_resources_total", []) if labels["kind"] == "example_instance"
    )
    assert instances > 0
    assert instances + cleaned == instances_generated()
    assert {labels["cloud"] for labels, _ in samples["resoto_instances_total"]} == {"example"}

    stack.signal(signal.SIGINT)
    assert await stack.wait() == 0, stack.stderr
    stopped = stack.events("process_stopped")
    assert [e["name"] for e in stopped] == ["resotometrics", "resotoworker", "resotocore"]
    assert all(e["returncode"] == 0 and not e["killed"] for e in stopped), stopped
    assert stack.events("stopping")[0]["reason"] == "SIGINT"
    assert_gone(list(pids.values()))
    logs = {p["name"]: Path(p["log"]) for p in ready["processes"]}
    assert logs["resotocore"] == tmp_path / "data" / "logs" / "resotocore.log"
    assert all(path.stat().st_size > 0 for path in logs.values())


async def test_a_process_that_dies_is_reported_and_the_others_are_stopped(
    tmp_path: Path, stacks: list[StackProcess]
) -> None:
    stack = await StackProcess(tmp_path / "data", as_json=False).start()
    stacks.append(stack)

    async def running() -> bool:
        return any("resoto stack is running" in line for line in stack.stdout)

    await until_async(running, within=WITHIN, every=0.1)
    started = dict(re.findall(r"started (\w+) \(pid (\d+)\)", "\n".join(stack.stdout)))
    pids = {name: int(pid) for name, pid in started.items()}
    os.kill(pids["resotoworker"], signal.SIGKILL)

    assert await stack.wait() == 1
    err = "\n".join(stack.stderr)
    assert f"resotoworker (pid {pids['resotoworker']}) died: killed by SIGKILL" in err
    assert re.search(r"last \d+ lines of .*resotoworker\.log:", err), err
    assert "worker_started" in err or "subscriber_connected" in err or "action_done" in err, err
    assert stack.stderr[-1].startswith("Error: resotoworker died (killed by SIGKILL); the stack stopped"), err
    out = "\n".join(stack.stdout)
    assert "stopping (resotoworker died): resotometrics, resotocore" in out
    assert "resotometrics stopped (exit code 0)" in out and "resotocore stopped (exit code 0)" in out
    assert_gone(list(pids.values()))


async def test_a_core_that_cannot_start_is_reported(tmp_path: Path, stacks: list[StackProcess]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "core").write_text("a file where the core's data directory belongs")
    stack = await StackProcess(tmp_path / "data").start()
    stacks.append(stack)
    assert await stack.wait() == 1
    died = stack.events("process_died")
    assert [(d["name"], d["returncode"]) for d in died] == [("resotocore", 1)]
    assert any("startup_failed" in line for line in died[0]["log_tail"]), died
    assert [e["name"] for e in stack.events("process_started")] == ["resotocore"]
    assert stack.events("stopped") == [{"event": "stopped", "exit_code": 1}]
    assert stack.stderr[-1].startswith("Error: resotocore died (exit code 1)")


async def test_a_port_served_by_another_core_stops_the_stack_before_it_starts_anything(
    tmp_path: Path, stacks: list[StackProcess], core_process: Callable[..., Awaitable[CoreProcess]]
) -> None:
    other = await core_process("--schedule", NEVER, data_dir=tmp_path / "other")
    port = int(other.url.rsplit(":", 1)[1])
    stack = await StackProcess(tmp_path / "data", core_port=port).start()
    stacks.append(stack)
    assert await stack.wait() == 1
    assert stack.stderr[-1] == (
        f"Error: port {port} on 127.0.0.1 is in use, needed for the core's API; choose another with --core-port"
    ), stack.stderr
    assert stack.events("process_started") == []
    assert stack.events("stopped") == [{"event": "stopped", "exit_code": 1}]
    async with CoreClient(other.url, request_timeout=10) as client:
        assert await client.subscribers() == []
        assert (await client.runs("collect_and_cleanup", limit=5))["runs"] == []


async def test_a_taken_metrics_port_stops_the_stack_before_it_starts_anything(
    tmp_path: Path, stacks: list[StackProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = await StackProcess(tmp_path / "data", metrics_port=port).start()
        stacks.append(stack)
        assert await stack.wait() == 1
    assert stack.stderr[-1] == (
        f"Error: port {port} on 127.0.0.1 is in use, needed for the exporter's /metrics; "
        "choose another with --metrics-port"
    ), stack.stderr
    assert stack.events("process_started") == []


async def test_readiness_counts_only_while_the_stack_s_own_core_runs(
    core_process: Callable[..., Awaitable[CoreProcess]],
) -> None:
    other = await core_process("--schedule", NEVER)
    config = StackConfig(core_port=int(other.url.rsplit(":", 1)[1]), ready_timeout=1)
    async with aiohttp.ClientSession() as session:
        probe = Probe(session, config)
        with pytest.raises(CtlError, match="the core was not ready within 1 s"):
            await probe.wait_ready(lambda: False)  # the answer comes from a core that is not the stack's
        await asyncio.wait_for(probe.wait_ready(lambda: True), 5)


async def test_sighup_stops_every_process(tmp_path: Path, stacks: list[StackProcess]) -> None:
    stack = await StackProcess(tmp_path / "data").start()
    stacks.append(stack)
    ready = await stack.event("ready")
    pids = [p["pid"] for p in ready["processes"]]
    try:
        stack.signal(signal.SIGHUP)
        assert await stack.wait() == 129, stack.stderr
        stopped = stack.events("process_stopped")
        assert [e["name"] for e in stopped] == ["resotometrics", "resotoworker", "resotocore"]
        assert stack.events("stopping")[0]["reason"] == "SIGHUP"
        assert stack.events("stopped") == [{"event": "stopped", "exit_code": 129}]
        assert_gone(pids)
    except BaseException:
        kill_groups(pids)
        raise


def read_terminal(fd: int, until: bytes, within: float) -> bytes:
    """What the other end of a terminal wrote, up to and including ``until``."""
    seen = b""
    deadline = time.monotonic() + within
    while until not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{until!r} not written within {within}s: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 64 * 1024)
            assert chunk, f"the terminal was closed: {seen!r}"
            seen += chunk
    return seen


async def test_sighup_of_a_terminal_that_closed_stops_every_process(tmp_path: Path) -> None:
    """Closing the terminal: writing to it fails from then on, which must not break off the stop."""
    spec = StackProcess(tmp_path / "data")
    terminal, its_end = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *spec.argv, env=spec.env, stdin=asyncio.subprocess.DEVNULL, stdout=its_end, stderr=its_end
        )
    finally:
        os.close(its_end)
    pids: list[int] = []
    try:
        written = await asyncio.to_thread(read_terminal, terminal, b'"event":"ready"', WITHIN)
        pids += [int(pid) for pid in re.findall(rb'"event":"process_started","name":"\w+","pid":(\d+)', written)]
        assert len(pids) == 3, written
        os.close(terminal)
        terminal = -1
        proc.send_signal(signal.SIGHUP)
        assert await asyncio.wait_for(proc.wait(), WITHIN) == 129
        assert_gone(pids)
    except BaseException:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        kill_groups(pids)
        raise
    finally:
        if terminal >= 0:
            os.close(terminal)


async def test_a_process_that_ignores_sigterm_is_killed_with_its_group(tmp_path: Path) -> None:
    stubborn = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    stubborn += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('up', flush=True); "
    stubborn += "time.sleep(60)"
    spec = ProcessSpec("stubborn", (sys.executable, "-c", stubborn), tmp_path / "logs" / "stubborn.log")
    child = await spawn(spec, {"PATH": os.environ.get("PATH", "")})
    await eventually(child.log_tail, within=10)
    assert child.log_tail() == ["up"] and len(group_alive(child.pid)) == 2
    hurry = asyncio.Event()
    assert await stop(child, 0.5, hurry) is True
    assert child.returncode == -signal.SIGKILL
    await eventually(lambda: not group_alive(child.pid))  # SIGKILL of the group: the grandchild goes too
