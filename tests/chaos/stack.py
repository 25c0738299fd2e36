"""The full stack for chaos runs: ``resotocore``, ``resotoworker`` (example collector, ``--cleanup
--cleanup-expired``, a deletion journal), ``resotometrics`` and a script hooked onto ``post_collect``
with ``resotoctl subscribe``, each with a directory of its own under one root, on free loopback ports.

A restarted process gets the same command line: the core keeps its data directory and port, so the
others reconnect by themselves. The stack also speaks the core's HTTP API for the harness.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiohttp

from tests.chaos.procs import ChaosProcess
from tests.support import NEVER, free_ports

WORKFLOW = "collect_and_cleanup"
GRAPH = "resoto"
KINDS = ("core", "worker", "metrics", "script")
SUBSCRIBERS = 3
"""worker, metrics and script: connected to their action channels when the stack is whole."""
REQUEST_WITHIN = 10.0
SCRIPT = '#!/bin/sh\necho "$RESOTO_TASK_ID" >> "{tasks}"\n'


@dataclass(frozen=True)
class StackOptions:
    accounts: int = 2
    regions: int = 2
    resources: int = 20
    """Resources per region of the example cloud."""
    cloud_seed: int = 42
    timeout: int = 20
    """Seconds the core waits for the worker and the exporter (and their own time limit)."""
    script_timeout: int = 10


@dataclass(frozen=True)
class PostResult:
    status: Literal["started", "queued", "skipped", "failed"]
    task_id: str | None = None
    error: str = ""


async def until(check: Callable[[], Awaitable[bool]], within: float, every: float = 0.05) -> bool:
    """Poll `check` (the state of other processes: nothing to await) until it holds; False after `within` s."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return True
                await asyncio.sleep(every)
    except TimeoutError:
        return False


def _move(files: Iterable[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in files:
        if path.exists():
            path.rename(folder / path.name)


class ChaosStack:
    def __init__(self, root: Path, options: StackOptions | None = None) -> None:
        self.root = root
        self.options = opts = options or StackOptions()
        core_port, metrics_port = free_ports(2)
        self.url = f"http://127.0.0.1:{core_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.core_dir, self.worker_dir = root / "core", root / "worker"
        self.script_dir, logs = root / "script", root / "logs"
        self.script_dir.mkdir(parents=True, exist_ok=True)
        script = self.script_dir / "post_collect.sh"
        script.write_text(SCRIPT.format(tasks=self.script_tasks))
        script.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESOTO")}
        py = sys.executable
        argv = {
            "core": [
                py, "-m", "resotocore", "--host", "127.0.0.1", "--port", str(core_port),
                "--data-dir", str(self.core_dir), "--schedule", NEVER, "--catch-up", "none", "--log-format", "json",
            ],
            "worker": [
                py, "-m", "resotoworker", "--resotocore-uri", self.url, "--subscriber-id", "chaos.worker",
                "--collector", "example", "--cleanup", "--cleanup-expired", "--data-dir", str(self.worker_dir),
                "--example-accounts", str(opts.accounts), "--example-regions", str(opts.regions),
                "--example-resources", str(opts.resources), "--example-seed", str(opts.cloud_seed),
                "--example-journal", str(self.journal), "--timeout", str(opts.timeout), "--log-format", "json",
            ],
            "metrics": [
                py, "-m", "resotometrics", "--resotocore-uri", self.url, "--subscriber-id", "chaos.metrics",
                "--web-host", "127.0.0.1", "--web-port", str(metrics_port), "--timeout", str(opts.timeout),
                "--log-format", "json",
            ],
            "script": [
                py, "-m", "resotoctl", "--resotocore-uri", self.url, "subscribe", "post_collect",
                "--id", "chaos-script", "--timeout", str(opts.script_timeout), "--kill-grace", "1", "--", str(script),
            ],
        }  # fmt: skip
        self.procs = {kind: ChaosProcess(kind, argv[kind], root / kind, logs, env) for kind in KINDS}
        self._session: aiohttp.ClientSession | None = None

    # ---- files the audit reads --------------------------------------------------------------------

    @property
    def core_db(self) -> Path:
        return self.core_dir / "resotocore.db"

    @property
    def graph_db(self) -> Path:
        return self.core_dir / "graph.db"

    @property
    def cloud_file(self) -> Path:
        return self.worker_dir / "example-cloud.json"

    @property
    def journal(self) -> Path:
        return self.worker_dir / "deletes.jsonl"

    @property
    def script_tasks(self) -> Path:
        return self.script_dir / "tasks.txt"

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> ChaosStack:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_WITHIN))
        try:
            await self.start("core")
            for kind in KINDS[1:]:
                await self.procs[kind].start()
            await self.wait_connected()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        for kind in reversed(KINDS):
            await self.procs[kind].stop()
        if self._session is not None:
            await self._session.close()

    async def start(self, kind: str) -> None:
        await self.procs[kind].start()
        if kind == "core":
            await self.wait_ready()

    async def kill(self, kind: str) -> None:
        await self.procs[kind].kill()

    async def new_cloud(self, archive: Path) -> None:
        """Replace the example cloud by a new one (same seed: every expired resource is back) and start the
        graph afresh; the old cloud's state file and journal go to `archive`. Only while no run runs."""
        worker = self.procs["worker"]
        await worker.stop()
        _move((self.cloud_file, self.journal), archive)
        async with self.session.delete(f"{self.url}/graph/{GRAPH}") as r:
            assert r.status in (200, 404), await r.text()
        await worker.start()
        await self.wait_connected()

    async def wait_ready(self, within: float = 30) -> None:
        """Until the core answers /system/ready with 200."""
        if not await until(self.ready, within):
            raise AssertionError(f"resotocore not ready within {within} s:\n{self.procs['core'].tail()}")

    async def ready(self) -> bool:
        if not self.procs["core"].alive:
            raise AssertionError(f"resotocore exited:\n{self.procs['core'].tail()}")
        try:
            async with self.session.get(f"{self.url}/system/ready") as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_connected(self, within: float = 30) -> bool:
        """Until every subscriber is connected to its action channel; False if not within `within`."""

        async def whole() -> bool:
            return await self.connected() >= SUBSCRIBERS

        return await until(whole, within)

    async def connected(self) -> int:
        try:
            async with self.session.get(f"{self.url}/metrics") as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0
        for line in text.splitlines():
            if line.startswith("resotocore_subscribers_connected "):
                return int(float(line.split()[1]))
        return 0

    # ---- the core's API -----------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the stack as an async context manager"
        return self._session

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}{path}", params=params) as r:
            r.raise_for_status()
            return await r.json()

    async def post_run(self) -> PostResult:
        try:
            async with self.session.post(f"{self.url}/workflows/{WORKFLOW}/run") as r:
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError) as e:
            return PostResult("failed", error=repr(e))
        status = body.get("status")
        if status in ("started", "queued", "skipped"):
            return PostResult(status, body.get("task_id"))
        return PostResult("failed", error=str(body))

    async def running(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = await self.get("/tasks")
        return tasks

    async def wait_idle(self, within: float) -> bool:
        """Until no run is running (a core that does not answer is not idle)."""

        async def idle() -> bool:
            try:
                return not await self.running()
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await until(idle, within, every=0.1)

    async def wait_ended(self, task_id: str, within: float) -> dict[str, Any]:
        """The run once it has ended; AssertionError if it runs `within` seconds later."""
        run: dict[str, Any] = {}

        async def ended() -> bool:
            nonlocal run
            run = await self.get(f"/tasks/{task_id}")
            return bool(run["status"] != "running")

        if not await until(ended, within, every=0.1):
            raise AssertionError(f"run {task_id} still running after {within} s, in step {run.get('step')}")
        return run

    async def history(self, page: int = 50) -> list[dict[str, Any]]:
        """Every run of the workflow, newest first, page by page."""
        runs: list[dict[str, Any]] = []
        while True:
            answer = await self.get(f"/workflows/{WORKFLOW}/runs", limit=str(page), offset=str(len(runs)))
            runs.extend(answer["runs"])
            if not answer["runs"] or len(runs) >= answer.get("total", 0):
                return runs

    async def search(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.session.post(f"{self.url}/graph/{GRAPH}/search", json={"filter": filter_}) as r:
            if r.status == 404:
                return []
            r.raise_for_status()
            lines = (await r.read()).decode().splitlines()
        items = [json.loads(line) for line in lines if line.strip()]
        errors = [i["error"] for i in items if "error" in i]
        assert not errors, f"search failed: {errors}"
        return items
