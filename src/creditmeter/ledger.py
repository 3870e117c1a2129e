"""One account's credits as a working book: the transitions of the ledger. No I/O, no clock.

A :class:`Book` is loaded at the start of a command, its transitions run on it (charge, reserve,
settle, release, grant, void, sweep), and what they produced is written back in the same
transaction. Reads use the same book without writing it: every figure is right at the instant
asked, without waiting for any background job.

Per grant the book keeps three counters, all re-derivable from the ledger:

- ``used``   = Σ charge allocations + Σ overage payoffs + Σ allocations to members − Σ returns
- ``held``   = Σ hold entries − Σ release entries (open holds)
- ``closed`` = Σ expire and void entries (history of what expiry/voiding took)

and every other figure is derived at an instant ``t`` from ``residual = granted − used − held``:
it is ``remaining`` while the grant is live, ``expired`` once ``t ≥ expires_at``, ``voided`` once
voided. So granted = used + held + expired + voided + remaining holds by construction; what must
be checked is that nothing is negative and the counters match the ledger (see ``invariants``).
"""

from __future__ import annotations

import dataclasses
from bisect import insort
from collections.abc import Iterable, Iterator
from typing import Any

from creditmeter.burndown import allocate, lasts, merge, order_key
from creditmeter.domain import (
    Account,
    Allocation,
    Balance,
    Charge,
    Entry,
    EntryKind,
    EventId,
    Grant,
    GrantId,
    GrantKind,
    GrantStatus,
    Hold,
    HoldId,
    HoldStatus,
    Package,
    Refused,
    UsageEvent,
)
from creditmeter.timeutil import MAX_US
from creditmeter.usable import Stretches, Usable

PERIOD_PREFIX = "sub:"  # a subscription period's package (creditmeter.terms)
ROLLOVER_PREFIX = "rol:"  # what that package left unused, carried over: the same id after it


def rollover_source(grant_id: str) -> GrantId:
    """The period package a rollover package came from."""
    return GrantId(PERIOD_PREFIX + grant_id[len(ROLLOVER_PREFIX):])


@dataclasses.dataclass(slots=True)
class Counters:
    """A grant's cached counters (see the module docstring)."""

    used_uc: int = 0
    held_uc: int = 0
    closed_uc: int = 0


class Book:
    """One account's grants, overage and the open holds a command needs, and its changes.

    Open holds: only those lapsed by ``holds_through_us`` and those taken in (:meth:`take_hold`);
    grants' counters carry what they hold. ``holds_change``: per key, Σ held by open holds since
    the book was loaded or written."""

    def __init__(self, account: Account, overage_uc: int,
                 grants: Iterable[tuple[Grant, Counters]], holds: Iterable[Hold],
                 version: int = 0, overage_since_us: int | None = None, terms: Any = None,
                 holds_through_us: int = MAX_US) -> None:
        self.account = account
        self.terms = terms  # what recurs on the account (a creditmeter.terms.Terms; None: nothing)
        self.provided: dict[int, tuple[int, int]] = {}  # per schedule, the period last provided
        self.settled: dict[int, list[tuple[int, int]]] = {}  # per schedule, periods with nothing owed
        self.quiet: Stretches[Any] = Stretches()  # stretches with nothing more owed (terms.owed_at)
        self.overage_uc = overage_uc
        self.overage_since_us = overage_since_us  # when the current overage arose
        self.version = version  # the stored account's version this book was loaded at
        pairs = sorted(grants, key=lambda pair: order_key(pair[0]))
        self.grants: list[Grant] = [g for g, _ in pairs]
        self._by_id: dict[GrantId, Grant] = {g.id: g for g in self.grants}
        self.counters: dict[GrantId, Counters] = {g.id: c for g, c in pairs}
        self.holds: dict[HoldId, Hold] = {h.id: h for h in holds if h.status is HoldStatus.OPEN}
        self.holds_through_us = holds_through_us  # every open hold lapsed by then is in ``holds``
        # A period's package → its rollover: a late event in the period draws on both.
        self.rolled: dict[GrantId, GrantId] = {}
        self._usable = Usable()  # the grants usable when, per stretch of time
        for g in self.grants:
            self._note_rollover(g)
        self.reset_changes()

    def reset_changes(self) -> None:
        """Forget the changes (once the store has written them)."""
        self.entries: list[Entry] = []
        self.charges: list[tuple[UsageEvent, Charge]] = []
        self.new_grants: list[Grant] = []
        self.voided: list[Grant] = []
        self.new_holds: list[Hold] = []
        self.ended_holds: list[Hold] = []
        self.holds_change: dict[str | None, int] = {}
        self.changed: set[GrantId] = set()
        self.overage_changed = False
        self.mark: Any = None  # what the book stood at when a command began (its alerts compare)
        self.used_before: dict[GrantId, int] | None = None  # then: what each grant had used
        self.raised: list[Any] | None = None  # alerts raised charge by charge (engine.alerting)

    @property
    def has_changes(self) -> bool:
        return bool(self.entries or self.charges or self.new_grants or self.voided or self.new_holds
                    or self.ended_holds or self.changed or self.overage_changed)

    # -- figures ---------------------------------------------------------------------------

    def grant(self, grant_id: GrantId) -> Grant | None:
        return self._by_id.get(grant_id)

    def residual(self, grant: Grant) -> int:
        c = self.counters[grant.id]
        return grant.amount_uc - c.used_uc - c.held_uc

    def drawable(self, at_us: int) -> list[tuple[GrantId, int]]:
        """(grant, residual) for each grant usable at ``at_us``, in burn-down order; a period's
        package is followed by its rollover when there is one (made once the period was over:
        what a late event takes from it corrects the rollover)."""
        return list(self._drawing(at_us))

    def _drawing(self, at_us: int) -> Iterator[tuple[GrantId, int]]:
        """:meth:`drawable`, one at a time (a charge stops at the grants that cover it)."""
        counters = self.counters
        for g in self._usable.at(self.grants, self._by_id, self.rolled, at_us):
            c = counters[g.id]
            yield g.id, g.amount_uc - c.used_uc - c.held_uc

    def available_uc(self, at_us: int) -> int:
        """Credits that a request at ``at_us`` could use (call :meth:`advance` first)."""
        return sum(amount for _, amount in self._drawing(at_us))

    def held_uc(self) -> int:
        return sum(c.held_uc for c in self.counters.values())

    def package(self, grant: Grant, at_us: int) -> Package:
        c = self.counters[grant.id]
        residual = grant.amount_uc - c.used_uc - c.held_uc
        expired = voided = remaining = 0
        if grant.voided_at_us is not None and grant.voided_at_us <= at_us:
            voided, status = residual, GrantStatus.VOIDED
        elif grant.expires_at_us is not None and at_us >= grant.expires_at_us:
            expired, status = residual, GrantStatus.EXPIRED
        elif at_us < grant.effective_at_us:
            remaining, status = residual, GrantStatus.SCHEDULED
        else:
            remaining = residual
            status = GrantStatus.ACTIVE if residual > 0 else GrantStatus.DEPLETED
        return Package(grant, c.used_uc, c.held_uc, expired, voided, remaining, status)

    def balance(self, at_us: int) -> Balance:
        # A rollover of nothing only records that its period was rolled over (see terms._roll).
        packages = tuple(self.package(g, at_us) for g in self.grants
                         if g.amount_uc or g.kind is not GrantKind.ROLLOVER)
        available = sum(p.remaining_uc for p in packages if p.status in
                        (GrantStatus.ACTIVE, GrantStatus.DEPLETED))
        return Balance(self.account.id, at_us, available, self.held_uc(), self.overage_uc, packages)

    # -- transitions -----------------------------------------------------------------------

    def advance(self, at_us: int) -> None:
        """Bring the book to ``at_us``: holds past their ttl end, new credits pay off overage."""
        self.end_lapsed(at_us)
        self.pay_overage(at_us)

    def end_lapsed(self, at_us: int) -> None:
        """End the holds whose ttl passed by ``at_us``, each at its expiry."""
        assert at_us <= self.holds_through_us, (at_us, self.holds_through_us)
        for hold in [h for h in self.holds.values() if h.expires_at_us <= at_us]:
            self._end_hold(hold, hold.expires_at_us, HoldStatus.EXPIRED, "ttl passed")

    def pay_overage(self, at_us: int) -> None:
        """Pay the account's overage with the first credits usable since it arose.

        Credits pay at the first instant they were usable while the debt stood — the later of
        the debt's start and the grant's — then in burn-down order. So the result does not depend
        on when a write (or ``tick``) happens to run: a grant that started after the debt and
        expired before anyone looked still paid it. Each payoff is stamped at that instant.
        """
        if self.overage_uc <= 0:
            return
        since = at_us if self.overage_since_us is None else self.overage_since_us
        candidates = []
        for g in self.grants:
            end = g.expires_at_us
            if g.voided_at_us is not None and (end is None or g.voided_at_us < end):
                end = g.voided_at_us
            if g.effective_at_us <= at_us and (end is None or (end > since and end > g.effective_at_us)):
                residual = self.residual(g)
                if residual > 0:
                    candidates.append((max(since, g.effective_at_us), order_key(g), g.id, residual))
        candidates.sort()
        for paid_at, _, grant_id, residual in candidates:
            take = min(residual, self.overage_uc)
            self._use(grant_id, take, at_us)
            self.entries.append(Entry(EntryKind.PAYOFF, self.account.id, grant_id, take, paid_at,
                                      note="overage paid off"))
            self.overage_uc -= take
            self.overage_changed = True
            if not self.overage_uc:
                break
        if not self.overage_uc:
            self.overage_since_us = None

    def add_grant(self, grant: Grant, at_us: int, *, pay: bool = True) -> None:
        assert grant.id not in self.counters, grant.id
        self._note_rollover(grant)
        insort(self.grants, grant, key=order_key)  # after those it ties with, as a stable sort would
        self._usable.forget_grant(grant, self._period_of(grant))
        self._by_id[grant.id] = grant
        self.counters[grant.id] = Counters()
        self.new_grants.append(grant)
        self.entries.append(Entry(EntryKind.GRANT, self.account.id, grant.id, grant.amount_uc, at_us,
                                  note=grant.name))
        if pay:
            self.pay_overage(at_us)

    def void(self, grant: Grant, at_us: int) -> Grant:
        """Void (refund) a grant: what remains is removed; what was used stays used."""
        voided = grant._replace(voided_at_us=at_us)
        self.grants[self.grants.index(grant)] = voided
        self._usable.forget_grant(voided, self._period_of(voided))
        self._by_id[voided.id] = voided
        self.voided.append(voided)
        self._close(voided, self.residual(voided), at_us)
        return voided

    def charge(self, event: UsageEvent, cost_uc: int, price_version: int | None,
               timestamp_us: int, at_us: int, hold: Hold | None = None) -> Charge:
        """Charge an event: first from ``hold``'s parts, then grants usable at its timestamp.

        What nothing covers becomes overage. New overage is paid at once from credits usable now
        (a late event may find its own instant's grants spent while newer ones are not).
        """
        parts: list[Allocation] = []
        left = cost_uc
        if hold is not None:
            held_parts, left = allocate(((p.grant_id, p.amount_uc) for p in hold.parts), left)
            parts.extend(held_parts)
            for part in held_parts:
                self._use(part.grant_id, part.amount_uc, at_us)
        if left:
            more, left = allocate(self._drawing(timestamp_us), left)
            for part in more:
                self._use(part.grant_id, part.amount_uc, at_us)
            parts = merge(parts + more) if parts else more
        charge = Charge(event.id, self.account.id, "charged", cost_uc, tuple(parts), left,
                        price_version, timestamp_us, hold.id if hold else None)
        self.charges.append((event, charge))
        if left:
            if not self.overage_uc:
                self.overage_since_us = at_us
            self.overage_uc += left
            self.overage_changed = True
            self.pay_overage(at_us)
        return charge

    def reserve(self, hold_id: HoldId, amount_uc: int, ttl_s: int, at_us: int, *,
                short_ok: bool = False, key_id: str | None = None, fallback: bool = False) -> Hold | Refused:
        """Hold credits for a request in flight; refused unless available covers all of it.
        With ``short_ok`` (the account's policy lets it run into overage, or fall back), the
        hold takes what is available and holds the rest uncovered: its settle's shortfall is
        overage."""
        available = self.available_uc(at_us)
        if not short_ok:
            refused = self.refusal(amount_uc, at_us)
            if refused is not None:
                return refused
        parts, short = allocate(self.drawable(at_us), amount_uc)
        assert short == 0 or short_ok, (amount_uc, available)
        for part in parts:
            self.counters[part.grant_id].held_uc += part.amount_uc
            self.changed.add(part.grant_id)
            self.entries.append(Entry(EntryKind.HOLD, self.account.id, part.grant_id,
                                      part.amount_uc, at_us, hold_id=hold_id))
        hold = Hold(hold_id, self.account.id, amount_uc, tuple(parts), at_us,
                    at_us + ttl_s * 1_000_000, HoldStatus.OPEN, None, key_id, fallback)
        self.holds[hold_id] = hold
        self.new_holds.append(hold)
        self._change_held(hold, 1)
        return hold

    def refusal(self, amount_uc: int, at_us: int) -> Refused | None:
        """Why a hold of ``amount_uc`` cannot be made from credits alone; None when it can."""
        available = self.available_uc(at_us)
        if self.overage_uc > 0:
            return Refused(self.account.id, amount_uc, available, self.overage_uc,
                           "the account has unpaid overage")
        if available <= 0 or available < amount_uc:
            return Refused(self.account.id, amount_uc, available, self.overage_uc,
                           "not enough credits available")
        return None

    def take_hold(self, hold: Hold) -> None:
        """Take in an open hold of the account read on its own (to settle or release it)."""
        assert hold.account_id == self.account.id, (hold, self.account.id)
        if (hold.status is HoldStatus.OPEN and hold.id not in self.holds
                and all(h.id != hold.id for h in self.ended_holds)):
            self.holds[hold.id] = hold

    def _change_held(self, hold: Hold, sign: int) -> None:
        key = hold.key_id
        self.holds_change[key] = self.holds_change.get(key, 0) + sign * hold.amount_uc

    def end_hold(self, hold: Hold, at_us: int, status: HoldStatus,
                 settled_event_id: EventId | None = None) -> Hold:
        """Give a hold's credits back (before a settle charges, or on release)."""
        return self._end_hold(hold, at_us, status, status.value, settled_event_id)

    def settle_lapsed_hold(self, hold: Hold, event_id: EventId) -> None:
        """Mark a hold whose ttl passed as settled by ``event_id`` (it holds nothing any more)."""
        assert hold.status is HoldStatus.EXPIRED or any(h.id == hold.id for h in self.ended_holds), hold
        self.ended_holds = [h for h in self.ended_holds if h.id != hold.id]
        self.ended_holds.append(hold._replace(status=HoldStatus.EXPIRED, settled_event_id=event_id))

    def sweep(self, at_us: int) -> None:
        """Record expiry/void entries so history matches the derived figures at ``at_us``.

        A difference with what was recorded before (a hold released after the expiry) is a
        new entry; the store points it at the grant's first closing entry (``corrects``).
        """
        for grant in self.grants:
            package = self.package(grant, at_us)
            if package.status in (GrantStatus.EXPIRED, GrantStatus.VOIDED):
                self._close(grant, package.expired_uc + package.voided_uc, at_us)

    def allocate_out(self, amount_uc: int, until_us: int | None, at_us: int,
                     reference: str) -> list[Allocation] | None:
        """Move ``amount_uc`` out of this (pool) book into a member's grant: from the grants
        usable at ``at_us`` that last at least until ``until_us`` (None: that never expire; 0:
        any), in burn-down order. None, and nothing changed, when they cannot cover it all."""
        usable = [(gid, amount) for gid, amount in self.drawable(at_us)
                  if lasts(self.grant(gid), until_us)]
        parts, short = allocate(usable, amount_uc)
        if short:
            return None
        for part in parts:
            self._use(part.grant_id, part.amount_uc, at_us)
            self.entries.append(Entry(EntryKind.ALLOCATE, self.account.id, part.grant_id,
                                      part.amount_uc, at_us, note=reference[:255]))
        return parts

    def return_in(self, parts: Iterable[Allocation], amount_uc: int, at_us: int,
                  reference: str) -> list[Allocation]:
        """Give ``amount_uc`` back to the pool grants an allocation came from: the longest-lived
        first (never-expiring, then the latest expiry; then the last in burn-down order), each at
        most what it gave. Returns what each got back."""
        returned = []
        left = amount_uc
        for part in sorted(parts, key=self._lifetime, reverse=True):
            take = min(part.amount_uc, left)
            if take <= 0:
                break
            counters = self.counters[part.grant_id]
            self._note_used(part.grant_id, counters)
            counters.used_uc -= take
            self.changed.add(part.grant_id)
            self.entries.append(Entry(EntryKind.RETURN, self.account.id, part.grant_id, take, at_us,
                                      note=reference[:255]))
            returned.append(Allocation(part.grant_id, take))
            left -= take
            grant = self.grant(part.grant_id)
            assert grant is not None
            if counters.closed_uc:  # credits back on a grant that already expired: they expired too
                self._close(grant, self.residual(grant), at_us)
        assert left == 0, (amount_uc, left)
        return returned

    def move_out(self, grant_id: GrantId, amount_uc: int, at_us: int, note: str) -> None:
        """Take ``amount_uc`` of a grant's residual into another package (a rollover)."""
        grant = self.grant(grant_id)
        assert grant is not None and 0 < amount_uc <= self.residual(grant), (grant_id, amount_uc)
        self._use(grant_id, amount_uc, at_us)
        self.entries.append(Entry(EntryKind.ALLOCATE, self.account.id, grant_id, amount_uc, at_us,
                                  note=note))

    # -- internals -------------------------------------------------------------------------

    def _note_rollover(self, grant: Grant) -> None:
        if grant.kind is GrantKind.ROLLOVER:
            self.rolled[rollover_source(grant.id)] = grant.id

    def _period_of(self, grant: Grant) -> Grant | None:
        """A rollover's period package (None for any other grant)."""
        return self._by_id.get(rollover_source(grant.id)) if grant.kind is GrantKind.ROLLOVER else None

    def _lifetime(self, part: Allocation) -> tuple[bool, int, int]:
        grant = self.grant(part.grant_id)
        assert grant is not None
        never = grant.expires_at_us is None
        return never, grant.expires_at_us or 0, self.grants.index(grant)

    def _note_used(self, grant_id: GrantId, counters: Counters) -> None:
        if self.used_before is not None:  # marked: what it had used before the command, once
            self.used_before.setdefault(grant_id, counters.used_uc)

    def _use(self, grant_id: GrantId, amount_uc: int, at_us: int) -> None:
        counters = self.counters[grant_id]
        self._note_used(grant_id, counters)
        counters.used_uc += amount_uc
        self.changed.add(grant_id)
        if counters.closed_uc:
            # A late event drew on credits already recorded as expired (or a settle on voided
            # ones): correct the recorded figure now, by a new entry.
            grant = self.grant(grant_id)
            assert grant is not None
            residual = self.residual(grant)
            if counters.closed_uc > residual:
                self._close(grant, residual, at_us)

    def _close(self, grant: Grant, target_uc: int, at_us: int) -> None:
        counters = self.counters[grant.id]
        delta = target_uc - counters.closed_uc
        if delta == 0:
            return
        kind = EntryKind.VOID if grant.voided_at_us is not None else EntryKind.EXPIRE
        note = "correction" if counters.closed_uc else kind.value
        counters.closed_uc = target_uc
        self.changed.add(grant.id)
        self.entries.append(Entry(kind, self.account.id, grant.id, delta, at_us, note=note))

    def _end_hold(self, hold: Hold, at_us: int, status: HoldStatus, note: str,
                  settled_event_id: EventId | None = None) -> Hold:
        assert hold.status is HoldStatus.OPEN, hold
        for part in hold.parts:
            counters = self.counters[part.grant_id]
            counters.held_uc -= part.amount_uc
            assert counters.held_uc >= 0, (part, counters)
            self.changed.add(part.grant_id)
            self.entries.append(Entry(EntryKind.RELEASE, self.account.id, part.grant_id,
                                      part.amount_uc, at_us, hold_id=hold.id, note=note))
        ended = hold._replace(status=status, settled_event_id=settled_event_id)
        del self.holds[hold.id]
        self._change_held(hold, -1)
        self.ended_holds.append(ended)
        return ended

