"""How the console shows amounts, counts and instants to people.

Amounts stay integers of micro-credits until here. A page shows them rounded (2 decimal places,
thousands separators; an amount under 0.01 exactly), and always carries the exact credits string
(the one the API and the CSV give) in the element's ``value`` and ``title``, so nothing is lost.
Instants are shown in UTC.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from creditmeter.money import format_credits, format_credits_rounded, parse_credits
from creditmeter.timeutil import DAY_US, US_PER_S, format_instant, parse_instant, to_datetime

HOUR_US = 3_600 * US_PER_S


rounded_credits = format_credits_rounded


def credits(uc: int) -> Markup:
    """An amount as ``<data>``: rounded text, the exact credits string in ``value`` and ``title``."""
    exact = format_credits(uc)
    return Markup('<data class="cr" value="{0}" title="{0} credits">{1}</data>').format(
        exact, rounded_credits(uc))


def credits_text(text: str) -> Markup:
    """An amount given as a credits string (as the API gives it), shown as :func:`credits` shows it."""
    return credits(parse_credits(text, "credits", allow_negative=True))


def count(n: int) -> str:
    """A whole number with thousands separators."""
    return f"{n:,}"


def _iso(us: int) -> str:
    text = format_instant(us)
    assert text is not None
    return text


def when(us: int | None, *, seconds: bool = False, empty: str = "—") -> Markup:
    """An instant as ``<time>`` in UTC: ``2026-11-10 12:00`` (with seconds for events)."""
    if us is None:
        return Markup(escape(empty))
    moment = to_datetime(us)
    shown = moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    iso = _iso(us)
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(iso, shown)


def day(us: int | None, *, empty: str = "—") -> Markup:
    """An instant's UTC date as ``<time>``."""
    if us is None:
        return Markup(escape(empty))
    iso = _iso(us)
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(iso, iso[:10])


def iso_day(text: str | None, *, empty: str = "—") -> Markup:
    """An ISO 8601 instant string (as the API gives it) shown as its UTC date."""
    if not text:
        return Markup(escape(empty))
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(text, text[:10])


def iso_when(text: str | None, *, empty: str = "—") -> Markup:
    """An ISO 8601 instant string (as the API gives it) shown in UTC to the minute, or to the
    second when it is not on a whole minute: ``2026-11-10 16:00``."""
    if not text:
        return Markup(escape(empty))
    return _moment(parse_instant(text, "instant"), whole_days=False)


def time_left(expires_at_us: int, now_us: int) -> str:
    """``"in 3 days"``, ``"in 5 hours"``, ``"within the hour"``."""
    left_us = expires_at_us - now_us
    if left_us >= 2 * DAY_US - HOUR_US:  # to the nearest day or hour
        return f"in {(left_us + DAY_US // 2) // DAY_US} days"
    if left_us >= 2 * HOUR_US:
        return f"in {(left_us + HOUR_US // 2) // HOUR_US} hours"
    return "within the hour" if left_us < HOUR_US else "in about an hour"


def _moment(us: int, whole_days: bool) -> Markup:
    """A range's end: its date, or its date and time to the second (the exact instant is in
    ``datetime`` and ``title``)."""
    moment = to_datetime(us)
    if whole_days:
        return Markup('<time datetime="{0}">{0}</time>').format(moment.strftime("%Y-%m-%d"))
    shown = moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%d %H:%M")
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(_iso(us), shown)


def span(from_us: int | None, to_us: int | None) -> Markup:
    """A range of instants (``to_us`` excluded), in UTC. Whole days as ISO dates, the last one
    included: ``2026-11-01 – 2026-11-30 (UTC)``; else to the minute (or the second):
    ``2026-11-10 14:23 – 2026-12-10 14:23 (UTC)``. An open end is ``…``; no end at all is
    ``all time``."""
    if from_us is None and to_us is None:
        return Markup("all time")
    whole_days = all(us % DAY_US == 0 for us in (from_us, to_us) if us is not None)
    first = _moment(from_us, whole_days) if from_us is not None else Markup("…")
    last = (Markup("…") if to_us is None
            else _moment(to_us - DAY_US if whole_days else to_us, whole_days))
    return Markup("{0} – {1} (UTC)").format(first, last)
