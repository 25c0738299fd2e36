"""The single error boundary of every command: one readable line on stderr and an exit code.

Exit codes: 0 ok; 1 the core refused the request (404, 409, ...) or a run failed; 2 usage error;
3 the core is unreachable; 4 the core refused access (401, 403); 130 / 143 / 129 stopped by SIGINT /
SIGTERM / SIGHUP (128 + the signal's number).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import click
import structlog

from resotolib.client import CoreError, CoreUnreachable

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4
EXIT_SIGINT = 130


class CtlError(Exception):
    """A failure with a message meant for the user; no traceback is shown."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def describe(error: CoreError) -> CtlError:
    """The user-facing line and exit code of a failed request."""
    if isinstance(error, CoreUnreachable):
        return CtlError(f"{error.message} (set --resotocore-uri or RESOTOCTL_RESOTOCORE_URI)", EXIT_UNREACHABLE)
    if error.status in (401, 403):
        message = f"the core refused access ({error.status}): {error.message}; check --psk or RESOTOCTL_PSK"
        return CtlError(message, EXIT_UNAUTHORIZED)
    return CtlError(f"{error.message} (HTTP {error.status})", EXIT_FAILED)


def execute(main: Coroutine[Any, Any, int | None]) -> NoReturn:
    """Run a command's coroutine and exit with its code; expected failures become one line on stderr."""
    try:
        code = asyncio.run(main) or EXIT_OK
    except CtlError as e:
        code = _fail(e)
    except CoreError as e:
        code = _fail(describe(e))
    except KeyboardInterrupt:
        code = EXIT_SIGINT
    except BrokenPipeError:  # the reader of our output went away (``| head``): not an error of ours
        _silence_stdout()
        code = EXIT_OK
    except Exception as e:
        log.debug("command_crashed", exc_info=True)
        code = _fail(CtlError(f"unexpected {type(e).__name__}: {e} (--log-level debug shows the traceback)"))
    sys.exit(code)


def _fail(error: CtlError) -> int:
    click.secho(f"Error: {error.message}", err=True, fg="red")
    return error.exit_code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
