"""When a resource expires, from its tags: a pure function, lenient by design.

``resoto:expires`` is an ISO-8601 time (naive means UTC). Otherwise the first non-empty of
``resoto:expiration`` and ``expiration`` is a duration (``2h``, ``1d``, ``7 days``, ``1h30min``,
``1w``; units y, mo, w, d, h, min/m, s) added to the resource's ctime. Anything else: no expiry.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {
    "y": timedelta(days=365), "year": timedelta(days=365), "years": timedelta(days=365),
    "mo": timedelta(days=30), "month": timedelta(days=30), "months": timedelta(days=30),
    "w": timedelta(weeks=1), "week": timedelta(weeks=1), "weeks": timedelta(weeks=1),
    "d": timedelta(days=1), "day": timedelta(days=1), "days": timedelta(days=1),
    "h": timedelta(hours=1), "hour": timedelta(hours=1), "hours": timedelta(hours=1),
    "m": timedelta(minutes=1), "min": timedelta(minutes=1), "mins": timedelta(minutes=1),
    "minute": timedelta(minutes=1), "minutes": timedelta(minutes=1),
    "s": timedelta(seconds=1), "sec": timedelta(seconds=1), "secs": timedelta(seconds=1),
    "second": timedelta(seconds=1), "seconds": timedelta(seconds=1),
}  # fmt: skip
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*,?", re.IGNORECASE)
MAX_DURATION = timedelta(days=365 * 1000)


def parse_duration(text: str) -> timedelta | None:
    """``1h30min`` → 1:30:00; None when any part is not a number followed by a known unit."""
    text = text.strip()
    if not text:
        return None
    total, pos = timedelta(), 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None or match.end() == pos:
            return None
        unit = _UNITS.get(match.group(2).lower())
        if unit is None:
            return None
        try:
            total += unit * float(match.group(1))
        except OverflowError:
            return None
        if total > MAX_DURATION:
            return None
        pos = match.end()
    return total


def parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # outside the years 1 to 9999 once in UTC
        return None


def expires(expires_tag: object, expiration: object, ctime: object) -> datetime | None:
    """The expiry time from the tag values (`expiration`: the first non-empty duration tag)."""
    if isinstance(expires_tag, str) and expires_tag.strip():
        return parse_time(expires_tag)
    if not isinstance(expiration, str) or not isinstance(ctime, str):
        return None
    duration = parse_duration(expiration)
    created = parse_time(ctime)
    if duration is None or created is None:
        return None
    try:
        return created + duration
    except OverflowError:
        return None


def format_time(at: datetime) -> str:
    """The one text form of times stored and compared in the graph (UTC, second precision)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def expires_text(expires_tag: object, resoto_expiration: object, expiration: object, ctime: object) -> str | None:
    """`expires` for the stored form, choosing the first non-empty of the two duration tags."""
    chosen = next((v for v in (resoto_expiration, expiration) if isinstance(v, str) and v.strip()), None)
    at = expires(expires_tag, chosen, ctime)
    return format_time(at) if at is not None else None
