"""Off-peak windows: local hours of the day on some weekdays, in an IANA time zone.

An hours range ``"HH:MM-HH:MM"`` starts inclusive and ends exclusive; one whose end is at or
before its start runs past midnight (``"16:30-00:30"``), and equal ends mean the whole day.
The weekday is the instant's own local weekday: a window running past midnight on Friday stops
at midnight unless Saturday is listed too. Local time follows the zone's daylight-saving rules.
"""

from __future__ import annotations

import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from creditmeter.errors import InputError
from creditmeter.timeutil import to_datetime

MINUTES_PER_DAY = 24 * 60
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``; unknown names raise ``KeyError``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory, a name too long
        raise KeyError(name) from None


def parse_timezone(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, "must be an IANA time zone name such as 'Asia/Shanghai' or 'UTC'")
    try:
        zone(value.strip())
    except KeyError:
        raise InputError(field, f"unknown time zone {value!r}") from None
    return value.strip()


def parse_hours(value: object, field: str) -> tuple[tuple[int, int], ...]:
    """``"HH:MM-HH:MM"`` or a list of them, as (start, end) minutes after midnight."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InputError(field, "must be a range 'HH:MM-HH:MM' or a list of them")
    out = []
    for index, item in enumerate(items):
        where = field if isinstance(value, str) else f"{field}[{index}]"
        match = _RANGE.match(item) if isinstance(item, str) else None
        if match is None:
            raise InputError(where, f"must be a range 'HH:MM-HH:MM', got {item!r}")
        start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
        if max(start_h, end_h) > 23 or max(start_m, end_m) > 59:
            raise InputError(where, f"{item!r} is not a time of day (00:00 to 23:59)")
        out.append((start_h * 60 + start_m, end_h * 60 + end_m))
    return tuple(out)


def parse_weekdays(value: object, field: str) -> tuple[int, ...]:
    """Weekday names (``mon`` … ``sun``, or in full) or ISO numbers (1 = Monday … 7 = Sunday)."""
    if not isinstance(value, list) or not value:
        raise InputError(field, "must be a list of weekdays (mon … sun, or 1 … 7)")
    days = set()
    for index, item in enumerate(value):
        day = _weekday(item)
        if day is None:
            raise InputError(f"{field}[{index}]", f"{item!r} is not a weekday (mon … sun, or 1 … 7)")
        days.add(day)
    return tuple(sorted(days))


def _weekday(item: object) -> int | None:
    if type(item) is int:
        return item if 1 <= item <= 7 else None
    if isinstance(item, str):
        name = item.strip().lower()
        for names in (WEEKDAY_NAMES, _LONG_NAMES):
            if name in names:
                return names.index(name) + 1
    return None


def format_hours(hours: tuple[tuple[int, int], ...]) -> list[str]:
    return [f"{_clock(start)}-{_clock(end)}" for start, end in hours]


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_weekdays(weekdays: tuple[int, ...]) -> list[str]:
    return [WEEKDAY_NAMES[day - 1] for day in weekdays]


def in_hours(minute: int, hours: tuple[tuple[int, int], ...]) -> bool:
    """Whether a minute of the day falls inside one of the ranges."""
    for start, end in hours:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


def is_open(timezone: str, hours: tuple[tuple[int, int], ...], weekdays: tuple[int, ...],
            at_us: int) -> bool:
    """Whether the instant ``at_us`` is inside the window (its local hour and weekday)."""
    local = to_datetime(at_us).astimezone(zone(timezone))
    return local.isoweekday() in weekdays and in_hours(local.hour * 60 + local.minute, hours)
