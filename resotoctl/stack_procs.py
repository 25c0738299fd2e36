"""The processes of the local stack: start one with its output appended to its log file, watch it, stop it.

Each process starts in a session (and so a process group) of its own: a Ctrl-C in the terminal reaches
the stack only, which then stops the processes one by one in the reverse order of their start. Stopping
one is SIGTERM to its group, a wait of at most ``timeout`` seconds (cut short by ``hurry``, set on a
second Ctrl-C), then SIGKILL to the group if the process still runs. If the stack itself is killed
with SIGKILL, its processes keep running: stop them by the pids it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from resotoctl.stack_plan import ProcessSpec, last_lines

log = structlog.get_logger(__name__)

TAIL_BYTES = 16 * 1024
"""How much of the end of a log is read for the report of a process that died."""


@dataclass
class Child:
    """A started process of the stack."""

    spec: ProcessSpec
    proc: asyncio.subprocess.Process
    log_offset: int
    """Size of the log file when the process started: what came before is from an earlier start."""
    stopping: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines this process wrote to its log."""
        try:
            with self.spec.log_file.open("rb") as f:
                end = f.seek(0, os.SEEK_END)
                start = max(self.log_offset, end - TAIL_BYTES)
                f.seek(start)
                data = f.read(end - start)
        except OSError as e:
            return [f"(log not readable: {e})"]
        return last_lines(data, lines, cut=start > self.log_offset)


async def spawn(spec: ProcessSpec, environ: Mapping[str, str]) -> Child:
    """Start ``spec`` with stdout and stderr appended to its log file; raises OSError if it cannot start."""
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_file.open("ab") as out:
        offset = out.tell()
        proc = await asyncio.create_subprocess_exec(
            *spec.argv, env={**environ, **spec.env}, start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    log.info("process_started", process=spec.name, pid=proc.pid, log=str(spec.log_file))
    return Child(spec, proc, offset)


async def stop(child: Child, timeout: float, hurry: asyncio.Event) -> bool:  # noqa: ASYNC109 - SIGKILL after it
    """Stop ``child``: SIGTERM, then SIGKILL after ``timeout`` seconds or once ``hurry`` is set.
    Returns whether it had to be killed."""
    child.stopping = True
    if child.returncode is not None:
        return False
    _signal_group(child.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    exited = loop.create_task(child.proc.wait())
    hurried = loop.create_task(hurry.wait())
    try:
        await asyncio.wait({exited, hurried}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()
        await asyncio.gather(hurried, return_exceptions=True)
    killed = not exited.done()
    if killed:
        log.warning("process_killed", process=child.name, pid=child.pid, after_seconds=timeout)
        _signal_group(child.pid, signal.SIGKILL)
    await exited
    log.info("process_stopped", process=child.name, pid=child.pid, returncode=child.returncode, killed=killed)
    return killed


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
