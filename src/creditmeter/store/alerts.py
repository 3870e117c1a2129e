"""The alerts outbox in a SQL transaction: keeping an alert once (``insert_alert``) and reading
them in the order they were stored (``alerts_since``).

``insert_alert`` runs inside the write transaction of the change that raised the alert (on the
charging path), so it is one statement; an alert already stored under the same account and
dedupe key is skipped by the database (``ON CONFLICT DO NOTHING``, which both SQLite and
PostgreSQL run), without failing the transaction around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from creditmeter.alerts import Alert, AlertType, alert_id, data_from_json, data_json
from creditmeter.store.driver import DriverTransaction

ALERT_COLUMNS = "seq, id, account_id, type, dedupe_key, at_us, recorded_at_us, data"
StoredAlert = tuple[int, str, Alert, int]  # (seq, id, the alert, recorded_at_us)


class AlertRecords(DriverTransaction):
    """What a transaction keeps and reads of alerts."""

    def insert_alert(self, alert: Alert, recorded_at_us: int) -> bool:
        """Keep ``alert``; False (and nothing written) when the account already has an alert
        with its dedupe key."""
        m = self._mark
        cursor = self._driver.cursor()
        try:
            cursor.execute(
                "INSERT INTO alerts (id, account_id, type, dedupe_key, at_us, recorded_at_us, data) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT DO NOTHING",
                (alert_id(alert.account_id, alert.dedupe_key), alert.account_id, alert.type.value,
                 alert.dedupe_key, alert.at_us, recorded_at_us, data_json(alert.data)))
            inserted: int = cursor.rowcount
        finally:
            cursor.close()
        assert inserted in (0, 1), inserted
        return inserted == 1

    def alerts_since(self, account_id: str | None, after_seq: int, limit: int) -> list[StoredAlert]:
        """Up to ``limit`` alerts stored after ``after_seq`` (of one account, or of all), oldest
        first: ``(seq, id, alert, recorded_at_us)``."""
        assert limit > 0, limit
        m = self._mark
        where, params = f"seq > {m}", [after_seq]
        if account_id is not None:
            where, params = f"account_id = {m} AND seq > {m}", [account_id, after_seq]  # type: ignore[list-item]
        rows = self._fetch(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {where} ORDER BY seq LIMIT {m}",
                           [*params, limit])
        return [stored_alert(row) for row in rows]


def stored_alert(row: Sequence[Any]) -> StoredAlert:
    """An alert read back from a row of ``ALERT_COLUMNS``."""
    seq, ident, account_id, kind, dedupe_key, at_us, recorded_at_us, data = row
    alert = Alert(account_id, AlertType(kind), dedupe_key, int(at_us), data_from_json(data))
    return int(seq), ident, alert, int(recorded_at_us)
