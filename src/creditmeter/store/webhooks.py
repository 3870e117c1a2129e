"""Webhook endpoints and the delivery log in a SQL transaction: adding, listing, removing and
re-enabling endpoints; reading deliveries and their attempts; replaying a delivery.

What delivery workers do (routing alerts to endpoints, taking due deliveries, recording what an
attempt gave) is in ``store/deliveries.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from creditmeter.alerts import AlertType
from creditmeter.endpoints import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    events_from_json,
    events_json,
)
from creditmeter.store.driver import DriverTransaction

ENDPOINT_SELECT = ("id, url, events, description, created_at_us, disabled_at_us, disabled_reason, "
                   "failures, failing_since_us")
DELIVERY_SELECT = ("d.id, d.endpoint_id, d.alert_id, a.type, a.account_id, d.status, d.attempts, "
                   "d.created_at_us, d.next_at_us, d.horizon_at_us, d.ended_at_us, d.last_status_code, "
                   "d.last_error")
DELIVERY_FROM = "webhook_deliveries d JOIN alerts a ON a.seq = d.alert_seq"
REPLAY = "replay:"  # a lease token so marked: the delivery was replayed while its attempt was in flight
ATTEMPT_SELECT = "delivery_id, attempt, at_us, status_code, latency_ms, error"


class WebhookRecords(DriverTransaction):
    """What a transaction keeps and reads of webhook endpoints and deliveries."""

    def _run(self, sql: str, params: Sequence[Any] | list[Sequence[Any]] = ()) -> int:
        """Run a write (for each row of a list of rows); the rows it changed."""
        if isinstance(params, list) and not params:
            return 0
        return int(self.conn.exec_driver_sql(sql, params).rowcount)

    # -- endpoints ---------------------------------------------------------------------------

    def insert_endpoint(self, endpoint: Endpoint, secret: str) -> None:
        """Keep a new endpoint; it receives the alerts recorded from its ``created_at_us`` on."""
        m = self._mark
        self._run(
            "INSERT INTO webhook_endpoints (id, url, events, description, secret, created_at_us, failures) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m}, 0)",
            (endpoint.id, endpoint.url, events_json(endpoint.events), endpoint.description, secret,
             endpoint.created_at_us))

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = self._fetch(f"SELECT {ENDPOINT_SELECT} FROM webhook_endpoints WHERE id = {self._mark}",
                           (endpoint_id,))
        return _endpoint(rows[0]) if rows else None

    def list_endpoints(self) -> list[Endpoint]:
        rows = self._fetch(f"SELECT {ENDPOINT_SELECT} FROM webhook_endpoints ORDER BY created_at_us, id", ())
        return [_endpoint(row) for row in rows]

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove an endpoint with its deliveries and their attempts; False if there was none."""
        m = self._mark
        self._run("DELETE FROM webhook_attempts WHERE delivery_id IN "
                  f"(SELECT id FROM webhook_deliveries WHERE endpoint_id = {m})", (endpoint_id,))
        self._run(f"DELETE FROM webhook_deliveries WHERE endpoint_id = {m}", (endpoint_id,))
        return self._run(f"DELETE FROM webhook_endpoints WHERE id = {m}", (endpoint_id,)) == 1

    def enable_endpoint(self, endpoint_id: str, at_us: int) -> None:
        """Enable an endpoint again, its run of failures forgotten; what it still had pending is
        due at once."""
        m = self._mark
        self._run("UPDATE webhook_endpoints SET disabled_at_us = NULL, disabled_reason = NULL, "
                  f"failures = 0, failing_since_us = NULL WHERE id = {m}", (endpoint_id,))
        self._run(f"UPDATE webhook_deliveries SET next_at_us = {m} WHERE endpoint_id = {m} "
                  f"AND status = 'pending' AND next_at_us > {m} AND lease_token IS NULL",
                  (at_us, endpoint_id, at_us))

    def endpoint_secret(self, endpoint_id: str) -> str | None:
        rows = self._fetch(f"SELECT secret FROM webhook_endpoints WHERE id = {self._mark}", (endpoint_id,))
        return str(rows[0][0]) if rows else None

    # -- the delivery log --------------------------------------------------------------------

    def list_deliveries(self, endpoint_id: str, limit: int, before: str | None = None) -> list[Delivery]:
        """An endpoint's deliveries, newest first; ``before``: only those made before that one."""
        m = self._mark
        where, params = f"d.endpoint_id = {m}", [endpoint_id]
        if before is not None:
            where += f" AND d.seq < (SELECT seq FROM webhook_deliveries WHERE id = {m})"
            params.append(before)
        rows = self._fetch(f"SELECT {DELIVERY_SELECT} FROM {DELIVERY_FROM} WHERE {where} "
                           f"ORDER BY d.seq DESC LIMIT {m}", [*params, limit])
        return [_delivery(row) for row in rows]

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = self._fetch(f"SELECT {DELIVERY_SELECT} FROM {DELIVERY_FROM} WHERE d.id = {self._mark}",
                           (delivery_id,))
        return _delivery(rows[0]) if rows else None

    def list_attempts(self, delivery_id: str) -> list[Attempt]:
        rows = self._fetch(f"SELECT {ATTEMPT_SELECT} FROM webhook_attempts WHERE delivery_id = {self._mark} "
                           "ORDER BY seq", (delivery_id,))
        return [Attempt(*row) for row in rows]

    def replay_delivery(self, delivery_id: str, at_us: int, horizon_at_us: int) -> None:
        """Make a delivery pending again, due at ``at_us``, retried until ``horizon_at_us``. One
        being sent now (leased) stays its worker's until that attempt's result, which then makes
        it due at once whatever it was: its lease token is marked ``replay:`` so the result knows
        (and no other worker sends it meanwhile)."""
        m = self._mark
        self._run("UPDATE webhook_deliveries SET status = 'pending', ended_at_us = NULL, "
                  f"horizon_at_us = {m}, "
                  f"lease_token = CASE WHEN lease_token IS NOT NULL AND next_at_us > {m} "
                  f"AND lease_token NOT LIKE {m} THEN {m} || lease_token ELSE lease_token END, "
                  f"next_at_us = CASE WHEN lease_token IS NOT NULL AND next_at_us > {m} THEN next_at_us "
                  f"ELSE {m} END WHERE id = {m}",
                  (horizon_at_us, at_us, REPLAY + "%", REPLAY, at_us, at_us, delivery_id))


def _endpoint(row: Sequence[Any]) -> Endpoint:
    ident, url, events, description, created, disabled, reason, failures, since = row
    return Endpoint(ident, url, events_from_json(events), description, int(created), disabled, reason,
                    int(failures), since)


def _delivery(row: Sequence[Any]) -> Delivery:
    (ident, endpoint_id, alert_id, kind, account_id, status, attempts, created, next_at, horizon, ended,
     code, error) = row
    return Delivery(ident, endpoint_id, alert_id, AlertType(kind), account_id, DeliveryStatus(status),
                    int(attempts), int(created), int(next_at), int(horizon), ended, code, error)
