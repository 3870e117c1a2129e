"""Instants as integer microseconds since the Unix epoch (UTC), and their text form.

The domain never reads a clock: every operation takes ``at_us``. Only the edges (CLI, API) turn
"now" or an ISO 8601 string into microseconds.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from creditmeter.errors import InputError

US_PER_S = 1_000_000
DAY_S = 86_400
DAY_US = DAY_S * US_PER_S
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Far enough for any grant; keeps every instant inside a signed 64-bit integer.
MIN_US = 0
MAX_US = 253402300799 * US_PER_S  # 9999-12-31T23:59:59Z


def parse_instant(value: object, field: str) -> int:
    """Parse ISO 8601 (``Z`` or an offset; a bare date is 00:00 UTC; no offset means UTC)."""
    if not isinstance(value, str):
        raise InputError(field, f"must be an ISO 8601 time string, got {type(value).__name__}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(field, f"{value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    us = (parsed - _EPOCH) // _ONE_US
    if not MIN_US <= us <= MAX_US:
        raise InputError(field, f"{value!r} is out of range")
    return us


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@functools.lru_cache(maxsize=65_536)  # packages' start and expiry instants repeat in every view
def format_instant(us: int | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``; whole seconds print without a fraction."""
    return None if us is None else format_instant_once(us)


def format_instant_once(us: int) -> str:
    """:func:`format_instant` without its cache, for instants that do not repeat (each event's
    time in an export: caching them would fill the cache, and memory, with the history)."""
    # isoformat() prints the fraction only when there is one, as 6 digits; it ends "+00:00".
    return f"{(_EPOCH + timedelta(microseconds=us)).isoformat()[:-6]}Z"


def month_bounds(at_us: int) -> tuple[int, int]:
    """The UTC calendar month containing ``at_us``: [first instant, first instant of the next)."""
    moment = to_datetime(at_us)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    first = (start - _EPOCH) // _ONE_US
    if start.month < 12:
        return first, (start.replace(month=start.month + 1) - _EPOCH) // _ONE_US
    if start.year == 9999:
        return first, MAX_US + 1
    return first, (start.replace(year=start.year + 1, month=1) - _EPOCH) // _ONE_US
