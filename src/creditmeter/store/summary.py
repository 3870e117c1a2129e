"""Usage summaries: requests, tokens and credits per UTC day or per model.

Whole days are read from the daily rollup (``usage_days``: a row per account, day and model)
and only the part-days at either end of the range from the events, so a summary costs a few rows
per day however many events the account has: by day or by model, of every model or of one (the
month views of the API and the console).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from creditmeter.domain import SummaryRow
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.reads import Reads
from creditmeter.store.schema import DAY_TOKENS, events
from creditmeter.timeutil import DAY_US, MAX_US, MIN_US

_TOTALS = ", ".join(f"sum({name})" for name in ("events", *DAY_TOKENS, "cost_uc"))


class Summaries(DriverTransaction):
    """A transaction's usage summaries."""

    def usage_summary(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                      model: str | None, group_by: str) -> list[SummaryRow]:
        """Requests, tokens and credits per UTC day (``day``, oldest first) or per model
        (``model``, "" for the events with none, in code point order) of the events with
        ``from_us <= ts < to_us`` (no bound: unbounded on that side), of ``model`` only if given."""
        # Bounds past the instants any event can have are those instants (whole days around
        # them stay within the database's integers).
        from_us = None if from_us is None else min(max(from_us, MIN_US), MAX_US + 1)
        to_us = None if to_us is None else min(max(to_us, MIN_US), MAX_US + 1)
        first_day = None if from_us is None else -(-from_us // DAY_US) * DAY_US
        last_day = None if to_us is None else to_us // DAY_US * DAY_US
        if model == "" or (first_day is not None and last_day is not None and first_day > last_day):
            # Within one day (the rollup has whole days only); or the model "" which no event has
            # (an event with no model has none): the events alone.
            return _in_order(self._summary_of_events(account_ids, from_us, to_us, model, group_by), group_by)
        head = ([] if from_us is None or first_day == from_us
                else self._summary_of_events(account_ids, from_us, first_day, model, group_by))
        tail = ([] if to_us is None or last_day == to_us
                else self._summary_of_events(account_ids, last_day, to_us, model, group_by))
        days = self._summary_of_days(account_ids, first_day, last_day, model, group_by)
        if group_by == "day":
            return head + days + tail  # days apart, each in order
        return _in_order(head + days + tail, group_by)

    def _summary_of_days(self, account_ids: Sequence[str], first_day: int | None, last_day: int | None,
                         model: str | None, group_by: str) -> list[SummaryRow]:
        """The rollup's days with ``first_day <= day < last_day``, summed over the accounts (and
        the models, by day)."""
        m = self._mark
        key = "day_us" if group_by == "day" else "model"
        where = [f"account_id IN ({', '.join([m] * len(account_ids))})"]
        params: list[Any] = list(account_ids)
        for clause, value in ((f"day_us >= {m}", first_day), (f"day_us < {m}", last_day),
                              (f"model = {m}", model)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._fetch(f"SELECT {key}, {_TOTALS} FROM usage_days WHERE {' AND '.join(where)} "
                           f"GROUP BY {key} ORDER BY {key}", params)
        return [SummaryRow(r[0] if key == "model" else int(r[0]), *(int(v) for v in r[1:])) for r in rows]

    def _summary_of_events(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                           model: str | None, group_by: str) -> list[SummaryRow]:
        """The summary grouped from the events themselves (every event of the range is read)."""
        key = (events.c.ts_us - events.c.ts_us % DAY_US if group_by == "day"
               else sa.func.coalesce(events.c.model, ""))
        where = Reads._event_filter(list(account_ids), from_us, to_us, model)
        query = (sa.select(key.label("key"), sa.func.count(),
                           *(sa.func.sum(events.c[name]) for name in DAY_TOKENS),
                           sa.func.sum(events.c.cost_uc))
                 .where(*where).group_by(key).order_by(key))
        return [SummaryRow(r[0], *(int(v) for v in r[1:])) for r in self.conn.execute(query)]


def _in_order(rows: list[SummaryRow], group_by: str) -> list[SummaryRow]:
    """``rows`` with the same key added up, in the order of their keys (models compared by code
    point, whatever the database's collation)."""
    if group_by == "day":
        return rows
    totals: dict[int | str, list[int]] = {}
    for row in rows:
        sums = totals.get(row.key)
        if sums is None:
            totals[row.key] = list(row[1:])
        else:
            for i, value in enumerate(row[1:]):
                sums[i] += value
    return [SummaryRow(key, *totals[key]) for key in sorted(totals, key=str)]
