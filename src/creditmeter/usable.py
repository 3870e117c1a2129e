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

from bisect import bisect_right
from collections.abc import Mapping, Sequence

from creditmeter.domain import Grant, GrantId
from creditmeter.timeutil import MAX_US, MIN_US

REMEMBERED = 32  # stretches kept per book (a late event's, today's, and those between)

Stretch = tuple[int, int, tuple[Grant, ...]]


class Usable:
    """The stretches of time worked out so far, by start (they never overlap: each is a longest
    stretch in which the same grants are usable). A grant added or voided forgets those it
    changes: the stretches that overlap its life (a rollover's: and its period's)."""

    __slots__ = ("_starts", "_stretches")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stretches: list[Stretch] = []

    def forget(self, from_us: int = MIN_US, to_us: int = MAX_US + 1) -> None:
        """Forget the stretches that overlap ``[from_us, to_us)``."""
        kept = [s for s in self._stretches if s[1] <= from_us or s[0] >= to_us]
        self._stretches = kept
        self._starts = [s[0] for s in kept]

    def at(self, grants: Sequence[Grant], by_id: Mapping[GrantId, Grant],
           rolled: Mapping[GrantId, GrantId], at_us: int) -> tuple[Grant, ...]:
        """The grants usable at ``at_us``, in burn-down order (``grants`` is in that order)."""
        i = bisect_right(self._starts, at_us) - 1
        if i >= 0 and at_us < self._stretches[i][1]:
            return self._stretches[i][2]
        stretch = _stretch(grants, by_id, rolled, at_us)
        if len(self._stretches) >= REMEMBERED:
            self.forget()
            i = -1
        self._starts.insert(i + 1, stretch[0])
        self._stretches.insert(i + 1, stretch)
        return stretch[2]


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


__all__ = ["Usable"]
