"""The signals that stop a long-running ``resotoctl`` command (``stack``, ``subscribe``).

SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal went away: a closed window, a dropped ssh session) each
start the same orderly stop, so the processes the command started never outlive it. A command that exits
because of one reports 128 + its number: 130, 143, 129.

After SIGHUP, writing to a terminal that hung up fails (EIO); the stop would then break off half-way at
its first log line. So on SIGHUP, stdout and stderr that were a terminal and are one no more (a terminal
that hung up no longer answers as one) are pointed at /dev/null first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import IO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(sig: signal.Signals) -> int:
    """The shell's convention for a command ended by a signal: 128 + its number."""
    return 128 + int(sig)


@contextlib.contextmanager
def stop_signals(on_stop: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call ``on_stop(sig)`` on each of the ``STOP_SIGNALS`` while in the block (in the running loop)."""
    loop = asyncio.get_running_loop()
    terminals = [fd for fd in (_fileno(sys.stdout), _fileno(sys.stderr)) if fd is not None and _is_terminal(fd)]

    def received(sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            _silence([fd for fd in terminals if not _is_terminal(fd)])
        on_stop(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, received, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):  # replaced by a stream without a file descriptor
        return None


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _silence(fds: list[int]) -> None:
    """Point ``fds`` (a terminal that hung up) at /dev/null; output still buffered for them goes there too
    instead of failing."""
    if not fds:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)
