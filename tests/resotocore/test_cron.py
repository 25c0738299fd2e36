from __future__ import annotations

from datetime import UTC, datetime

import pytest

from resotocore.scheduler.cron import Schedule, ScheduleError, count_missed, next_fire


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    result = []
    for _ in range(count):
        after = next_fire(schedule, after)
        result.append(after)
    return result


def test_hourly_in_utc() -> None:
    schedule = Schedule("0 * * * *")
    assert next_fire(schedule, utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 11, 0)
    assert next_fire(schedule, utc(2026, 1, 1, 10, 59, 59)) == utc(2026, 1, 1, 11, 0)


def test_daily_in_a_timezone() -> None:
    schedule = Schedule("30 6 * * *", "Europe/Berlin")
    # winter: CET = UTC+1
    assert next_fire(schedule, utc(2026, 1, 10, 12, 0)) == utc(2026, 1, 11, 5, 30)
    # summer: CEST = UTC+2
    assert next_fire(schedule, utc(2026, 7, 10, 12, 0)) == utc(2026, 7, 11, 4, 30)


def test_spring_forward_nonexistent_time_fires_once_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    assert fires(schedule, utc(2026, 3, 28, 12, 0), 2) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_spring_forward_hourly_has_no_duplicate() -> None:
    schedule = Schedule("0 * * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 3, 28, 23, 30), 4)
    # local 01:00 CET (00:00Z), 03:00 CEST (01:00Z), 04:00 (02:00Z), 05:00 (03:00Z)
    assert got == [utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0), utc(2026, 3, 29, 3, 0)]


def test_fall_back_daily_fires_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    schedule = Schedule("30 2 * * *", "Europe/Berlin")
    assert fires(schedule, utc(2026, 10, 24, 12, 0), 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # asked from between the two occurrences: the next day, not the repeated wall time
    assert next_fire(schedule, utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 26, 1, 30)


def test_fall_back_hourly_fires_every_real_hour() -> None:
    schedule = Schedule("0 * * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 10, 24, 23, 30), 4)
    # local 02:00 CEST (00:00Z), 02:00 CET (01:00Z), 03:00 CET (02:00Z), 04:00 CET (03:00Z)
    assert got == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 3, 0)]


def test_count_missed() -> None:
    schedule = Schedule("0 * * * *")
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 59)) == (0, None)
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 13, 30)) == (3, utc(2026, 1, 1, 13, 0))
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 11, 0)) == (1, utc(2026, 1, 1, 11, 0))


@pytest.mark.parametrize(
    ("cron", "timezone", "reason"),
    [
        ("nonsense", "UTC", "invalid cron expression"),
        ("0 * * *", "UTC", "invalid cron expression"),
        ("0 * * * * *", "UTC", "invalid cron expression"),
        ("61 * * * *", "UTC", "invalid cron expression"),
        ("0 * * * *", "Mars/Olympus", "unknown timezone"),
        ("0 * * * *", "", "unknown timezone"),
    ],
)
def test_bad_schedules_are_refused(cron: str, timezone: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        Schedule(cron, timezone)
