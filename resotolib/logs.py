"""structlog set-up shared by every process: JSON lines when not on a terminal, readable otherwise.

Libraries log through the standard ``logging`` module (aiohttp's "Error handling request", asyncio's
"Task exception was never retrieved"). Their records go through the same renderer as our own events,
so a JSON log stays one object per line, with a traceback as the ``exception`` field instead of
lines of plain text that a log shipper would split into unparsable entries.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def stdlib_handler(as_json: bool, renderer: structlog.typing.Processor) -> logging.Handler:
    """A handler on stderr that renders standard-library records like structlog events, plus ``logger``."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if as_json else []),  # the console renders exc_info itself
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    return handler


def setup_logging(fmt: LogFormat = "auto", level: str = "info") -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # a traceback's local variables would show secrets (a config holding the PSK) in the clear
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    )
    numeric = LEVELS.get(level.lower(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier call, or anyone's: each record once, rendered
        root.removeHandler(handler)
    root.addHandler(stdlib_handler(as_json, renderer))
    root.setLevel(max(numeric, logging.WARNING))  # libraries' info lines are noise next to our events
