"""The JSON form of the engine's results, shared by the CLI and the HTTP API.

Amounts are credits strings in fields ending ``_credits``; instants are ISO 8601 UTC.
"""

from __future__ import annotations

from typing import Any

from creditmeter.domain import Account, Balance, Charge, Hold, Package, Refused, Rejected
from creditmeter.money import format_credits as fc
from creditmeter.store.base import StoredEvent
from creditmeter.timeutil import format_instant


def charge(result: Charge) -> dict[str, Any]:
    return {
        "event_id": result.event_id,
        "status": result.status,
        "account_id": result.account_id,
        "timestamp": format_instant(result.timestamp_us),
        "cost_credits": fc(result.cost_uc),
        "allocations": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)}
                        for p in result.allocations],
        "overage_credits": fc(result.overage_uc),
        "price_version": result.price_version,
        "hold_id": result.hold_id,
    }


def rejected(result: Rejected) -> dict[str, Any]:
    return {"event_id": result.event_id, "status": "rejected",
            "error": {"type": result.error_type, "field": result.field, "message": result.reason}}


def package(p: Package) -> dict[str, Any]:
    g = p.grant
    return {
        "grant_id": g.id, "kind": g.kind.value, "name": g.name, "priority": g.priority,
        "granted_credits": fc(g.amount_uc), "used_credits": fc(p.used_uc),
        "held_credits": fc(p.held_uc), "expired_credits": fc(p.expired_uc),
        "voided_credits": fc(p.voided_uc), "remaining_credits": fc(p.remaining_uc),
        "effective_at": format_instant(g.effective_at_us), "expires_at": format_instant(g.expires_at_us),
        "status": p.status.value,
    }


def balance(b: Balance) -> dict[str, Any]:
    return {
        "account_id": b.account_id, "at": format_instant(b.at_us),
        "available_credits": fc(b.available_uc), "held_credits": fc(b.held_uc),
        "overage_credits": fc(b.overage_uc), "packages": [package(p) for p in b.packages],
    }


def hold(h: Hold) -> dict[str, Any]:
    return {
        "hold_id": h.id, "account_id": h.account_id, "status": h.status.value,
        "amount_credits": fc(h.amount_uc), "expires_at": format_instant(h.expires_at_us),
        "parts": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)} for p in h.parts],
    }


def refused(r: Refused) -> dict[str, Any]:
    return {"status": "refused", "account_id": r.account_id, "reason": r.reason,
            "requested_credits": fc(r.requested_uc), "available_credits": fc(r.available_uc),
            "overage_credits": fc(r.overage_uc)}


def account(a: Account, overage_uc: int) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "kind": a.kind.value,
            "created_at": format_instant(a.created_at_us), "overage_credits": fc(overage_uc)}


def event(stored: StoredEvent) -> dict[str, Any]:
    e, c = stored.event, stored.charge
    return {
        "event_id": e.id, "account_id": e.account_id, "timestamp": format_instant(c.timestamp_us),
        "model": e.model, "input_tokens": e.input_tokens, "output_tokens": e.output_tokens,
        "cached_input_tokens": e.cached_input_tokens, "cache_write_tokens": e.cache_write_tokens,
        "quantities": dict(e.quantities), "metadata": e.metadata,
        "cost_credits": fc(c.cost_uc), "overage_credits": fc(c.overage_uc),
        "allocations": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)}
                        for p in c.allocations],
        "price_version": c.price_version, "hold_id": c.hold_id,
    }
