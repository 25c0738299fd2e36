"""One process of the chaos stack: started in a session of its own with its output in a log file per
start (``<kind>.<n>.log``), killed with SIGKILL, started again with the same command line (same data
directory, same port). Every start is kept, so logs and pids can be matched afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Start:
    """One start of a process."""

    number: int
    pid: int
    log_file: Path


class ChaosProcess:
    def __init__(self, kind: str, argv: Sequence[str], cwd: Path, log_dir: Path, env: Mapping[str, str]) -> None:
        self.kind = kind
        self.argv = list(argv)
        self.cwd = cwd
        self.log_dir = log_dir
        self.env = dict(env)
        self.starts: list[Start] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0
        self.exited_by_itself: list[str] = []
        """Starts that ended without being killed or stopped: ``<log file>: <exit code>``."""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        assert not self.alive, f"{self.kind} is running"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"{self.kind}.{len(self.starts) + 1}.log"
        with log_file.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self.starts.append(Start(len(self.starts) + 1, self.proc.pid, log_file))

    def check_exit(self) -> bool:
        """Whether the process ended by itself (recorded); it is then ready to be started again."""
        if self.proc is None or self.proc.returncode is None:
            return False
        self.exited_by_itself.append(f"{self.starts[-1].log_file.name}: exit {self.proc.returncode}")
        self.proc = None
        return True

    async def kill(self, within: float = 10) -> None:
        """SIGKILL, and wait until the process is gone."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), within)
        self.kills += 1
        self.proc = None

    async def stop(self, within: float = 10) -> None:
        """SIGTERM to the process group, SIGKILL after `within` seconds; waits until it is gone."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def entries(self) -> Iterator[tuple[Start, dict[str, Any]]]:
        """Every JSON log line of every start, with the start it came from."""
        for start in self.starts:
            with contextlib.suppress(FileNotFoundError), start.log_file.open(errors="replace") as f:
                for line in f:
                    if line.startswith("{"):
                        with contextlib.suppress(json.JSONDecodeError):
                            yield start, json.loads(line)

    def tail(self, lines: int = 20) -> str:
        if not self.starts:
            return "(never started)"
        try:
            text = self.starts[-1].log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
