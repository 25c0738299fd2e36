"""What to do when a trigger fires while the same workflow is running: a pure decision."""

from __future__ import annotations

from dataclasses import dataclass

from resotocore.workflow.model import OnSurpass
from resotolib.protocol import TaskId


@dataclass(frozen=True)
class Decision:
    start: bool
    cancel: tuple[TaskId, ...] = ()
    enqueue: bool = False
    reason: str = ""


def decide(policy: OnSurpass, running: tuple[TaskId, ...], queued: bool) -> Decision:
    """Decide how to honour a trigger given the workflow's running tasks and whether a run is queued."""
    if not running:
        return Decision(start=True, reason="started")
    busy = ", ".join(running)
    match policy:
        case OnSurpass.skip:
            return Decision(start=False, reason=f"skipped: the workflow is running (task {busy})")
        case OnSurpass.parallel:
            return Decision(start=True, reason="started in parallel")
        case OnSurpass.replace_:
            return Decision(start=True, cancel=running, reason=f"started, replacing task {busy}")
        case OnSurpass.wait:
            if queued:
                return Decision(start=False, reason=f"already queued: runs when task {busy} ends")
            return Decision(start=False, enqueue=True, reason=f"queued: runs when task {busy} ends")
