"""Recurring periods and windows of time: "every 5h", "1d" in a time zone, "rolling 5h". Pure.

A length is ``N unit`` (``5h``, ``1d``, ``7d``, ``2w``, ``1mo``, ``1y``; ``5 hours`` and
``1 month`` read the same). Periods of a length follow one of two anchors:

- **an instant** (a subscription's start): period ``k`` starts ``k`` lengths after it; months are
  calendar months with the anchor's day clamped to each month's length and its time of day kept
  (Jan 31 → Feb 28 → Mar 31), each computed from the anchor, never from the period before.
- **a calendar** (an IANA time zone): boundaries fall on local midnights. Hours are slots of the
  local day (``6h``: 00:00, 06:00, 12:00, 18:00; a slot never runs past midnight); days are blocks
  of local dates (``7d`` and ``1w`` start on Mondays); months start on the 1st (``3mo`` on Jan,
  Apr, Jul, Oct 1st); years on Jan 1st. Local time follows the zone's daylight-saving rules.

Every period is ``[start, end)`` in µs since the epoch; ``end`` is exclusive.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from creditmeter.errors import InputError
from creditmeter.pricing.windows import parse_timezone, zone
from creditmeter.timeutil import DAY_US, MAX_US, MIN_US, US_PER_S

HOUR_US = 3_600 * US_PER_S
MAX_COUNT = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_UNITS = {"h": "h", "hour": "h", "hours": "h", "d": "d", "day": "d", "days": "d",
          "w": "w", "week": "w", "weeks": "w", "mo": "mo", "month": "mo", "months": "mo",
          "y": "y", "year": "y", "years": "y"}
_LENGTH = re.compile(r"^\s*(\d{1,4})\s*([a-z]+)\s*$")
_FIXED_US = {"h": HOUR_US, "d": DAY_US, "w": 7 * DAY_US}


@dataclass(frozen=True, slots=True)
class Every:
    """A length of time: ``count`` of ``unit`` (``h``, ``d``, ``w``, ``mo`` or ``y``)."""

    count: int
    unit: str

    @property
    def text(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def fixed_us(self) -> int | None:
        """The length in µs when it is fixed (hours, days, weeks); None for months and years."""
        step = _FIXED_US.get(self.unit)
        return None if step is None else step * self.count

    @property
    def months(self) -> int:
        return self.count * (12 if self.unit == "y" else 1)

    def words(self) -> str:
        names = {"h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
        name = names[self.unit]
        return name if self.count == 1 else f"{self.count} {name}s"


def parse_every(value: object, field: str) -> Every:
    """``5h``, ``1d``, ``7 days``, ``1mo``: a whole count (1-1000) and a unit."""
    match = _LENGTH.match(value) if isinstance(value, str) else None
    unit = _UNITS.get(match.group(2)) if match else None
    if match is None or unit is None:
        raise InputError(field, "must be a count and a unit such as 5h, 1d, 7d, 1w, 1mo or 1y, "
                         f"got {value!r}")
    count = int(match.group(1))
    if not 1 <= count <= MAX_COUNT:
        raise InputError(field, f"the count must be from 1 to {MAX_COUNT}, got {count}")
    return Every(count, unit)


def _check_instant(us: int, field: str) -> None:
    if not MIN_US <= us <= MAX_US:
        raise InputError(field, f"{us} µs is outside 1970-01-01..9999-12-31")


def add_months(instant_us: int, n: int) -> int:
    """``n`` calendar months after ``instant_us``: the same time of day, the day clamped to the month."""
    _check_instant(instant_us, "instant")
    moment = _EPOCH + timedelta(microseconds=instant_us)
    month0 = moment.year * 12 + moment.month - 1 + n
    year, month = divmod(month0, 12)
    month += 1
    if not 1970 <= year <= 9999:
        raise InputError("months", f"{n} months from {moment:%Y-%m-%d} is outside 1970..9999")
    day = min(moment.day, calendar.monthrange(year, month)[1])
    result = (moment.replace(year=year, month=month, day=day) - _EPOCH) // _ONE_US
    _check_instant(result, "months")
    return result


def anchored_period(every: Every, anchor_us: int, at_us: int) -> tuple[int, int]:
    """The period of ``every`` from ``anchor_us`` that contains ``at_us`` (at or after the anchor)."""
    assert at_us >= anchor_us, (anchor_us, at_us)
    step = every.fixed_us
    if step is not None:
        k = (at_us - anchor_us) // step
        return anchor_us + k * step, anchor_us + (k + 1) * step
    months = every.months
    start = _EPOCH + timedelta(microseconds=anchor_us)
    at = _EPOCH + timedelta(microseconds=at_us)
    k = ((at.year - start.year) * 12 + at.month - start.month) // months
    # Period k starts in at's month or earlier, and period k+1 after it: at most one step back.
    while k > 0 and add_months(anchor_us, k * months) > at_us:
        k -= 1
    return add_months(anchor_us, k * months), _month_end(anchor_us, (k + 1) * months)


def _month_end(anchor_us: int, months: int) -> int:
    try:
        return add_months(anchor_us, months)
    except InputError:
        return MAX_US + 1


def calendar_period(every: Every, timezone: str, at_us: int) -> tuple[int, int]:
    """The period of ``every`` on the local calendar of ``timezone`` that contains ``at_us``."""
    local = (_EPOCH + timedelta(microseconds=at_us)).astimezone(zone(timezone))
    slot = local.hour // every.count * every.count if every.unit == "h" else 0
    return _local_period(every, timezone, local.toordinal(), slot)


@functools.lru_cache(maxsize=16_384)
def _local_period(every: Every, timezone: str, ordinal: int, slot: int) -> tuple[int, int]:
    """The period of ``every`` in ``timezone`` holding the local date ``ordinal`` (for hours, its
    slot starting at hour ``slot``): it depends on nothing else, so it is worked out once (a
    batch of events asks for the same few days again and again)."""
    tz = zone(timezone)
    day = date.fromordinal(ordinal)
    if every.unit == "h":
        start = _instant(day, tz, slot)
        end_hour = slot + every.count
        end = _instant(day, tz, end_hour) if end_hour < 24 else _instant(day + timedelta(days=1), tz, 0)
        return start, end
    if every.unit in ("d", "w"):
        days = every.count * (7 if every.unit == "w" else 1)
        first = (day.toordinal() - 1) // days * days + 1  # 0001-01-01 (ordinal 1) was a Monday
        return (_instant(date.fromordinal(first), tz, 0),
                _instant_or_end(first + days, tz))
    months = every.months
    month0 = (day.year * 12 + day.month - 1) // months * months
    return _month_start(month0, tz), _month_start(month0 + months, tz)


def _instant(day: date, tz: object, hour: int) -> int:
    moment = datetime(day.year, day.month, day.day, hour, tzinfo=tz)  # type: ignore[arg-type]
    return max(MIN_US, (moment - _EPOCH) // _ONE_US)


def _instant_or_end(ordinal: int, tz: object) -> int:
    if ordinal > date.max.toordinal():
        return MAX_US + 1
    return _instant(date.fromordinal(ordinal), tz, 0)


def _month_start(month0: int, tz: object) -> int:
    year, month = divmod(month0, 12)
    if year > 9999:
        return MAX_US + 1
    return _instant(date(year, month + 1, 1), tz, 0)


def period_at(every: Every, anchor_us: int, timezone: str | None, at_us: int) -> tuple[int, int]:
    """The period containing ``at_us``: on ``timezone``'s calendar when one is named, else counted
    from ``anchor_us``."""
    if timezone is not None:
        return calendar_period(every, timezone, at_us)
    return anchored_period(every, anchor_us, at_us)


@dataclass(frozen=True, slots=True)
class Window:
    """The window a limit counts consumption over.

    Attributes:
      every: its length; None for ``total`` (everything, ever).
      rolling: the last ``every`` up to the instant asked (``rolling 5h``); else the calendar
        period of ``every`` containing it (``1d``: the local day), in ``timezone``.
    """

    every: Every | None
    rolling: bool = False
    timezone: str = "UTC"

    @property
    def text(self) -> str:
        if self.every is None:
            return "total"
        return f"rolling {self.every.text}" if self.rolling else self.every.text

    def bounds(self, at_us: int) -> tuple[int, int | None]:
        """``(start, end)`` of the window at ``at_us``: what counts has ``start <= t``; a calendar
        window resets at ``end``; a rolling one (``end`` None) frees each usage one length after it."""
        if self.every is None:
            return MIN_US, None
        if self.rolling:
            step = self.every.fixed_us
            assert step is not None
            return max(MIN_US, at_us - step + 1), None
        return calendar_period(self.every, self.timezone, at_us)

    def words(self) -> str:
        if self.every is None:
            return "in total"
        if self.rolling:
            return f"in any {self.every.words()}"
        return f"per {self.every.words()}" + ("" if self.timezone == "UTC" else f" ({self.timezone})")


def check_calendar_hours(every: Every, field: str) -> Every:
    """On a calendar, hours are slots of the local day: their count divides 24."""
    if every.unit == "h" and 24 % every.count:
        raise InputError(field, f"on a calendar, hours are slots of the day: {every.count}h does not "
                         "divide 24 (use 1h, 2h, 3h, 4h, 6h, 8h, 12h or 24h, or days)")
    return every


def parse_window(value: object, field: str, timezone: object = None,
                 timezone_field: str | None = None) -> Window:
    """``total``, ``rolling 5h`` (hours, days or weeks), or a calendar length such as ``1d``,
    ``7d`` or ``1mo`` (in ``timezone``, default UTC; only a calendar window has one)."""
    tz_field = timezone_field or f"{field}.calendar"
    tz = "UTC" if timezone is None else parse_timezone(timezone, tz_field)
    if isinstance(value, str) and value.strip() == "total":
        if timezone is not None:
            raise InputError(tz_field, "a total has no calendar")
        return Window(None, False, tz)
    if not isinstance(value, str):
        raise InputError(field, f"must be 'total', 'rolling 5h' or a length such as 1d, got {value!r}")
    text = value.strip()
    rolling = text.startswith("rolling ")
    every = parse_every(text[len("rolling "):] if rolling else text, field)
    if rolling and every.fixed_us is None:
        raise InputError(field, "a rolling window is counted in hours, days or weeks (a month is "
                         "not a fixed length); use 1mo for the calendar month")
    if rolling and timezone is not None:
        raise InputError(tz_field, "a rolling window has no calendar: it counts back from each instant")
    return Window(every, rolling, tz) if rolling else Window(check_calendar_hours(every, field), False, tz)
