"""Running the hooked command: real processes, their output, their end, and nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

from resotoctl.child import ChildResult, Ended, error_text, run_child
from tests.resotoctl.support import eventually, group_alive, read_int, script

Lines = list[tuple[str, str]]


def runs(command: Path) -> bool:
    """Some process runs ``command`` (a process is started only once it runs what it was given)."""
    wanted = str(command).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if wanted in cmdline.read_bytes().split(b"\0"):
                return True
    return False


def written_meanwhile(path: Path, within: float = 10) -> int:
    """The number a command writes to ``path``, waited for without letting the event loop run."""
    deadline = time.monotonic() + within
    while (value := read_int(path)) is None:
        assert time.monotonic() < deadline, f"nothing written to {path} within {within}s"
        time.sleep(0.001)
    return value


def reaped(pid: int) -> bool:
    """The process has ended and its exit status has been collected (not even a zombie is left)."""
    return not Path(f"/proc/{pid}").exists()


async def run(
    command: Path | str, *, limit: float = 10, stop: asyncio.Event | None = None
) -> tuple[ChildResult, Lines]:
    lines: Lines = []

    async def on_line(stream: str, line: str) -> None:
        lines.append((stream, line))

    result = await run_child(
        [str(command)], env={**os.environ, "GREETING": "hello"}, stdin=b'{"kind":"action"}\n',
        timeout=limit, kill_grace=0.5, on_line=on_line, stop=stop or asyncio.Event(),
    )  # fmt: skip
    return result, lines


async def test_output_stdin_and_environment_reach_their_places(tmp_path: Path) -> None:
    command = script(tmp_path, "ok.sh", 'echo "$GREETING"; read -r action; echo "$action" >&2; printf "no newline"\n')
    result, lines = await run(command)
    assert result.ok and error_text(result) is None
    assert [line for stream, line in lines if stream == "stdout"] == ["hello", "no newline"]
    assert [json.loads(line) for stream, line in lines if stream == "stderr"] == [{"kind": "action"}]


async def test_a_failure_answers_with_the_end_of_stderr(tmp_path: Path) -> None:
    command = script(tmp_path, "fail.sh", 'for i in $(seq 1 30); do echo "problem $i" >&2; done; exit 3\n')
    result, lines = await run(command)
    assert (result.ended, result.returncode) == (Ended.exited, 3)
    error = error_text(result)
    assert error is not None and error.startswith("exit code 3: problem 11\n") and error.endswith("problem 30")
    assert len(lines) == 30


async def test_past_the_timeout_the_whole_group_is_killed(tmp_path: Path) -> None:
    command = script(
        tmp_path, "hang.sh",
        f"trap '' TERM\necho $$ > {tmp_path}/pid\nsleep 60 &\necho started\nwait\n",
    )  # fmt: skip
    began = time.monotonic()
    result, lines = await run(command, limit=0.5)
    assert result.ended is Ended.timed_out and error_text(result) == "timed out after 0.5 s"
    assert time.monotonic() - began < 3  # SIGTERM is ignored: SIGKILL after the grace of 0.5 s
    assert ("stdout", "started") in lines
    pgid = read_int(tmp_path / "pid")
    assert pgid is not None
    await eventually(lambda: not group_alive(pgid), within=2)


async def test_stop_interrupts_the_command_and_its_group(tmp_path: Path) -> None:
    command = script(tmp_path, "long.sh", f"echo $$ > {tmp_path}/pid\nsleep 60 &\nwait\n")
    stop = asyncio.Event()
    running = asyncio.create_task(run(command, stop=stop))
    pgid = await eventually(lambda: read_int(tmp_path / "pid"))
    assert group_alive(pgid)
    stop.set()
    result, _ = await asyncio.wait_for(running, 5)
    assert (
        result.ended is Ended.interrupted
        and error_text(result, "resotoctl got SIGINT") == "interrupted (resotoctl got SIGINT)"
    )
    await eventually(lambda: not group_alive(pgid), within=2)


async def test_cancelling_leaves_nothing_running(tmp_path: Path) -> None:
    command = script(tmp_path, "long.sh", f"echo $$ > {tmp_path}/pid\nsleep 60\n")
    running = asyncio.create_task(run(command))
    pgid = await eventually(lambda: read_int(tmp_path / "pid"))
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert reaped(pgid)  # its end is seen before the cancellation is through, not left to a loop about to close
    await eventually(lambda: not group_alive(pgid), within=2)


async def test_cancelling_while_the_command_starts_leaves_nothing_running(tmp_path: Path) -> None:
    command = script(tmp_path, "fork.sh", f"sleep 60 &\necho $$ > {tmp_path}/pid\nwait\n")
    running = asyncio.create_task(run(command))
    while not runs(command):  # noqa: ASYNC110 - a step of the loop at a time: the start is not through yet
        await asyncio.sleep(0)
    pgid = written_meanwhile(tmp_path / "pid")  # the loop stands still: the command's own child runs, the start waits
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert reaped(pgid)
    await eventually(lambda: not group_alive(pgid), within=2)


async def test_a_missing_command_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    result, lines = await run(tmp_path / "missing.sh")
    assert result.ended is Ended.not_started and lines == []
    assert (error_text(result) or "").startswith(f"could not start the command: {tmp_path}/missing.sh:")


async def test_output_held_open_by_a_leftover_process_does_not_block(tmp_path: Path) -> None:
    command = script(tmp_path, "daemon.sh", f"sleep 30 &\necho $! > {tmp_path}/leftover\necho done\n")
    began = time.monotonic()
    result, lines = await run(command)
    assert result.ok and lines == [("stdout", "done")]
    assert time.monotonic() - began < 3
    leftover = read_int(tmp_path / "leftover")
    assert leftover is not None
    os.kill(leftover, signal.SIGKILL)  # the command ended by itself: what it left behind is not ours to end
