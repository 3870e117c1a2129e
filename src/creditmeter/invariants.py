"""The ledger's invariants, judged from the raw sums and rows the store reads back. Pure: no
I/O, no clock; the store only reads, this module decides what is wrong.

Each violation is a sentence naming the object. ``reconcile`` prints them and exits 1; tests
call this after every operation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from creditmeter.domain import EntryKind, Grant, HoldStatus


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A stored grant with its cached counters."""

    grant: Grant
    used_uc: int
    held_uc: int
    closed_uc: int
    request_fp: str


# (account, grant or None, entry kind, Σ amount, first at_us) of one group of entries.
EntrySum = tuple[str, str | None, str, int, int]
# The grants an event or a hold draws on: (grant id, amount) each.
Parts = Sequence[tuple[str, int]]
# (event id, account, cost, overage, parts, hold id or None) of one stored event.
EventParts = tuple[str, str, int, int, Parts, str | None]
# (hold id, account, amount, parts, status) of one hold.
HoldParts = tuple[str, str, int, Parts, str]
# (account, day, model or "", (Σ cost, events, Σ of each token kind)) of one day of an
# account's usage of one model.
DayUsage = tuple[str, int, str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """What the append-only tables hold, as the store reads it, for :func:`check` to judge.

    Each iterable is read once, in the order of the fields (the two day sums side by side),
    while the store's transaction is open: the store may stream them (events, and days of
    usage, are too many to hold at once).

    Attributes:
      owners: (grant id, account id) of every grant.
      entry_sums: entries summed per (account, grant, kind).
      events: every event with its parts.
      holds: every hold with its parts.
      derived_days: the events' credits, count and tokens per (account, UTC day, model), in the
        order of those keys as Python orders them (strings compared by code point).
      stored_days: the daily rollups as stored, in the same order.
    """

    owners: Iterable[tuple[str, str]]
    entry_sums: Iterable[EntrySum]
    events: Iterable[EventParts]
    holds: Iterable[HoldParts]
    derived_days: Iterable[DayUsage]
    stored_days: Iterable[DayUsage]


@dataclass(slots=True)
class _Ledger:
    """What the ledger adds up to, and what in it does not hold together.

    Attributes:
      entry_sums: (grant_id, entry kind) -> Σ amount.
      allocated: grant_id -> Σ event allocations.
      open_hold_parts: grant_id -> Σ parts of open holds.
      event_overage: account_id -> Σ event overage.
      payoffs: account_id -> Σ payoff entries.
      first_expiry: grant_id -> instant of its first expire entry.
      bad_events: ids of events whose parts + overage differ from their cost, or with a part ≤ 0.
      bad_holds: ids of holds whose parts pass their amount, or settled more than once.
      strays: parts, holds or entries on a grant of another account (or of no account).
      bad_days: "account day model" of each rollup that differs from the events it sums.
    """

    entry_sums: dict[tuple[str | None, str], int] = dataclasses.field(default_factory=dict)
    allocated: dict[str, int] = dataclasses.field(default_factory=dict)
    open_hold_parts: dict[str, int] = dataclasses.field(default_factory=dict)
    event_overage: dict[str, int] = dataclasses.field(default_factory=dict)
    payoffs: dict[str, int] = dataclasses.field(default_factory=dict)
    first_expiry: dict[str | None, int] = dataclasses.field(default_factory=dict)
    bad_events: list[str] = dataclasses.field(default_factory=list)
    bad_holds: list[str] = dataclasses.field(default_factory=list)
    strays: list[str] = dataclasses.field(default_factory=list)
    bad_days: list[str] = dataclasses.field(default_factory=list)


def _add_up(totals: LedgerTotals) -> _Ledger:
    """Read the ledger's rows once, summing them and noting what does not hold together."""
    ledger = _Ledger()
    owners = dict(totals.owners)

    def owned(what: str, gid: str, aid: str) -> None:
        if owners.get(gid) != aid:
            ledger.strays.append(f"{what} on grant {gid!r} of account {owners.get(gid)!r}, not {aid!r}")

    sums, payoffs, first_expiry = ledger.entry_sums, ledger.payoffs, ledger.first_expiry
    for aid, gid, kind, total, first_at in totals.entry_sums:
        if gid is not None:
            owned(f"{kind} entries", gid, aid)
        sums[(gid, kind)] = sums.get((gid, kind), 0) + total
        if kind == EntryKind.PAYOFF.value:
            payoffs[aid] = payoffs.get(aid, 0) + total
        if kind == EntryKind.EXPIRE.value:
            first_expiry[gid] = first_at
    allocated, event_overage, bad_events = ledger.allocated, ledger.event_overage, ledger.bad_events
    settles: dict[str, int] = {}
    for eid, aid, cost, overage, parts, hold_id in totals.events:
        added = overage
        ok = overage >= 0
        for gid, amount in parts:
            allocated[gid] = allocated.get(gid, 0) + amount
            added += amount
            ok = ok and amount > 0
            if owners.get(gid) != aid:
                owned(f"event {eid!r}", gid, aid)
        if added != cost or not ok:
            bad_events.append(eid)
        event_overage[aid] = event_overage.get(aid, 0) + overage
        if hold_id is not None:
            settles[hold_id] = settles.get(hold_id, 0) + 1
    _add_holds(ledger, totals.holds, settles, owned)
    ledger.bad_days = _bad_days(totals.derived_days, totals.stored_days)
    return ledger


def _add_holds(ledger: _Ledger, holds: Iterable[HoldParts], settles: dict[str, int],
               owned: Callable[[str, str, str], None]) -> None:
    """Sum the open holds' parts; a hold is bad if its parts pass its amount (they may fall short
    of it: a policy that lets the account run into overage, or fall back, holds the rest
    uncovered) or it was settled by more than one event."""
    bad = ledger.bad_holds
    for hid, aid, amount, parts, status in holds:
        if sum(a for _, a in parts) > amount or settles.get(hid, 0) > 1:
            bad.append(hid)
        for gid, a in parts:
            owned(f"hold {hid!r}", gid, aid)
            if status == HoldStatus.OPEN.value:
                ledger.open_hold_parts[gid] = ledger.open_hold_parts.get(gid, 0) + a
    listed = set(bad)
    for hid, count in settles.items():
        if count > 1 and hid not in listed:
            bad.append(hid)


def _bad_days(derived_days: Iterable[DayUsage], stored_days: Iterable[DayUsage]) -> list[str]:
    """(account, day, model) rollups that differ from the events they sum: the two sorted
    streams merged, so that only the days found wrong are held, however long the history."""
    bad: list[str] = []
    derived, stored = iter(derived_days), iter(stored_days)
    d, s = next(derived, None), next(stored, None)
    last: tuple[str, int, str] | None = None
    while d is not None or s is not None:
        key = min(row[:3] for row in (d, s) if row is not None)
        if last is not None and key <= last:  # the merge below relies on it (kept under -O too)
            raise RuntimeError(f"day sums out of order: {key} after {last}")
        last = key
        mine = d[3] if d is not None and d[:3] == key else None
        theirs = s[3] if s is not None and s[:3] == key else None
        if mine != theirs:
            bad.append(f"{key[0]} {key[1]} {key[2] or '(no model)'}")
        if mine is not None:
            d = next(derived, None)
        if theirs is not None:
            s = next(stored, None)
    return bad


def check(grant_rows: Iterable[GrantRow], accounts: Iterable[tuple[str, int]],
          totals: LedgerTotals) -> list[str]:
    """Compare the cached counters with the append-only ledger and check every bound."""
    ledger = _add_up(totals)
    problems: list[str] = []
    for row in grant_rows:
        _check_grant(row, ledger, problems)
    for account_id, overage in accounts:
        derived = ledger.event_overage.get(account_id, 0) - ledger.payoffs.get(account_id, 0)
        if derived != overage:
            problems.append(f"account {account_id}: overage counter {overage} but the ledger says {derived}")
        if overage < 0:
            problems.append(f"account {account_id}: negative overage {overage}")
    for event_id in ledger.bad_events:
        problems.append(f"event {event_id}: its parts and overage do not add up to its cost")
    for hold_id in ledger.bad_holds:
        problems.append(f"hold {hold_id}: its parts add up to more than its amount, or it was settled twice")
    problems.extend(ledger.strays)
    for day in ledger.bad_days:
        problems.append(f"usage rollup {day}: its credits, event count or tokens differ from the events")
    return problems


def _check_grant(row: GrantRow, ledger: _Ledger, problems: list[str]) -> None:
    """A grant's cached counters against its entries, and its bounds."""
    sums = ledger.entry_sums
    g = row.grant
    gid = g.id
    issued = sums.get((gid, EntryKind.GRANT.value), 0)
    if issued != g.amount_uc:
        problems.append(f"grant {gid}: amount {g.amount_uc} but grant entries sum to {issued}")
    used = (ledger.allocated.get(gid, 0) + sums.get((gid, EntryKind.PAYOFF.value), 0)
            + sums.get((gid, EntryKind.ALLOCATE.value), 0) - sums.get((gid, EntryKind.RETURN.value), 0))
    if used != row.used_uc:
        problems.append(f"grant {gid}: used counter {row.used_uc} but the ledger says {used}")
    held = sums.get((gid, EntryKind.HOLD.value), 0) - sums.get((gid, EntryKind.RELEASE.value), 0)
    if held != row.held_uc:
        problems.append(f"grant {gid}: held counter {row.held_uc} but hold entries say {held}")
    parts = ledger.open_hold_parts.get(gid, 0)
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
    expired_at = ledger.first_expiry.get(gid)
    if expired_at is not None and (g.expires_at_us is None or expired_at < g.expires_at_us):
        problems.append(f"grant {gid}: an expiry was recorded before the grant expires")
    if sums.get((gid, EntryKind.VOID.value)) and g.voided_at_us is None:
        problems.append(f"grant {gid}: a void was recorded but the grant is not voided")
