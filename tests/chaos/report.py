"""What a chaos session counted and found, and its summary as printed by the bench."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.audit import DeleteAudit, RunAudit
from tests.chaos.stack import KINDS


@dataclass
class ChaosReport:
    seed: int
    kills: Counter[str] = field(default_factory=Counter)
    """Kills survived, per process kind."""
    moments: Counter[str] = field(default_factory=Counter)
    """Where the run was when a kill landed: its step, ``post`` (during the POST), or ``idle``."""
    posts: Counter[str] = field(default_factory=Counter)
    """Answers to POST /workflows/.../run: started, queued, skipped, failed (the core died)."""
    started: list[str] = field(default_factory=list)
    merges_interrupted: int = 0
    clouds: int = 1
    """Example clouds used: a new one replaces the old when nothing is left to delete."""
    snapshot_checks: int = 0
    integrity_checks: int = 0
    script_runs: int = 0
    script_reruns: int = 0
    runs: RunAudit = field(default_factory=RunAudit)
    deletes: DeleteAudit = field(default_factory=DeleteAudit)
    problems: list[str] = field(default_factory=list)
    """Everything found wrong outside the run and delete audits."""
    seconds: float = 0.0

    def all_problems(self) -> list[str]:
        return self.problems + self.runs.problems + self.deletes.problems

    def summary(self) -> list[str]:
        runs, deletes = self.runs, self.deletes
        kinds = ", ".join(f"{kind} {self.kills[kind]}" for kind in KINDS)
        moments = ", ".join(f"{m} {n}" for m, n in self.moments.most_common())
        posts = ", ".join(f"{s} {n}" for s, n in sorted(self.posts.items()))
        problems = self.all_problems()
        return [
            f"seed {self.seed}: {sum(self.kills.values())} kills (SIGKILL) in {self.seconds:.0f} s",
            f"kills survived: {kinds}",
            f"kills landed in: {moments}",
            f"merges cut short by a kill of the core: {self.merges_interrupted}",
            f"POST run answers: {posts}",
            f"runs checked: {runs.checked} (succeeded {runs.succeeded}, failed with a recorded error "
            f"{runs.failed_with_error}, cancelled {runs.cancelled}, started by a POST that lost its answer "
            f"{runs.unattributed})",
            f"runs lost: {len(runs.lost)}, duplicated: {len(runs.duplicated)}",
            f"graph snapshot checks: {self.snapshot_checks}, database integrity checks: {self.integrity_checks}",
            f"deletes checked: {deletes.checked} in {self.clouds} clouds (done {deletes.effective}, "
            f"cut short by a kill and redone {deletes.redone})",
            f"double deletes: {len(deletes.double)}, unmarked deletes: {len(deletes.unmarked)}, "
            f"lost deletes: {len(deletes.lost)}",
            f"post_collect script runs: {self.script_runs} ({self.script_reruns} again after a kill)",
            f"problems: {len(problems)}",
            *(f"  - {p}" for p in problems),
        ]
