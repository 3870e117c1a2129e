"""What ``reconcile`` reads: the grants with their cached counters, and the append-only tables
raw (entries summed, events and holds row by row, day rollups beside the events' own day sums,
both in (account, day, model) order).

Nothing here judges; :func:`creditmeter.invariants.check` does. The rows are read lazily, in
the order ``check`` reads them, and events stream in batches: a ledger of any size is read
without holding its events at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from creditmeter.invariants import DayUsage, EntrySum, EventParts, GrantRow, HoldParts, LedgerTotals
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.rows import grant_row_from_row
from creditmeter.store.schema import DAY_TOKENS, entries, events, grants, holds, usage_days
from creditmeter.timeutil import DAY_US

STREAM_ROWS = 10_000  # events fetched at a time


class Reconcile(DriverTransaction):
    """What a transaction reads for the ledger's invariants, of some accounts or (None) all."""

    def grant_rows(self, account_ids: Sequence[str] | None) -> list[GrantRow]:
        query = sa.select(grants).order_by(grants.c.seq)
        if account_ids is not None:
            query = query.where(grants.c.account_id.in_(list(account_ids)))
        return [grant_row_from_row(r) for r in self.conn.execute(query)]

    def ledger_totals(self, account_ids: Sequence[str] | None) -> LedgerTotals:
        """The ledger's rows, each read when ``check`` comes to it (in this transaction)."""
        return LedgerTotals(
            owners=self._owners(account_ids), entry_sums=self._entry_sums(account_ids),
            events=self._event_parts(account_ids), holds=self._hold_parts(account_ids),
            derived_days=self._derived_days(account_ids), stored_days=self._stored_days(account_ids))

    def _owners(self, account_ids: Sequence[str] | None) -> Iterator[tuple[str, str]]:
        query = sa.select(grants.c.id, grants.c.account_id)
        rows = self.conn.execute(_scoped(query, grants.c.account_id, account_ids))
        for gid, aid in rows:  # noqa: UP028 - pairs, not SQLAlchemy rows
            yield gid, aid

    def _entry_sums(self, account_ids: Sequence[str] | None) -> Iterator[EntrySum]:
        query = (sa.select(entries.c.account_id, entries.c.grant_id, entries.c.kind,
                           sa.func.sum(entries.c.amount_uc), sa.func.min(entries.c.at_us))
                 .group_by(entries.c.account_id, entries.c.grant_id, entries.c.kind))
        for aid, gid, kind, total, first_at in self.conn.execute(
                _scoped(query, entries.c.account_id, account_ids)):
            yield aid, gid, kind, int(total), int(first_at)

    def _event_parts(self, account_ids: Sequence[str] | None) -> Iterator[EventParts]:
        query = sa.select(events.c.id, events.c.account_id, events.c.cost_uc, events.c.overage_uc,
                          events.c.allocations, events.c.hold_id)
        scoped = _scoped(query, events.c.account_id, account_ids).execution_options(yield_per=STREAM_ROWS)
        for eid, aid, cost, overage, parts_text, hold_id in self.conn.execute(scoped):
            yield eid, aid, cost, overage, orjson.loads(parts_text), hold_id

    def _hold_parts(self, account_ids: Sequence[str] | None) -> Iterator[HoldParts]:
        query = sa.select(holds.c.id, holds.c.account_id, holds.c.amount_uc, holds.c.parts, holds.c.status)
        for hid, aid, amount, parts_text, status in self.conn.execute(
                _scoped(query, holds.c.account_id, account_ids)):
            yield hid, aid, amount, orjson.loads(parts_text), status

    def _derived_days(self, account_ids: Sequence[str] | None) -> Iterator[DayUsage]:
        day = events.c.ts_us - events.c.ts_us % DAY_US
        model = sa.func.coalesce(events.c.model, "")
        query = (sa.select(events.c.account_id, day, model, sa.func.sum(events.c.cost_uc), sa.func.count(),
                           *(sa.func.sum(events.c[name]) for name in DAY_TOKENS))
                 .group_by(events.c.account_id, day, model)
                 .order_by(self._by_code_point(events.c.account_id), day, self._by_code_point(model)))
        yield from self._days(_scoped(query, events.c.account_id, account_ids))

    def _stored_days(self, account_ids: Sequence[str] | None) -> Iterator[DayUsage]:
        query = (sa.select(usage_days.c.account_id, usage_days.c.day_us, usage_days.c.model,
                           usage_days.c.cost_uc, usage_days.c.events,
                           *(usage_days.c[name] for name in DAY_TOKENS))
                 .order_by(self._by_code_point(usage_days.c.account_id), usage_days.c.day_us,
                           self._by_code_point(usage_days.c.model)))
        yield from self._days(_scoped(query, usage_days.c.account_id, account_ids))

    def _days(self, query: Any) -> Iterator[DayUsage]:
        """Rows of (account, day, model, totals…) as ``DayUsage``, fetched a batch at a time: the
        days of a long history are never all in memory."""
        for row in self.conn.execute(query.execution_options(yield_per=STREAM_ROWS)):
            yield row[0], int(row[1]), row[2], tuple(int(v) for v in row[3:])

    def _by_code_point(self, column: Any) -> Any:
        """``column`` ordered as Python orders strings (what the merge of the day sums expects):
        SQLite compares the UTF-8 bytes, which is that order; PostgreSQL needs the "C" collation."""
        return column.collate("C") if self._pg else column


def _scoped(query: Any, column: Any, account_ids: Sequence[str] | None) -> Any:
    """``query`` of the accounts ``account_ids`` only (all when None)."""
    return query if account_ids is None else query.where(column.in_(list(account_ids)))
