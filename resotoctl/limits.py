"""Bounds on what one script run sends to the core: pure logic, the time is passed in.

- ``LineSplitter`` turns pipe chunks into text lines; an over-long line is cut, never buffered whole.
- ``OutputBudget`` decides which output lines become ``action_info``: the first ones as they come
  (within a rate), the last ones when the command has ended, and a count of those left out between.
- ``Tail`` keeps the last lines of stderr within a size bound: the error text of a failed run.

The core keeps at most 100 info messages per step, so the default budget (50 lines plus one note)
leaves room for the other subscribers of the step.
"""

from __future__ import annotations

from collections import deque

MAX_LINE_CHARS = 1000
"""Longest line sent as one info message; longer lines are cut and marked with an ellipsis."""
ELLIPSIS = "…"


def cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + ELLIPSIS


class LineSplitter:
    """Bytes of one pipe in, complete text lines out (decoded leniently, without line ends)."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self._max_chars = max_chars
        self._max_bytes = 4 * max_chars  # kept while waiting for the line's end; the rest is skipped
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[str]:
        lines: list[str] = []
        self._buffer += chunk
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:  # the start of this line was emitted already
                self._skipping = False
                continue
            lines.append(self._decode(raw))
        if len(self._buffer) > self._max_bytes:
            if not self._skipping:
                lines.append(self._decode(bytes(self._buffer))[: self._max_chars - 1] + ELLIPSIS)
                self._skipping = True
            self._buffer.clear()
        return lines

    def flush(self) -> list[str]:
        """The last line when the output did not end with a newline."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        if self._skipping or not rest:
            return []
        return [self._decode(rest)]

    def _decode(self, raw: bytes) -> str:
        return cut(raw.decode(errors="replace").rstrip("\r"), self._max_chars)


class OutputBudget:
    """Which output lines of one action are sent, and when: the head as it comes, the tail at the end.

    Lines are sent as they come while fewer than half of ``max_lines`` went out and the rate allows
    (``rate`` per second after a ``burst``). From the first line that is held back on, lines go to a
    ring of the other half, sent when the command has ended, after one line saying how many were left
    out. Order is kept and at most ``max_lines + 1`` messages go out per action.
    """

    def __init__(self, max_lines: int = 50, rate: float = 5.0, burst: int = 10) -> None:
        self.max_lines = max_lines
        self.rate = rate
        self.burst = burst
        self.total = 0
        self.sent = 0
        self._live = max_lines - max_lines // 2
        self._tail: deque[tuple[str, str]] = deque(maxlen=max_lines // 2)
        self._holding = False
        self._tokens = float(burst)
        self._last: float | None = None

    def offer(self, line: str, level: str, now: float) -> bool:
        """True: send the line now. False: it is held for the end (and may be left out)."""
        self.total += 1
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if not self._holding and self.sent < self._live and self._tokens >= 1:
            self._tokens -= 1
            self.sent += 1
            return True
        self._holding = True
        self._tail.append((level, line))
        return False

    @property
    def dropped(self) -> int:
        return self.total - self.sent - len(self._tail)

    def rest(self) -> list[tuple[str, str]]:
        """``(level, message)`` to send once the command ended: how many lines were left out, then the tail."""
        rest = list(self._tail)
        self.sent += len(rest)
        self._tail.clear()
        if self.dropped:
            note = (
                f"{self.dropped} of {self.total} output lines left out here "
                f"(at most {self.max_lines} per action, {self.rate:g} per second as they come)"
            )
            rest.insert(0, ("warning", note))
        return rest


class Tail:
    """The last ``max_lines`` lines, together at most ``max_chars`` characters (the newest kept)."""

    def __init__(self, max_lines: int = 20, max_chars: int = 2048) -> None:
        self.max_chars = max_chars
        self._lines: deque[str] = deque(maxlen=max_lines)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def text(self) -> str:
        joined = "\n".join(line for line in self._lines).strip()
        if len(joined) <= self.max_chars:
            return joined
        return ELLIPSIS + joined[-(self.max_chars - 1) :]
