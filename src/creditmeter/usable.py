"""Which of a book's grants are usable at an instant, in burn-down order, remembered per stretch
of time. No I/O, no clock.

The grants usable at ``t`` change only at a grant's start or end (or a rollover's start): between
two such instants the same grants are usable, in the same order. A charge draws on them at its
event's time, so an import of events spread over a few days asks for a few stretches again and
again; each is worked out once (from every grant the book keeps, most of them long over) and then
found among the few remembered. What the grants have left is read at each draw, never remembered.

A rule of the burn-down order: a period's package is followed by its rollover while the rollover
has not started (made once the period was over, what a late event takes from it corrects the
rollover); once started, the rollover is in the order by itself.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from creditmeter.domain import Grant, GrantId
from creditmeter.timeutil import MAX_US, MIN_US

T = TypeVar("T")

REMEMBERED = 32  # stretches kept per book (a late event's, today's, and those between)

Stretch = tuple[int, int, tuple[Grant, ...]]


class Stretches(Generic[T]):
    """What holds in stretches of time, each ``[start, end)``, none overlapping another, found by
    the instant; at most ``REMEMBERED`` of them (past that, all are forgotten and found again)."""

    __slots__ = ("_ends", "_starts", "_values")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._values: list[T] = []

    def find(self, at_us: int) -> T | None:
        i = bisect_right(self._starts, at_us) - 1
        return self._values[i] if i >= 0 and at_us < self._ends[i] else None

    def add(self, start: int, end: int, value: T) -> None:
        """Remember ``value`` for ``[start, end)`` in place of those it overlaps (stretches kept
        around a voided grant's life can overlap one worked out since, longer)."""
        self.forget(start, end)
        if len(self._starts) >= REMEMBERED:
            self.clear()
        i = bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        self._values.insert(i, value)

    def forget(self, from_us: int, to_us: int) -> None:
        """Forget the stretches that overlap ``[from_us, to_us)``: those from the first that ends
        after ``from_us`` to the last that starts before ``to_us`` (none overlapping another,
        their ends are in order as their starts are)."""
        first = bisect_right(self._ends, from_us)
        last = bisect_left(self._starts, to_us)
        if first < last:
            del self._starts[first:last], self._ends[first:last], self._values[first:last]

    def clear(self) -> None:
        self._starts, self._ends, self._values = [], [], []


class Usable:
    """The grants usable in the stretches of time worked out so far. A grant added or voided
    forgets those it changes: the stretches that overlap its life (a rollover's: and its
    period's)."""

    __slots__ = ("_stretches",)

    def __init__(self) -> None:
        self._stretches: Stretches[tuple[Grant, ...]] = Stretches()

    def forget_grant(self, grant: Grant, period: Grant | None) -> None:
        """Forget the stretches a grant added or voided changes: those in its life and, for a
        rollover, in its ``period`` package's (which it follows in the order until it starts)."""
        start = grant.effective_at_us if period is None else min(grant.effective_at_us,
                                                                  period.effective_at_us)
        self._stretches.forget(start, MAX_US + 1 if grant.expires_at_us is None else grant.expires_at_us)

    def at(self, grants: Sequence[Grant], by_id: Mapping[GrantId, Grant],
           rolled: Mapping[GrantId, GrantId], at_us: int) -> tuple[Grant, ...]:
        """The grants usable at ``at_us``, in burn-down order (``grants`` is in that order)."""
        usable = self._stretches.find(at_us)
        if usable is None:
            start, end, usable = _stretch(grants, by_id, rolled, at_us)
            self._stretches.add(start, end, usable)
        return usable


def _stretch(grants: Sequence[Grant], by_id: Mapping[GrantId, Grant],
             rolled: Mapping[GrantId, GrantId], at_us: int) -> Stretch:
    """The stretch of time around ``at_us`` in which the same grants are usable, and those."""
    start, end = MIN_US, MAX_US + 1
    usable: list[Grant] = []
    for g in grants:
        if g.voided_at_us is not None:  # a voided grant is usable at no time
            continue
        effective, expires = g.effective_at_us, g.expires_at_us
        if effective > at_us:
            end = min(end, effective)
            continue
        start = max(start, effective)
        if expires is not None:
            if expires <= at_us:
                start = max(start, expires)
                continue
            end = min(end, expires)
        usable.append(g)
        later = by_id.get(rolled[g.id]) if g.id in rolled else None
        if later is not None and later.voided_at_us is None:
            if at_us < later.effective_at_us:
                usable.append(later)
                end = min(end, later.effective_at_us)
            else:
                start = max(start, later.effective_at_us)
    return start, end, tuple(usable)


__all__ = ["Stretches", "Usable"]
