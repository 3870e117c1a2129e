"""The ledger's invariants, checked from what the store re-derives. Pure: no I/O, no clock.

Each violation is a sentence naming the object. ``reconcile`` prints them and exits 1; tests
call this after every operation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from creditmeter.domain import EntryKind, Grant


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A stored grant with its cached counters."""

    grant: Grant
    used_uc: int
    held_uc: int
    closed_uc: int
    request_fp: str


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """What the append-only tables say, for :func:`check` to compare with the caches.

    Attributes:
      entry_sums: (grant_id, entry kind) -> Σ amount.
      allocated: grant_id -> Σ event allocations.
      open_hold_parts: grant_id -> Σ parts of open holds.
      event_overage: account_id -> Σ event overage.
      payoffs: account_id -> Σ payoff entries.
      bad_events: ids of events whose parts + overage differ from their cost, or with a part ≤ 0.
      bad_holds: ids of holds whose parts differ from their amount, or settled more than once.
      strays: parts, holds or entries on a grant of another account (or of no account).
      first_expiry: grant_id -> instant of its first expire entry.
    """

    entry_sums: dict[tuple[str, str], int]
    allocated: dict[str, int]
    open_hold_parts: dict[str, int]
    event_overage: dict[str, int]
    payoffs: dict[str, int]
    bad_events: list[str]
    bad_holds: list[str]
    strays: list[str]
    first_expiry: dict[str, int]
    bad_days: list[str] = dataclasses.field(default_factory=list)


def check(grant_rows: Iterable[GrantRow], accounts: Iterable[tuple[str, int]],
          totals: LedgerTotals) -> list[str]:
    """Compare the cached counters with the append-only ledger and check every bound."""
    problems: list[str] = []
    sums = totals.entry_sums
    for row in grant_rows:
        g = row.grant
        gid = g.id
        issued = sums.get((gid, EntryKind.GRANT.value), 0)
        if issued != g.amount_uc:
            problems.append(f"grant {gid}: amount {g.amount_uc} but grant entries sum to {issued}")
        used = (totals.allocated.get(gid, 0) + sums.get((gid, EntryKind.PAYOFF.value), 0)
                + sums.get((gid, EntryKind.ALLOCATE.value), 0) - sums.get((gid, EntryKind.RETURN.value), 0))
        if used != row.used_uc:
            problems.append(f"grant {gid}: used counter {row.used_uc} but the ledger says {used}")
        held = sums.get((gid, EntryKind.HOLD.value), 0) - sums.get((gid, EntryKind.RELEASE.value), 0)
        if held != row.held_uc:
            problems.append(f"grant {gid}: held counter {row.held_uc} but hold entries say {held}")
        parts = totals.open_hold_parts.get(gid, 0)
        if parts != row.held_uc:
            problems.append(f"grant {gid}: held counter {row.held_uc} but open holds hold {parts}")
        closed = sums.get((gid, EntryKind.EXPIRE.value), 0) + sums.get((gid, EntryKind.VOID.value), 0)
        if closed != row.closed_uc:
            problems.append(f"grant {gid}: closed counter {row.closed_uc} but entries say {closed}")
        if row.used_uc < 0 or row.held_uc < 0:
            problems.append(f"grant {gid}: negative used {row.used_uc} or held {row.held_uc}")
        residual = g.amount_uc - row.used_uc - row.held_uc
        if residual < 0:
            problems.append(f"grant {gid}: overspent, used {row.used_uc} + held {row.held_uc} "
                            f"> granted {g.amount_uc}")
        if not 0 <= row.closed_uc <= max(residual, 0):
            problems.append(f"grant {gid}: recorded expiry/void {row.closed_uc} outside 0..{residual}")
        if g.expires_at_us is not None and g.expires_at_us <= g.effective_at_us:
            problems.append(f"grant {gid}: expires before it takes effect")
        expired_at = totals.first_expiry.get(gid)
        if expired_at is not None and (g.expires_at_us is None or expired_at < g.expires_at_us):
            problems.append(f"grant {gid}: an expiry was recorded before the grant expires")
        if sums.get((gid, EntryKind.VOID.value)) and g.voided_at_us is None:
            problems.append(f"grant {gid}: a void was recorded but the grant is not voided")
    for account_id, overage in accounts:
        derived = totals.event_overage.get(account_id, 0) - totals.payoffs.get(account_id, 0)
        if derived != overage:
            problems.append(f"account {account_id}: overage counter {overage} but the ledger says {derived}")
        if overage < 0:
            problems.append(f"account {account_id}: negative overage {overage}")
    for event_id in totals.bad_events:
        problems.append(f"event {event_id}: its parts and overage do not add up to its cost")
    for hold_id in totals.bad_holds:
        problems.append(f"hold {hold_id}: its parts do not add up to its amount, or it was settled twice")
    problems.extend(totals.strays)
    for day in totals.bad_days:
        problems.append(f"usage rollup {day}: its credits or event count differ from the events")
    return problems
