"""Cron arithmetic as pure functions of ``after``, DST-safe in any IANA timezone.

Cron expressions name wall-clock times. Around DST changes:
- a wall time that does not exist (spring forward) fires at the first instant after the gap, once;
- a wall time that occurs twice (fall back) fires at its first occurrence only, except for
  expressions that run every hour, which also fire in the repeated hour (every real hour counts).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

MAX_COUNTED_SLOTS = 100_000


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        validate(self.cron, self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_fire(self, after: datetime) -> datetime:
        return next_fire(self, after)


def validate(cron: str, timezone: str) -> None:
    validate_cron(cron)
    validate_timezone(timezone)


FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day of week", "0-7 or sun-sat"),
)


def validate_cron(cron: str) -> str:
    if (count := len(cron.split())) != len(FIELDS):
        raise ScheduleError(
            f"invalid cron expression {cron!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            f"like '0 * * * *', found {count}"
        )
    try:  # a well-formed expression whose date never comes (such as the 31st of February) is no schedule either
        croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(f"invalid cron expression {cron!r}: it never fires") from None
    except CroniterError as e:
        raise ScheduleError(f"invalid cron expression {cron!r}: {_bad_field(cron) or e}") from None
    return cron


def _bad_field(cron: str) -> str | None:
    """Which field of a refused 5-field `cron` is wrong, and how: croniter names the whole expression only.
    Each field is tried with every other field ``*``; None when each alone is accepted."""
    fields = cron.split()
    for index, (name, allowed) in enumerate(FIELDS):
        try:
            croniter(" ".join(field if i == index else "*" for i, field in enumerate(fields)))
        except CroniterError as e:
            if "out of range" in str(e):
                return f"{name} {fields[index]!r} is out of range ({allowed})"
            return f"{name} {fields[index]!r} is not valid (use {allowed}, *, a range a-b, a list a,b or a step */n)"
    return None


def validate_timezone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown timezone {timezone!r}: expected an IANA name like 'Europe/Berlin'") from None
    return timezone


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first fire time strictly after `after` (aware), as an aware UTC datetime."""
    return next(instant for instant in _fire_times(schedule, after) if instant > after)


def count_missed(schedule: Schedule, last: datetime, now: datetime) -> tuple[int, datetime | None]:
    """How many fire times lie in (last, now], and the latest of them (None when there is none).

    Counting stops at MAX_COUNTED_SLOTS; `latest` is then the last slot counted.
    """
    count, latest = 0, None
    for instant in _fire_times(schedule, last):
        if count >= MAX_COUNTED_SLOTS or instant > now:
            break
        if instant > last:
            count, latest = count + 1, instant
    return count, latest


def _fire_times(schedule: Schedule, start: datetime) -> Iterator[datetime]:
    """Fire times as aware UTC datetimes in strictly increasing order, from about an hour before `start` on.

    Every fire time after `start` is produced; a few before it may be too, so callers skip those.
    Wall times are walked in order once. A wall time's first instant is never earlier than the first
    instant of the wall time before it, so everything pending up to that instant is final; only the
    second occurrence of a repeated (fall back) wall time comes later and waits in a heap until then.
    Equal instants (several nonexistent wall times resolving to the end of the same gap) are produced once.
    """
    zone = schedule.zone
    hourly = _fires_every_hour(schedule.cron)
    local_start = start.astimezone(zone).replace(tzinfo=None)
    # Start one hour early so a repeated (fall back) hour around `start` is not skipped.
    walls = croniter(schedule.cron, local_start - timedelta(hours=1))
    pending: list[datetime] = []
    latest: datetime | None = None
    while True:
        wall: datetime = walls.get_next(datetime)
        instants = _instants(wall, zone, hourly)
        for instant in instants:
            heapq.heappush(pending, instant)
        while pending and pending[0] <= instants[0]:
            instant = heapq.heappop(pending)
            if latest is None or instant > latest:
                latest = instant
                yield instant


def _instants(wall: datetime, zone: ZoneInfo, hourly: bool) -> list[datetime]:
    """The instants (UTC, ascending) a fire at `wall` stands for, by the module's DST rules."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return [_after_gap(wall, zone)]
    second = wall.replace(tzinfo=zone, fold=1)
    utc_first, utc_second = first.astimezone(UTC), second.astimezone(UTC)
    if utc_first != utc_second and hourly:
        return [utc_first, utc_second]
    return [utc_first]


def _after_gap(wall: datetime, zone: ZoneInfo) -> datetime:
    """First existing wall time after a nonexistent one; DST gaps are whole minutes and at most a few hours."""
    probe = wall
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        aware = probe.replace(tzinfo=zone)
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == probe:
            return aware.astimezone(UTC)
    raise ScheduleError(f"cannot resolve wall time {wall} in {zone}")  # pragma: no cover


def _fires_every_hour(cron: str) -> bool:
    """Whether the hour field names all 24 hours, however spelled ("*", "*/1", "0-23", a list of all)."""
    hours = croniter.expand(cron)[0][1]
    return hours == ["*"] or len(set(hours)) == 24  # croniter 7 expands all 24 hours to ["*"]
