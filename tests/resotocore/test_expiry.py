from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from resotocore.graph.expiry import expires, expires_text, parse_duration

CTIME = "2026-01-01T00:00:00+00:00"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("7 days", timedelta(days=7)),
        ("1h30min", timedelta(hours=1, minutes=30)),
        ("1w", timedelta(weeks=1)),
        ("1y", timedelta(days=365)),
        ("2mo", timedelta(days=60)),
        ("10m", timedelta(minutes=10)),
        ("45s", timedelta(seconds=45)),
        ("1h, 30m", timedelta(hours=1, minutes=30)),
        (" 3 HOURS ", timedelta(hours=3)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "2", "h2", "2 fortnights", "1h and more", "-1h", "99999999999y"])
def test_unparsable_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_expires_tag_wins_and_naive_means_utc() -> None:
    assert expires("2026-02-01T10:00:00", "1h", CTIME) == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert expires("2026-02-01T10:00:00+02:00", None, None) == datetime(2026, 2, 1, 8, tzinfo=UTC)
    assert expires("2026-02-01T10:00:00Z", None, None) == datetime(2026, 2, 1, 10, tzinfo=UTC)


def test_duration_is_added_to_ctime() -> None:
    assert expires(None, "2h", CTIME) == T0 + timedelta(hours=2)
    assert expires("", "2h", CTIME) == T0 + timedelta(hours=2)
    assert expires(None, "2h", None) is None
    assert expires(None, "2h", "not a time") is None
    assert expires("not a time", "2h", CTIME) is None


def test_first_non_empty_duration_tag() -> None:
    assert expires_text(None, "1h", "5h", CTIME) == "2026-01-01T01:00:00Z"
    assert expires_text(None, " ", "5h", CTIME) == "2026-01-01T05:00:00Z"
    assert expires_text(None, None, None, CTIME) is None
    assert expires_text(None, 7, "1d", CTIME) == "2026-01-02T00:00:00Z"  # a non-string tag is skipped


def test_stored_times_sort_as_text_across_all_years() -> None:
    early = expires_text("0005-01-01T00:00:00", None, None, None)
    late = expires_text("2026-01-01T00:00:00", None, None, None)
    assert early == "0005-01-01T00:00:00Z" and late is not None and early < late
    assert expires_text("9999-12-31T23:59:59-23:00", None, None, None) is None  # beyond year 9999 in UTC
