"""Resoto's published client library (resotolib 3.9.0 from PyPI), unchanged, against a real resotocore
process: it registers, connects, gets every action of the default workflow, answers with progress,
info, done and error, watches events through ?show=, starts the workflow with an event, authenticates
with its own JWTs, and reconnects to a core that was killed in the middle of a step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from resotolib.auth import encode
from tests.support import NEVER, CoreProcess, free_ports

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "data" / "resoto_client.py"
STEPS = [
    "pre_collect", "collect", "post_collect", "pre_cleanup_plan", "cleanup_plan", "post_cleanup_plan",
    "pre_cleanup", "cleanup", "post_cleanup", "pre_generate_metrics", "generate_metrics", "post_generate_metrics",
]  # fmt: skip
PSK = "changeme"
Line = dict[str, Any]


@pytest.fixture(scope="session")
def client_python() -> Path:
    """The Python of a virtualenv holding Resoto's client library (made on first use, see scripts/venv.sh)."""
    made = subprocess.run(
        ["bash", "-c", 'source scripts/venv.sh && ensure_resoto_client && echo "$RESOTO_CLIENT_VENV/bin/python"'],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, f"cannot install Resoto's client library:\n{made.stderr}"
    return Path(made.stdout.strip().splitlines()[-1])


class ResotoClient:
    """tests/data/resoto_client.py as a process: its JSON lines as they come, commands on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[Line] = []
        self._seen = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            async with self._seen:
                self.lines.append(json.loads(raw))
                self._seen.notify_all()
        async with self._seen:
            self._seen.notify_all()

    async def wait_for(self, wanted: Callable[[Line], bool], after: int = 0, within: float = 20) -> int:
        """The index of the first line from `after` on that is `wanted`."""

        def found() -> int | None:
            return next((i for i, line in enumerate(self.lines[after:], after) if wanted(line)), None)

        try:
            async with asyncio.timeout(within), self._seen:
                await self._seen.wait_for(lambda: found() is not None or self._reader.done())
        except TimeoutError:
            raise AssertionError(f"not seen within {within} s; the client saw {self.lines}") from None
        index = found()
        assert index is not None, f"the client exited ({self.proc.returncode}); it saw {self.lines}"
        return index

    async def connected(self, after: int = 0) -> int:
        """Once both of its sockets are open (again): the index of the later one."""
        actions = await self.wait_for(lambda line: line.get("connected") == "actions", after)
        events = await self.wait_for(lambda line: line.get("connected") == "events", after)
        return max(actions, events)

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()

    def actions(self, after: int = 0) -> list[str]:
        return [line["action"] for line in self.lines[after:] if "action" in line]


@pytest.fixture
async def resoto_client(client_python: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[ResotoClient] = []

    async def start(url: str, *args: str) -> ResotoClient:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = await asyncio.create_subprocess_exec(
            client_python, "-I", CLIENT, "--url", url, *args, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started.append(client := ResotoClient(proc))
        return client

    yield start
    for client in started:
        if client.proc.returncode is None:
            assert client.proc.stdin is not None
            client.proc.stdin.close()
            try:
                await asyncio.wait_for(client.proc.wait(), 5)
            except TimeoutError:
                client.proc.kill()
                await client.proc.wait()
        await client._reader


async def history(url: str, task_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{url}/workflows/collect_and_cleanup/runs") as r:
            assert r.status == 200, await r.text()
            runs: list[dict[str, Any]] = (await r.json())["runs"]
    return [run for run in runs if run["id"] == task_id]


def auth() -> dict[str, str]:
    """Headers with a fresh token (one lives five minutes)."""
    return {"Authorization": f"Bearer {encode({}, PSK)}"}


async def every_step_noted(url: str, task_id: str, headers: dict[str, str], within: float = 10) -> None:
    """Until GET /tasks/{id} shows an info message in each of the workflow's steps."""
    async with aiohttp.ClientSession(headers=headers) as session, asyncio.timeout(within):
        while True:
            async with session.get(f"{url}/tasks/{task_id}") as r:
                steps = (await r.json())["steps"]
            if len(steps) == len(STEPS) and all(step["info"] for step in steps):
                return
            await asyncio.sleep(0.05)


async def progress_of(url: str, task_id: str, parts: int, within: float = 10) -> Any:
    """The client's merged progress in GET /tasks/{id} once it has `parts` parts (sent from a thread of its own)."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(within):
        while True:
            async with session.get(f"{url}/tasks/{task_id}") as r:
                progress = (await r.json()).get("progress", {}).get("resoto-client", {}).get("progress", {})
            if len(progress.get("parts", [])) == parts:
                return progress
            await asyncio.sleep(0.05)


def ended(line: Line) -> bool:
    return line.get("event") == "task_end"


def problems(core: CoreProcess) -> list[dict[str, Any]]:
    return [e for e in core.log if e.get("level") in ("warning", "error", "critical")]


@pytest.mark.timeout(120)
async def test_resotos_client_runs_the_default_workflow_with_a_psk(
    core_process: Callable[..., Any], resoto_client: Callable[..., Any]
) -> None:
    core = await core_process("--psk", PSK, "--schedule", NEVER, "--catch-up", "none")
    client = await resoto_client(core.url, "--psk", PSK, "--fail", "cleanup", "--hold", STEPS[-1])
    await client.connected()
    await client.send("start")
    last = await client.wait_for(lambda line: line.get("action") == STEPS[-1])
    task_id = client.lines[last]["task"]
    # the library sends info from a thread of its own, so it may come after the answer: the last step waits
    # until every step's info is in (after the run it would be dropped, which the design allows)
    await every_step_noted(core.url, task_id, auth())
    await client.send("release")
    end = await client.wait_for(ended)
    assert client.actions() == STEPS and {line["task"] for line in client.lines if "action" in line} == {task_id}
    assert client.lines[end]["data"] == {
        "task": task_id, "workflow": "collect_and_cleanup", "success": False, "status": "failed",
        "error": "steps failed: cleanup",
    }  # fmt: skip
    [run] = await history(core.url, task_id, auth())
    assert run["trigger"] == "event:start_collect_and_cleanup_workflow" and run["error"] == "steps failed: cleanup"
    for step in run["steps"]:
        outcome = step["subscribers"]["resoto-client"]
        assert outcome["outcome"] == ("error" if step["name"] == "cleanup" else "done"), step
        assert [i["message"] for i in step["info"]] == [f"[example] {step['name']} from resotolib"], step
    assert run["steps"][STEPS.index("cleanup")]["subscribers"]["resoto-client"]["error"] == "AccessDenied"
    assert problems(core) == []


@pytest.mark.timeout(120)
async def test_resotos_client_reconnects_to_a_core_killed_mid_step(
    tmp_path: Path, resoto_client: Callable[..., Any]
) -> None:
    (port,) = free_ports(1)
    args = ("--port", str(port), "--schedule", NEVER, "--catch-up", "none")
    core = await CoreProcess(tmp_path / "core", *args).start()
    try:
        client = await resoto_client(core.url, "--hold", "collect")
        await client.connected()
        await client.send("start")
        held = await client.wait_for(lambda line: line.get("action") == "collect")
        task_id = client.lines[held]["task"]
        parts = [  # each part where the library says it is (it repeats its context as the path): not doubled
            {"kind": "progress", "name": "account-1", "current": 1, "total": 1, "path": ["example"]},
            {"kind": "progress", "name": "account-2", "current": 0, "total": 2, "path": ["example"]},
        ]
        assert await progress_of(core.url, task_id, len(parts)) == {"kind": "tree", "name": "collect", "parts": parts}
        core.kill()
        assert await core.wait() == -signal.SIGKILL
        core = await CoreProcess(tmp_path / "core", *args).start()
        await client.connected(after=held)
        resent = await client.wait_for(lambda line: line.get("action") == "collect", after=held + 1)
        await client.send("release")  # both copies answer: the second answer is a duplicate
        await client.wait_for(ended, after=resent)
        assert client.lines[resent]["task"] == task_id
        assert client.actions() == ["pre_collect", "collect", "collect", *STEPS[2:]]
        [run] = await history(core.url, task_id)
        assert run["status"] == "succeeded" and [s["name"] for s in run["steps"]] == STEPS
        collect = run["steps"][1]
        assert collect["subscribers"]["resoto-client"]["outcome"] == "done" and collect["info"], collect
    finally:
        core.kill()
        await core.wait()
