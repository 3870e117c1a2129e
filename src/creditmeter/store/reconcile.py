"""What ``reconcile`` reads: the grants with their cached counters, and what the append-only
tables add up to (entries summed, events streamed in batches, holds, day rollups).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from creditmeter.domain import EntryKind, HoldStatus
from creditmeter.invariants import GrantRow, LedgerTotals
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.rows import grant_row_from_row
from creditmeter.store.schema import entries, events, grants, holds, usage_days
from creditmeter.timeutil import DAY_US


class Reconcile(DriverTransaction):
    """What a transaction reads for the ledger's invariants, of some accounts or (None) all."""

    def grant_rows(self, account_ids: Sequence[str] | None) -> list[GrantRow]:
        query = sa.select(grants).order_by(grants.c.seq)
        if account_ids is not None:
            query = query.where(grants.c.account_id.in_(list(account_ids)))
        return [grant_row_from_row(r) for r in self.conn.execute(query)]

    def ledger_totals(self, account_ids: Sequence[str] | None) -> LedgerTotals:
        def scoped(query: Any, column: Any) -> Any:
            return query if account_ids is None else query.where(column.in_(list(account_ids)))

        owners = {gid: aid for gid, aid in self.conn.execute(
            scoped(sa.select(grants.c.id, grants.c.account_id), grants.c.account_id))}
        strays: list[str] = []

        def owned(what: str, gid: str, aid: str) -> None:
            if owners.get(gid) != aid:
                strays.append(f"{what} on grant {gid!r} of account {owners.get(gid)!r}, not {aid!r}")

        entry_sums: dict[tuple[str, str], int] = {}
        payoffs: dict[str, int] = {}
        first_close: dict[str, int] = {}
        q = scoped(sa.select(entries.c.account_id, entries.c.grant_id, entries.c.kind,
                             sa.func.sum(entries.c.amount_uc), sa.func.min(entries.c.at_us))
                   .group_by(entries.c.account_id, entries.c.grant_id, entries.c.kind),
                   entries.c.account_id)
        for aid, gid, kind, total, first_at in self.conn.execute(q):
            if gid is not None:
                owned(f"{kind} entries", gid, aid)
            entry_sums[(gid, kind)] = entry_sums.get((gid, kind), 0) + int(total)
            if kind == EntryKind.PAYOFF.value:
                payoffs[aid] = payoffs.get(aid, 0) + int(total)
            if kind == EntryKind.EXPIRE.value:
                first_close[gid] = int(first_at)
        allocated: dict[str, int] = {}
        event_overage: dict[str, int] = {}
        bad_events: list[str] = []
        settles: dict[str, int] = {}
        q = scoped(sa.select(events.c.id, events.c.account_id, events.c.cost_uc,
                             events.c.overage_uc, events.c.allocations, events.c.hold_id),
                   events.c.account_id)
        for eid, aid, cost, overage, parts_text, hold_id in self.conn.execution_options(
                yield_per=10_000).execute(q):
            total = overage
            ok = overage >= 0
            for gid, amount in orjson.loads(parts_text):
                allocated[gid] = allocated.get(gid, 0) + amount
                total += amount
                ok = ok and amount > 0
                if owners.get(gid) != aid:
                    owned(f"event {eid!r}", gid, aid)
            if total != cost or not ok:
                bad_events.append(eid)
            event_overage[aid] = event_overage.get(aid, 0) + overage
            if hold_id is not None:
                settles[hold_id] = settles.get(hold_id, 0) + 1
        open_parts: dict[str, int] = {}
        bad_holds: list[str] = []
        q = scoped(sa.select(holds.c.id, holds.c.account_id, holds.c.amount_uc, holds.c.parts,
                             holds.c.status), holds.c.account_id)
        for hid, aid, amount, parts_text, status in self.conn.execute(q):
            parts = orjson.loads(parts_text)
            if sum(a for _, a in parts) != amount or settles.get(hid, 0) > 1:
                bad_holds.append(hid)
            for gid, a in parts:
                owned(f"hold {hid!r}", gid, aid)
                if status == HoldStatus.OPEN.value:
                    open_parts[gid] = open_parts.get(gid, 0) + a
        for hid, count in settles.items():
            if count > 1 and hid not in bad_holds:
                bad_holds.append(hid)
        return LedgerTotals(entry_sums, allocated, open_parts, event_overage, payoffs,
                            bad_events, bad_holds, strays, first_close, self._bad_days(account_ids))

    def _bad_days(self, account_ids: Sequence[str] | None) -> list[str]:
        """(account, day) rollups that differ from the events they sum."""
        day = events.c.ts_us - events.c.ts_us % DAY_US
        q = sa.select(events.c.account_id, day, sa.func.sum(events.c.cost_uc), sa.func.count()).group_by(
            events.c.account_id, day)
        r = sa.select(usage_days.c.account_id, usage_days.c.day_us, usage_days.c.cost_uc, usage_days.c.events)
        if account_ids is not None:
            q = q.where(events.c.account_id.in_(list(account_ids)))
            r = r.where(usage_days.c.account_id.in_(list(account_ids)))
        derived = {(a, int(d)): (int(c), int(n)) for a, d, c, n in self.conn.execute(q)}
        stored = {(a, int(d)): (int(c), int(n)) for a, d, c, n in self.conn.execute(r)}
        return [f"{a} {d}" for a, d in sorted(set(derived) | set(stored))
                if derived.get((a, d)) != stored.get((a, d))]
