"""Bounds on what one script run sends to the core: pure logic, the time is passed in.

- ``LineSplitter`` turns pipe chunks into text lines; an over-long line is cut, never buffered whole.
- ``OutputBudget`` decides which output lines become ``action_info``: at most ``max_lines`` per action
  and ``rate`` per second (a token bucket of ``burst``); the rest are counted and summarised once.
- ``Tail`` keeps the last lines of stderr within a size bound: the error text of a failed run.

The core keeps at most 100 info messages per step, so the default budget (50 lines plus one summary)
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
    """Admits at most ``max_lines`` lines per action, at most ``rate`` per second after a ``burst``."""

    def __init__(self, max_lines: int = 50, rate: float = 10.0, burst: int = 20) -> None:
        self.max_lines = max_lines
        self.rate = rate
        self.burst = burst
        self.sent = 0
        self.dropped = 0
        self._tokens = float(burst)
        self._last: float | None = None

    def admit(self, now: float) -> bool:
        """True when the line at time ``now`` (seconds, monotonic) may be sent; counts it either way."""
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self.sent >= self.max_lines or self._tokens < 1:
            self.dropped += 1
            return False
        self._tokens -= 1
        self.sent += 1
        return True

    def summary(self) -> str | None:
        """One line about the dropped lines, or None when every line was sent."""
        if not self.dropped:
            return None
        return (
            f"{self.dropped} of {self.sent + self.dropped} output lines not sent "
            f"(at most {self.max_lines} per action, {self.rate:g} per second)"
        )


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
