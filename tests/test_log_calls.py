"""structlog's methods take the message as their first argument, named ``event``: a call that also passes
``event=`` raises TypeError when it runs, so a log line on a rare path would become a crash of that
path. No type checker sees it (the fields are ``**kw: Any``), so every call in the packages is read here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("resotolib", "resotocore", "resotoworker", "resotometrics", "resotoctl", "bench")
LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg", "log"}


def event_keywords(source: str) -> list[int]:
    """Lines of calls like ``log.info("name", event=...)``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and any(keyword.arg == "event" for keyword in node.keywords)
    ]


def test_no_log_call_passes_event_as_a_field() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in event_keywords(path.read_text())
    ]
    assert found == [], "log calls passing event= (the message's own argument); name the field otherwise"


def test_the_check_sees_such_a_call() -> None:
    assert event_keywords('log.info("event_trigger", event=name, workflow=w)\nlog.info("ok", kind=k)') == [1]
