"""The progress one subscriber reports in one step, merged from its action_progress messages.

A subscriber reports progress in parts: Resoto's worker sends one message per account or region, each
repeating the latest count of that part. A part is told apart by where it is (the progress's ``path``,
or the message's ``context`` when it has no path: Resoto's client repeats its context as the path) and
its ``name``. The latest message of each part is kept; while there is one part, that message is the
progress; with several, one message with a tree of every part (counts add up, as a tree's do). A new
step starts afresh. Parts are bounded: beyond MAX_PARTS a finished part goes first (else the stalest),
so that an organisation of many accounts keeps the ones still counting.
"""

from __future__ import annotations

from resotolib.protocol import ActionProgressData, Progress, ProgressDone, ProgressTree

MAX_PARTS = 1000

PartKey = tuple[tuple[str, ...], str]


class StepProgress:
    """The merged progress of one subscriber in its current step."""

    def __init__(self, max_parts: int = MAX_PARTS) -> None:
        self.max_parts = max_parts
        self.step: str | None = None
        self._parts: dict[PartKey, ActionProgressData] = {}
        self._merged: ActionProgressData | None = None

    def add(self, data: ActionProgressData) -> None:
        if data.step != self.step:
            self.step, self._parts = data.step, {}
        key = _key(data)
        self._parts.pop(key, None)  # the most recently reported part goes last: the first to drop is the stalest
        self._parts[key] = data
        while len(self._parts) > self.max_parts:
            finished = (k for k, d in self._parts.items() if k != key and _finished(d))
            del self._parts[next(finished, next(iter(self._parts)))]
        self._merged = None

    @property
    def parts(self) -> int:
        return len(self._parts)

    def merged(self) -> ActionProgressData | None:
        """The message when there is one part; else the last one to arrive with a tree of every part's
        progress instead of its own (each with its full path), named after the step."""
        if self._merged is None and self._parts:
            latest = next(reversed(self._parts.values()))  # the last one to arrive
            if len(self._parts) == 1:
                self._merged = latest
            else:
                parts = [_rooted(d) for d in sorted(self._parts.values(), key=_key)]
                tree = ProgressTree(name=latest.step, parts=parts)
                self._merged = latest.model_copy(update={"context": [], "progress": tree})
        return self._merged


def _key(data: ActionProgressData) -> PartKey:
    return tuple(_where(data)), data.progress.name


def _where(data: ActionProgressData) -> list[str]:
    return data.progress.path if data.progress.path is not None else data.context


def _rooted(data: ActionProgressData) -> Progress:
    return data.progress.model_copy(update={"path": _where(data) or None})


def _finished(data: ActionProgressData) -> bool:
    progress = data.progress
    return isinstance(progress, ProgressDone) and progress.total > 0 and progress.current >= progress.total
