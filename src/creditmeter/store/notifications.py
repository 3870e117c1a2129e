"""Notices in a SQL transaction: an account's alerts as one reader sees them (newest first, each
with the reader's read mark), how many the reader has not read, and marking them read.

A mark is a row of ``notice_reads`` per (alert, reader): "read" is whether the reader's row is
there, so readers never share a mark and marking is idempotent (a row already there is skipped,
``ON CONFLICT DO NOTHING``, also when two requests of one reader race).
"""

from __future__ import annotations

from collections.abc import Sequence

from creditmeter.store.alerts import ALERT_COLUMNS, StoredAlert, stored_alert
from creditmeter.store.driver import DriverTransaction

_COLUMNS = ", ".join(f"a.{name.strip()}" for name in ALERT_COLUMNS.split(","))


class NoticeRecords(DriverTransaction):
    """What a transaction reads and writes of notices and their read marks."""

    def notices(self, account_id: str, reader: str, *, unread_only: bool, before_seq: int | None,
                limit: int) -> list[tuple[StoredAlert, bool]]:
        """Up to ``limit`` of the account's alerts (before ``before_seq``; only those ``reader``
        has not marked read), newest first, each with whether ``reader`` marked it read."""
        assert limit > 0, limit
        m = self._mark
        where: list[str] = [f"a.account_id = {m}"]
        params: list[object] = [reader, account_id]
        if before_seq is not None:
            where.append(f"a.seq < {m}")
            params.append(before_seq)
        if unread_only:
            where.append("r.alert_seq IS NULL")
        rows = self._fetch(
            f"SELECT {_COLUMNS}, r.alert_seq FROM alerts a LEFT JOIN notice_reads r "
            f"ON r.alert_seq = a.seq AND r.reader = {m} WHERE {' AND '.join(where)} "
            f"ORDER BY a.seq DESC LIMIT {m}", [*params, limit])
        return [(stored_alert(row[:-1]), row[-1] is not None) for row in rows]

    def unread_notices(self, account_id: str, reader: str) -> int:
        """How many of the account's alerts ``reader`` has not marked read."""
        m = self._mark
        rows = self._fetch(
            f"SELECT count(*) FROM alerts a WHERE a.account_id = {m} AND NOT EXISTS "
            f"(SELECT 1 FROM notice_reads r WHERE r.alert_seq = a.seq AND r.reader = {m})",
            [account_id, reader])
        return int(rows[0][0])

    def alert_ids_of(self, account_id: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are alerts of the account."""
        if not ids:
            return set()
        m = self._mark
        marks = ", ".join([m] * len(ids))
        rows = self._fetch(f"SELECT id FROM alerts WHERE account_id = {m} AND id IN ({marks})",
                           [account_id, *ids])
        return {row[0] for row in rows}

    def mark_notices_read(self, account_id: str, reader: str, at_us: int, *,
                          ids: Sequence[str] | None, through_seq: int | None) -> int:
        """Mark the account's alerts read for ``reader``: those of ``ids``, or (``ids`` None)
        every one stored so far, up to ``through_seq`` when given. Returns how many were not
        marked before."""
        m = self._mark
        where: list[str] = [f"a.account_id = {m}"]
        params: list[object] = [reader, at_us, account_id]
        if ids is not None:
            if not ids:
                return 0
            where.append(f"a.id IN ({', '.join([m] * len(ids))})")
            params.extend(ids)
        if through_seq is not None:
            where.append(f"a.seq <= {m}")
            params.append(through_seq)
        where.append(f"NOT EXISTS (SELECT 1 FROM notice_reads r WHERE r.alert_seq = a.seq "
                     f"AND r.reader = {m})")
        cursor = self._driver.cursor()
        try:
            cursor.execute(
                f"INSERT INTO notice_reads (alert_seq, reader, read_at_us) SELECT a.seq, {m}, {m} "
                f"FROM alerts a WHERE {' AND '.join(where)} ON CONFLICT DO NOTHING", [*params, reader])
            marked: int = cursor.rowcount
        finally:
            cursor.close()
        assert marked >= 0, marked
        return marked
