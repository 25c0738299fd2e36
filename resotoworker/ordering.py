"""Deletion order, as pure functions. A delete edge A → B means A must be deleted before B (an instance
before the volume attached to it). Resources are deleted in waves: every resource of a wave has all its
delete-predecessors in earlier waves, so a wave can be deleted in parallel.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeletePlan:
    waves: list[list[str]]
    """Node ids; each wave only after every earlier one. Within a wave, in the order given."""
    cyclic: list[str] = field(default_factory=list)
    """Ids on or behind a cycle of delete edges: they cannot be ordered and are not deleted."""
    predecessors: dict[str, list[str]] = field(default_factory=dict)
    """Id to the ids that must be deleted before it (only among the ids planned)."""

    def blocker(self, node_id: str, not_deleted: Collection[str]) -> str | None:
        """The first predecessor of `node_id` that was not deleted (failed or skipped), if any."""
        return next((p for p in self.predecessors.get(node_id, ()) if p in not_deleted), None)

    def __len__(self) -> int:
        return sum(len(w) for w in self.waves) + len(self.cyclic)


def delete_waves(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> DeletePlan:
    """Order `ids` by the delete edges (from, to) among them; edges touching other ids are ignored."""
    order = list(dict.fromkeys(ids))
    position = {i: n for n, i in enumerate(order)}
    predecessors: dict[str, list[str]] = {}
    successors: dict[str, list[str]] = {}
    for from_id, to_id in dict.fromkeys(edges):
        if from_id in position and to_id in position and from_id != to_id:
            predecessors.setdefault(to_id, []).append(from_id)
            successors.setdefault(from_id, []).append(to_id)
    waiting = {i: len(predecessors.get(i, ())) for i in order}
    waves: list[list[str]] = []
    wave = [i for i in order if waiting[i] == 0]
    while wave:
        waves.append(wave)
        ready: set[str] = set()
        for done in wave:
            for successor in successors.get(done, ()):
                waiting[successor] -= 1
                if waiting[successor] == 0:
                    ready.add(successor)
        wave = sorted(ready, key=position.__getitem__)
    placed = {i for w in waves for i in w}
    cyclic = [i for i in order if i not in placed]
    return DeletePlan(waves=waves, cyclic=cyclic, predecessors=predecessors)
