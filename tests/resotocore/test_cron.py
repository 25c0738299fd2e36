from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    "hours", ["*/1", "0-23", "0-23/1", ",".join(str(hour) for hour in range(24)), "12-11", "0-11,12-23"]
)
def test_fall_back_any_every_hour_field_fires_every_real_hour(hours: str) -> None:
    # the hour field is judged by the hours it names, not by how it is spelled
    schedule = Schedule(f"0 {hours} * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 10, 24, 23, 30), 4)
    # as "0 * * * *": local 02:00 CEST (00:00Z), 02:00 CET (01:00Z), 03:00 CET (02:00Z), 04:00 CET (03:00Z)
    assert got == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 3, 0)]


def test_fall_back_all_hours_but_one_fires_once_in_the_repeated_hour() -> None:
    schedule = Schedule("0 0-22 * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 10, 24, 23, 30), 3)
    # local 02:00 CEST (00:00Z) only, then 03:00 CET (02:00Z), 04:00 CET (03:00Z)
    assert got == [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 3, 0)]


def every(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """start, start + step, ... up to and including end."""
    return [start + step * index for index in range((end - start) // step + 1)]


def test_fall_back_every_minute_fires_in_both_occurrences_in_order() -> None:
    # Berlin, 2026-10-25: 02:00-02:59 happens as CEST (00:00Z-00:59Z), then again as CET (01:00Z-01:59Z).
    schedule = Schedule("* * * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 10, 24, 23, 30), 180)
    assert got == every(utc(2026, 10, 24, 23, 31), utc(2026, 10, 25, 2, 30), timedelta(minutes=1))
    berlin = schedule.zone
    walls = [(at.astimezone(berlin).strftime("%H:%M"), at.astimezone(berlin).utcoffset()) for at in got]
    assert ("02:30", timedelta(hours=2)) in walls and ("02:30", timedelta(hours=1)) in walls
    # asked from inside the first occurrence: the next minute, not the repeated wall time
    assert next_fire(schedule, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 0, 31)


def test_fall_back_every_quarter_hour_fires_in_both_occurrences_in_order() -> None:
    schedule = Schedule("*/15 * * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 10, 24, 23, 50), 10)
    # local 02:00, 02:15, 02:30, 02:45 CEST, then 02:00 ... 02:45 CET, then 03:00, 03:15 CET
    assert got == every(utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 15), timedelta(minutes=15))
    assert next_fire(schedule, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 0, 45)
    assert next_fire(schedule, utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 25, 1, 0)


def test_spring_forward_every_minute_fires_once_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00-02:59 does not exist; all of it and 03:00 CEST are one fire at 01:00Z.
    schedule = Schedule("* * * * *", "Europe/Berlin")
    got = fires(schedule, utc(2026, 3, 29, 0, 57), 5)
    assert got == [
        utc(2026, 3, 29, 0, 58),
        utc(2026, 3, 29, 0, 59),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 1),
        utc(2026, 3, 29, 1, 2),
    ]
    assert count_missed(schedule, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30)) == (60, utc(2026, 3, 29, 1, 30))


def test_count_missed() -> None:
    schedule = Schedule("0 * * * *")
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 59)) == (0, None)
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 13, 30)) == (3, utc(2026, 1, 1, 13, 0))
    assert count_missed(schedule, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 11, 0)) == (1, utc(2026, 1, 1, 11, 0))


def test_count_missed_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("resotocore.scheduler.cron.MAX_COUNTED_SLOTS", 10)
    schedule = Schedule("* * * * *", "Europe/Berlin")
    assert count_missed(schedule, utc(2026, 10, 25, 0, 55), utc(2026, 10, 25, 3, 0)) == (10, utc(2026, 10, 25, 1, 5))


# DST changes: Berlin and New York by an hour, Lord Howe by half an hour.
TRANSITIONS = [
    ("Europe/Berlin", utc(2026, 3, 29, 1, 0)),  # spring forward
    ("Europe/Berlin", utc(2026, 10, 25, 1, 0)),  # fall back
    ("America/New_York", utc(2026, 3, 8, 7, 0)),  # spring forward
    ("America/New_York", utc(2026, 11, 1, 6, 0)),  # fall back
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15, 0)),  # fall back
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),  # spring forward
    ("UTC", utc(2026, 10, 25, 1, 0)),
]


@pytest.mark.parametrize(("timezone", "near"), TRANSITIONS)
@settings(max_examples=25, deadline=None)
@given(
    cron_expression=st.sampled_from(["* * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *", "*/7 1-3 * * *"]),
    offset=st.integers(min_value=-120, max_value=120),
    seconds=st.integers(min_value=0, max_value=59),
    span=st.integers(min_value=0, max_value=120),
)
@example(cron_expression="* * * * *", offset=-90, seconds=0, span=120)
def test_count_missed_agrees_with_stepping(
    timezone: str, near: datetime, cron_expression: str, offset: int, seconds: int, span: int
) -> None:
    schedule = Schedule(cron_expression, timezone)
    last = near + timedelta(minutes=offset, seconds=seconds)
    now = last + timedelta(minutes=span)
    stepped, at = [], next_fire(schedule, last)
    while at <= now:
        stepped.append(at)
        following = next_fire(schedule, at)
        assert following > at
        at = following
    assert count_missed(schedule, last, now) == (len(stepped), stepped[-1] if stepped else None)
    if cron_expression == "* * * * *":
        # every real minute is a fire: repeated wall minutes count twice, a gap once at its end
        assert stepped == every(last.replace(second=0) + timedelta(minutes=1), now, timedelta(minutes=1))


@pytest.mark.parametrize(
    ("cron", "timezone", "reason"),
    [
        ("nonsense", "UTC", "invalid cron expression 'nonsense': expected 5 fields"),
        ("0 * * *", "UTC", "expected 5 fields (minute hour day-of-month month day-of-week) like '0 * * * *', found 4"),
        ("0 * * * * *", "UTC", "invalid cron expression '0 * * * * *': expected 5 fields"),
        ("* * * * * 0", "UTC", "like '0 * * * *', found 6"),
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *': minute '61' is out of range (0-59)"),
        ("0 24 * * *", "UTC", "hour '24' is out of range (0-23)"),
        ("0 0 0 * *", "UTC", "day of month '0' is out of range (1-31)"),
        ("0 0 * 1,13 *", "UTC", "month '1,13' is out of range (1-12 or jan-dec)"),
        ("0 0 * * 8", "UTC", "day of week '8' is out of range (0-7 or sun-sat)"),
        ("*/0 * * * *", "UTC", "minute '*/0' is not valid (use 0-59, *, a range a-b, a list a,b or a step */n)"),
        ("0 x * * *", "UTC", "hour 'x' is not valid"),
        ("0 0 31 2 *", "UTC", "invalid cron expression '0 0 31 2 *': it never fires"),
        ("0 * * * *", "Mars/Olympus", "unknown timezone"),
        ("0 * * * *", "", "unknown timezone"),
    ],
)  # fmt: skip
def test_bad_schedules_are_refused_with_the_reason(cron: str, timezone: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(reason)):
        Schedule(cron, timezone)
