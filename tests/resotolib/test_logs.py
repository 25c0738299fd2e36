"""Log output of the shared set-up, in a process of its own (logging is configured once per process)."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import logging, structlog
from resotolib.logs import setup_logging
logging.basicConfig()  # a handler installed before: it goes, or each record would come out twice
setup_logging({fmt!r}, "info")
setup_logging({fmt!r}, "info")  # and again: still one handler
structlog.get_logger("ours").info("started", port=8900)
logging.getLogger("library").info("not shown: libraries log warnings and above")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("library").exception("Error handling request")


def fail(psk):
    raise RuntimeError("boom")


try:
    fail("s3cret-psk")
except RuntimeError:
    structlog.get_logger("ours").exception("startup_failed")
"""


def run(fmt: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(fmt=fmt)], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stderr


def test_json_log_holds_one_object_per_line_also_for_standard_library_loggers() -> None:
    entries = [json.loads(line) for line in run("json").splitlines()]
    assert [e["event"] for e in entries] == ["started", "Error handling request", "startup_failed"]
    assert entries[0].keys() == {"event", "level", "timestamp", "port"}
    library = entries[1]
    assert library["level"] == "error" and library["logger"] == "library"
    assert library["exception"].startswith("Traceback") and "ZeroDivisionError" in library["exception"]


def test_console_log_shows_standard_library_records_with_their_traceback() -> None:
    text = run("console")
    assert "started" in text and "port=8900" in text
    assert "Error handling request" in text and "[library]" in text and "ZeroDivisionError" in text
    assert "not shown" not in text


def test_tracebacks_show_no_local_variables() -> None:
    for fmt in ("json", "console"):
        text = run(fmt)
        assert "RuntimeError" in text and "s3cret-psk" not in text, text
