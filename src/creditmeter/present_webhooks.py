"""The JSON form of webhook endpoints, deliveries and attempts, shared by the CLI and the HTTP API.

Instants are ISO 8601 UTC; an endpoint's secret is never part of it (it is shown once, when the
endpoint is made).
"""

from __future__ import annotations

from typing import Any

from creditmeter.endpoints import Attempt, Delivery, DeliveryStatus, Endpoint
from creditmeter.timeutil import format_instant


def endpoint(e: Endpoint) -> dict[str, Any]:
    events = None if e.events is None else sorted(t.value for t in e.events)
    return {"id": e.id, "url": e.url, "events": events,
            "description": e.description, "created_at": format_instant(e.created_at_us), "enabled": e.enabled,
            "disabled_at": format_instant(e.disabled_at_us), "disabled_reason": e.disabled_reason,
            "failures": e.failures, "failing_since": format_instant(e.failing_since_us)}


def delivery(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "endpoint_id": d.endpoint_id, "webhook_id": d.alert_id, "type": d.alert_type.value,
            "account_id": d.account_id, "status": d.status.value, "attempts": d.attempts,
            "created_at": format_instant(d.created_at_us),
            "next_attempt_at": format_instant(d.next_at_us) if d.status is DeliveryStatus.PENDING else None,
            "retry_until": format_instant(d.horizon_at_us), "ended_at": format_instant(d.ended_at_us),
            "last_status_code": d.last_status_code, "last_error": d.last_error}


def attempt(a: Attempt) -> dict[str, Any]:
    return {"attempt": a.attempt, "at": format_instant(a.at_us), "status_code": a.status_code,
            "latency_ms": a.latency_ms, "error": a.error}


def delivery_with_attempts(d: Delivery, attempts: list[Attempt]) -> dict[str, Any]:
    return {**delivery(d), "attempt_log": [attempt(a) for a in attempts]}
