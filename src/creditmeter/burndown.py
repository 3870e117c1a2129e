"""Burn-down: the order in which packages are used, and allocation. Pure: no I/O, no clock.

The rule users are told (the trial first, then whatever expires soonest), made total. Usable grants
are sorted by (priority ascending, expires_at ascending with never-expiring last, effective_at
ascending, a rollover before other packages, creation order). The rollover goes first on a tie (it
ties with the next period's package when it lasts one period): carried credits are the older ones, and
the order must not depend on which command happened to make the two packages first.
"""

from __future__ import annotations

from collections.abc import Iterable

from creditmeter.domain import Allocation, Grant, GrantId, GrantKind

_NEVER = 1 << 62


def order_key(grant: Grant) -> tuple[int, int, int, int, int]:
    """The one function that decides which package pays first."""
    expires = _NEVER if grant.expires_at_us is None else grant.expires_at_us
    carried = 0 if grant.kind is GrantKind.ROLLOVER else 1
    return (grant.priority, expires, grant.effective_at_us, carried, grant.seq)


def allocate(drawable: Iterable[tuple[GrantId, int]], amount_uc: int) -> tuple[list[Allocation], int]:
    """Take ``amount_uc`` from ``drawable`` (grant, amount it can give), in the order given.

    Returns the allocations and the shortfall (what no grant could cover).
    """
    assert amount_uc >= 0, amount_uc
    parts: list[Allocation] = []
    left = amount_uc
    if not left:
        return parts, 0
    for grant_id, can_give in drawable:
        if can_give <= 0:
            continue
        if can_give >= left:  # covered: no need to look at the next grant
            parts.append(Allocation(grant_id, left))
            return parts, 0
        parts.append(Allocation(grant_id, can_give))
        left -= can_give
    return parts, left


def lasts(grant: Grant | None, until_us: int | None) -> bool:
    """Whether ``grant`` lasts at least until ``until_us`` (None: only one that never expires does)."""
    assert grant is not None
    return grant.expires_at_us is None or (until_us is not None and grant.expires_at_us >= until_us)


def merge(parts: list[Allocation]) -> list[Allocation]:
    """Join parts on the same grant, keeping the order in which grants were first drawn."""
    totals: dict[GrantId, int] = {}
    for part in parts:
        totals[part.grant_id] = totals.get(part.grant_id, 0) + part.amount_uc
    return [Allocation(gid, amount) for gid, amount in totals.items()]
