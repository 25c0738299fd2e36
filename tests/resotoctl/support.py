"""Helpers of the resotoctl tests: run the real console script, write hook scripts, look at processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI_WITHIN = 20.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def ctl_argv(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "resotoctl", "--resotocore-uri", url, *args]


def ctl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOTOCTL_")}
    return {**env, "COLUMNS": "200", **extra}


async def ctl(url: str, *args: str, within: float = CLI_WITHIN, **env: str) -> Result:
    """Run ``resotoctl --resotocore-uri URL ARGS`` to its end; stdout and stderr as text."""
    proc = await asyncio.create_subprocess_exec(
        *ctl_argv(url, *args), env=ctl_env(**env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"resotoctl {' '.join(args)} did not end within {within}s: {out!r} {err!r}") from None
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def script(directory: Path, name: str, body: str) -> Path:
    """An executable bash script in ``directory``."""
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def group_alive(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that still run (zombies waiting to be reaped do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


async def eventually(check: Callable[[], Any], within: float = 5.0, every: float = 0.05) -> Any:
    """The first truthy result of ``check`` within ``within`` seconds, else the test fails."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(every)


async def until_async(check: Callable[[], Awaitable[Any]], within: float = 10.0, every: float = 0.05) -> Any:
    """The first truthy result of the coroutine ``check`` within ``within`` seconds, else the test fails."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(every)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class CtlProcess:
    """A long-running ``resotoctl`` (subscribe, events): stdout read line by line, stderr kept."""

    def __init__(self, url: str, *args: str, **env: str) -> None:
        self.argv = ctl_argv(url, *args)
        self.env = ctl_env(**env)
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> CtlProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._drain = asyncio.get_running_loop().create_task(self._read_stderr())
        return self

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip("\n"))

    async def line(self, within: float = 10.0) -> Any:
        """The next stdout line as JSON."""
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        assert raw, f"resotoctl ended its output; stderr: {self.stderr}"
        return json.loads(raw)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 10.0) -> int:
        assert self.proc is not None and self._drain is not None
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._drain, within)
        return code

    def log(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (stderr is not a terminal, so logs are JSON)."""
        entries = []
        for line in self.stderr:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"event": "raw", "line": line})
        return entries
