"""Run the hooked command for one action and say how it ended.

The command starts in a session (and so a process group) of its own: a Ctrl-C in the terminal does
not reach it, and at the time limit or on stop the whole group goes — SIGTERM first, SIGKILL after a
grace period. The action JSON is written to its stdin; stdout and stderr are read line by line as they
come (never buffered whole) and handed to ``on_line``; the last stderr lines are kept for the answer.

When the command exits by itself, output still held open by processes it left behind is read for a
short drain period only; those processes are not killed (only a timeout or a stop ends the group).

A cancellation ends the whole group too, also while the command is being started, and goes on only once
the command has exited and been reaped: nothing of it runs on, and its exit is never left for a loop that
may be about to close (whose process object would then still count the command as running).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from resotoctl.limits import LineSplitter, Tail

log = structlog.get_logger(__name__)

CHUNK = 64 * 1024
DRAIN_SECONDS = 1.0
"""After the command exited: how long to wait for the end of output held open by processes it left."""

OnLine = Callable[[str, str], Awaitable[None]]
"""Called with ``("stdout" | "stderr", line)`` for every output line, in order per stream."""


class Ended(StrEnum):
    exited = "exited"
    timed_out = "timed_out"
    interrupted = "interrupted"
    not_started = "not_started"


@dataclass(frozen=True)
class ChildResult:
    ended: Ended
    returncode: int | None
    stderr_tail: str
    seconds: float
    timeout: float
    reason: str = ""
    """Why the command could not be started (``not_started``)."""

    @property
    def ok(self) -> bool:
        return self.ended is Ended.exited and self.returncode == 0


def error_text(result: ChildResult, stopped_by: str = "") -> str | None:
    """The ``action_error`` text of a result, or None for ``action_done`` (exit code 0)."""
    tail = result.stderr_tail
    match result.ended:
        case Ended.exited if result.returncode == 0:
            return None
        case Ended.exited:
            code = result.returncode or 0
            how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit code {code}"
            return f"{how}: {tail}" if tail else f"{how} (nothing on stderr)"
        case Ended.timed_out:
            text = f"timed out after {result.timeout:g} s"
            return f"{text}; last stderr: {tail}" if tail else text
        case Ended.interrupted:
            return f"interrupted ({stopped_by})" if stopped_by else "interrupted"
        case Ended.not_started:
            return f"could not start the command: {result.reason}"


async def run_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes,
    timeout: float,  # noqa: ASYNC109 - the command's time limit, enforced by killing its process group
    kill_grace: float,
    on_line: OnLine,
    stop: asyncio.Event,
) -> ChildResult:
    """Run ``argv`` until it exits, ``timeout`` passes or ``stop`` is set; never leaves its group running
    on timeout, stop or cancellation."""
    tail = Tail()
    async with _output_pipe() as out, _output_pipe() as err:
        try:
            proc = await _start(argv, env, out.child_end, err.child_end)
        except OSError as e:
            return ChildResult(Ended.not_started, None, "", 0.0, timeout, reason=f"{argv[0]}: {e.strerror or e}")
        finally:
            out.close_child_end()
            err.close_child_end()
        log.info("command_started", pid=proc.pid)
        assert proc.stdin is not None
        loop = asyncio.get_running_loop()
        readers = [
            loop.create_task(_pump(out.reader, "stdout", on_line, None)),
            loop.create_task(_pump(err.reader, "stderr", on_line, tail)),
        ]
        feeder = loop.create_task(_feed(proc.stdin, stdin))
        started = time.monotonic()
        ended = await _supervise(proc, readers, feeder, timeout, kill_grace, stop)
    seconds = time.monotonic() - started
    log.info("command_ended", pid=proc.pid, how=ended.value, returncode=proc.returncode, seconds=round(seconds, 3))
    return ChildResult(ended, proc.returncode, tail.text(), seconds, timeout)


async def _supervise(
    proc: asyncio.subprocess.Process,
    readers: list[asyncio.Task[None]],
    feeder: asyncio.Task[None],
    limit: float,
    kill_grace: float,
    stop: asyncio.Event,
) -> Ended:
    """Wait for the exit, the time limit or the stop; then for the rest of the output, briefly."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_task(proc.wait())
    stopper = loop.create_task(stop.wait())
    ended = Ended.exited
    try:
        done, _ = await asyncio.wait({waiter, stopper}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            ended = Ended.interrupted if stopper in done else Ended.timed_out
            log.warning("command_stopping", pid=proc.pid, reason=ended.value)
            await _terminate(proc, kill_grace)
        await _drain(readers, DRAIN_SECONDS)
    finally:
        helpers = (*readers, feeder, stopper)
        for task in helpers:
            task.cancel()
        if proc.returncode is None:  # cancelled: nothing of the command may outlive us
            await _kill(proc)
        await asyncio.gather(*helpers, waiter, return_exceptions=True)
    return ended


async def _start(argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int) -> asyncio.subprocess.Process:
    """Start the command in a session (and so a process group) of its own.

    A cancellation while it starts does not reach the start: asyncio would then kill the command's first
    process only, and the processes it has started already would run on. The start finishes, the whole
    group is killed, and the cancellation goes on once the command has been reaped.
    """
    start = asyncio.create_subprocess_exec(
        *argv, env=dict(env), start_new_session=True,
        stdin=asyncio.subprocess.PIPE, stdout=stdout, stderr=stderr,
    )  # fmt: skip
    starting = asyncio.ensure_future(start)
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(_kill_started)  # the kill happens even if this wait is cancelled again
        with contextlib.suppress(OSError):  # it did not start: nothing to end
            await (await asyncio.shield(starting)).wait()
        raise


def _kill_started(starting: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        _signal_group(starting.result().pid, signal.SIGKILL)


class _OutputPipe:
    """A pipe for one output stream of the command, read here through a StreamReader.

    The command's end is a plain file descriptor rather than an asyncio pipe, so waiting for the
    command's exit never waits for processes it left behind that still hold its output open.
    """

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport, child_end: int) -> None:
        self.reader = reader
        self.transport = transport
        self.child_end = child_end

    def close_child_end(self) -> None:
        if self.child_end >= 0:
            os.close(self.child_end)
            self.child_end = -1


@contextlib.asynccontextmanager
async def _output_pipe() -> AsyncIterator[_OutputPipe]:
    read_end, write_end = os.pipe()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", buffering=0)
        )
    except BaseException:
        os.close(write_end)
        raise
    pipe = _OutputPipe(reader, transport, write_end)
    try:
        yield pipe
    finally:
        pipe.close_child_end()
        transport.close()


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the action and close stdin; a command that does not read it is fine."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _pump(stream: asyncio.StreamReader, name: str, on_line: OnLine, tail: Tail | None) -> None:
    splitter = LineSplitter()
    while chunk := await stream.read(CHUNK):
        for line in splitter.feed(chunk):
            await _deliver(name, line, on_line, tail)
    for line in splitter.flush():
        await _deliver(name, line, on_line, tail)


async def _deliver(name: str, line: str, on_line: OnLine, tail: Tail | None) -> None:
    if tail is not None:
        tail.add(line)
    log.debug("command_output", stream=name, line=line)
    await on_line(name, line)


async def _drain(readers: list[asyncio.Task[None]], within: float) -> None:
    _, pending = await asyncio.wait(readers, timeout=within)
    if pending:
        log.warning("output_left_open", seconds=within, hint="processes the command started still hold its output")


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the group, SIGKILL to whatever is left of it after ``grace`` seconds."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    await _kill(proc)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL to the command's group; returns once the command has exited and been reaped."""
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
