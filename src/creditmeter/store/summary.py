"""Usage summaries: requests, tokens and credits per UTC day or per model.

By day with no model filter (the month view of the API and the console), whole days are read
from the daily rollup (``usage_days``) and only the part-days at either end of the range from
the events, so the read costs a few rows per day however many events the account has. A
summary by model, or of one model, groups the events of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from creditmeter.domain import SummaryRow
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.schema import DAY_TOKENS, events
from creditmeter.timeutil import DAY_US

_TOTALS = ", ".join(f"sum({name})" for name in ("events", *DAY_TOKENS, "cost_uc"))


class Summaries(DriverTransaction):
    """A transaction's usage summaries."""

    def usage_summary(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                      model: str | None, group_by: str) -> list[SummaryRow]:
        """Requests, tokens and credits per UTC day (``day``) or per model (``model``) of the
        events with ``from_us <= ts < to_us`` (no bound: unbounded on that side)."""
        if group_by != "day" or model is not None:
            return self._summary_of_events(account_ids, from_us, to_us, model, group_by)
        first_day = None if from_us is None else -(-from_us // DAY_US) * DAY_US
        last_day = None if to_us is None else to_us // DAY_US * DAY_US
        if first_day is not None and last_day is not None and first_day > last_day:
            # Within one day: its events (the rollup has only whole days).
            return self._summary_of_events(account_ids, from_us, to_us, None, "day")
        head = ([] if from_us is None or first_day == from_us
                else self._summary_of_events(account_ids, from_us, first_day, None, "day"))
        tail = ([] if to_us is None or last_day == to_us
                else self._summary_of_events(account_ids, last_day, to_us, None, "day"))
        return head + self._summary_of_days(account_ids, first_day, last_day) + tail

    def _summary_of_days(self, account_ids: Sequence[str], first_day: int | None,
                         last_day: int | None) -> list[SummaryRow]:
        """The rollup's days with ``first_day <= day < last_day``, summed over the accounts."""
        m = self._mark
        where = [f"account_id IN ({', '.join([m] * len(account_ids))})"]
        params: list[Any] = list(account_ids)
        if first_day is not None:
            where.append(f"day_us >= {m}")
            params.append(first_day)
        if last_day is not None:
            where.append(f"day_us < {m}")
            params.append(last_day)
        rows = self._fetch(f"SELECT day_us, {_TOTALS} FROM usage_days WHERE {' AND '.join(where)} "
                           "GROUP BY day_us ORDER BY day_us", params)
        return [SummaryRow(int(r[0]), *(int(v) for v in r[1:])) for r in rows]

    def _summary_of_events(self, account_ids: Sequence[str], from_us: int | None, to_us: int | None,
                           model: str | None, group_by: str) -> list[SummaryRow]:
        """The summary grouped from the events themselves (every event of the range is read)."""
        key = (events.c.ts_us - events.c.ts_us % DAY_US if group_by == "day"
               else sa.func.coalesce(events.c.model, ""))
        where: list[Any] = [events.c.account_id.in_(list(account_ids))]
        if from_us is not None:
            where.append(events.c.ts_us >= from_us)
        if to_us is not None:
            where.append(events.c.ts_us < to_us)
        if model is not None:
            where.append(events.c.model == model)
        query = (sa.select(key.label("key"), sa.func.count(),
                           *(sa.func.sum(events.c[name]) for name in DAY_TOKENS),
                           sa.func.sum(events.c.cost_uc))
                 .where(*where).group_by(key).order_by(key))
        return [SummaryRow(r[0], *(int(v) for v in r[1:])) for r in self.conn.execute(query)]
