"""The audits of a chaos session: the run history against the runs the harness started, and every
deletion of the example cloud against its journal, the worker's logs and the cloud's spec."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.cloud import SHOWN, CloudState, Deletion

STEPS = 12
NOT_ANSWERED = ("error", "timeout", "gone", "cancelled")


@dataclass
class RunAudit:
    checked: int = 0
    succeeded: int = 0
    failed_with_error: int = 0
    cancelled: int = 0
    unattributed: int = 0
    """Runs in the history whose id no POST answer gave (their POST lost its answer)."""
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Everything wrong, lost and duplicated runs included."""


def audit_runs(history: Sequence[dict[str, Any]], started: Sequence[str], unanswered: int) -> RunAudit:
    """Every started run is in the history exactly once and has ended: succeeded with every step done,
    or failed/cancelled with its error and each step's outcome recorded. Runs nobody got an id for
    may only come from POSTs that lost their answer."""
    audit = RunAudit(checked=len(history))
    seen = Counter(run["id"] for run in history)
    audit.duplicated = duplicated = sorted(i for i, n in seen.items() if n > 1)
    audit.lost = lost = sorted(set(started) - set(seen))
    if duplicated:
        audit.problems.append(f"{len(duplicated)} runs duplicated in the history: {duplicated[:SHOWN]}")
    if lost:
        audit.problems.append(f"{len(lost)} started runs lost from the history: {lost[:SHOWN]}")
    audit.unattributed = len(set(seen) - set(started))
    if audit.unattributed > unanswered:
        audit.problems.append(f"{audit.unattributed} runs nobody started (only {unanswered} POSTs lost their answer)")
    for run in history:
        problem = _run_problem(run)
        if problem:
            audit.problems.append(f"run {run['id']} ({run['status']}): {problem}")
        elif run["status"] == "succeeded":
            audit.succeeded += 1
        elif run["status"] == "failed":
            audit.failed_with_error += 1
        else:
            audit.cancelled += 1
    return audit


def _run_problem(run: dict[str, Any]) -> str | None:
    steps = run["steps"]
    match run["status"]:
        case "running":
            return f"never ended (in step {run['step']})"
        case "succeeded":
            if len(steps) != STEPS or not all(s["success"] for s in steps):
                return f"succeeded with {len(steps)} steps, not all done"
            return None
        case _:
            if not run["error"]:
                return "ended without a recorded error"
            if any(s["ended_at"] is None for s in steps):
                return "a step without an end"
            for s in steps:
                if s["success"] is False and not any(o["outcome"] in NOT_ANSWERED for o in s["subscribers"].values()):
                    return f"step {s['name']} failed without a subscriber's outcome"
            return None


@dataclass
class DeleteAudit:
    checked: int = 0
    """Journal lines checked."""
    effective: int = 0
    """Deletions the cloud holds."""
    redone: int = 0
    """Deletions cut short by a kill (never saved, never acknowledged) and done again later."""
    double: list[str] = field(default_factory=list)
    unmarked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Deletions whose delete returned but that the cloud does not hold, or that were never journaled."""

    @property
    def problems(self) -> list[str]:
        return self.double + self.unmarked + self.lost

    def add(self, other: DeleteAudit) -> None:
        """Count in the audit of another cloud (an earlier one of the same session)."""
        self.checked += other.checked
        self.effective += other.effective
        self.redone += other.redone
        self.double += other.double
        self.unmarked += other.unmarked
        self.lost += other.lost


def acknowledged(worker_log: Iterable[tuple[int, Mapping[str, Any]]]) -> Counter[tuple[int, str]]:
    """(pid, node id) of every deletion a worker reported done (``resource_deleted``), less those that
    found the resource gone already (deleted by a cleanup killed before it wrote ``cleaned`` back): the
    cloud did nothing for them, and the worker rightly records them cleaned."""
    done: Counter[tuple[int, str]] = Counter()
    gone: Counter[tuple[int, str]] = Counter()
    for pid, entry in worker_log:
        match entry.get("event"):
            case "resource_deleted":
                done[(pid, str(entry["node_id"]))] += 1
            case "example_resource_already_gone":
                gone[(pid, str(entry["node_id"]))] += 1
    return done - gone


def audit_deletes(state: CloudState, acks: Counter[tuple[int, str]]) -> DeleteAudit:
    """No resource deleted twice, none deleted without being marked, none lost after its delete returned."""
    audit = DeleteAudit(checked=len(state.journal))
    by_id: dict[str, list[Deletion]] = defaultdict(list)
    for deletion in state.journal:
        by_id[deletion.node_id].append(deletion)
        problem = _unmarked(state, deletion)
        if problem:
            audit.unmarked.append(f"{deletion.node_id} deleted {problem}")
    acked_per_id = Counter(nid for (_, nid), n in acks.items() for _ in range(n))
    twice = sorted(nid for nid, n in acked_per_id.items() if n > 1)
    if twice:
        audit.double.append(f"{len(twice)} resources reported deleted twice: {twice[:SHOWN]}")
    for nid, lines in by_id.items():
        for earlier in lines[:-1]:
            if acks[(earlier.pid, nid)]:
                audit.double.append(f"{nid} deleted twice: done (pid {earlier.pid}), then deleted again")
            else:
                audit.redone += 1
        if nid in state.deleted:
            audit.effective += 1
        elif acks[(lines[-1].pid, nid)]:
            audit.lost.append(f"{nid}: the delete returned (pid {lines[-1].pid}) but the cloud does not hold it")
    unjournaled = sorted(state.deleted - set(by_id))
    if unjournaled:
        audit.lost.append(f"{len(unjournaled)} deletions without a journal line: {unjournaled[:SHOWN]}")
    return audit


def _unmarked(state: CloudState, deletion: Deletion) -> str | None:
    """Why this deletion should not have happened: not marked, or (by the spec) not expired or protected."""
    entry, resource = deletion.entry, state.resources.get(deletion.node_id)
    if entry.get("clean") is not True or not entry.get("clean_reason"):
        return f"without being marked for cleanup: {entry}"
    if entry.get("protected"):
        return "although the node was protected"
    if resource is None:
        return "but the cloud never had it"
    if resource.protected:
        return "although the resource is protected"
    if resource.expires is None or resource.expires > deletion.at:
        return f"before it expired ({resource.expires})"
    return None
