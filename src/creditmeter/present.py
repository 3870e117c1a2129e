"""The JSON form of the engine's results, shared by the CLI and the HTTP API.

Amounts are credits strings in fields ending ``_credits``; instants are ISO 8601 UTC.
"""

from __future__ import annotations

import base64
from typing import Any

from creditmeter.allowances import BLOCK, AllowanceStatus, LimitStatus, OutOfCredits, WhenOut
from creditmeter.domain import (
    Account,
    Balance,
    Charge,
    Hold,
    Package,
    PageMark,
    Refused,
    Rejected,
    StoredEvent,
    SummaryRow,
)
from creditmeter.engine import EnterpriseView, TickReport
from creditmeter.enterprise import Member, QuotaAllocation
from creditmeter.errors import InputError
from creditmeter.events import STANDARD_TIER
from creditmeter.keys import ApiKey
from creditmeter.money import format_credits as fc
from creditmeter.notices import Notice, NoticePage
from creditmeter.pricing import PriceBook
from creditmeter.subscriptions import Subscription, SubscriptionStatus
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
    out: dict[str, Any] = {
        "account_id": b.account_id, "at": format_instant(b.at_us),
        "available_credits": fc(b.available_uc), "held_credits": fc(b.held_uc),
        "overage_credits": fc(b.overage_uc),
    }
    if b.period is not None:
        out["period_used_credits"] = fc(b.period.used_uc)
        out["period"] = {"start": format_instant(b.period.start_us), "end": format_instant(b.period.end_us),
                         "basis": b.period.basis}
    out["subscription"] = subscription(b.subscription, b.at_us) if b.subscription is not None else None
    out["packages"] = [package(p) for p in b.packages]
    out["allowances"] = [allowance(a) for a in b.allowances]
    out["limits"] = [limit(s) for s in b.limits]
    out["when_out_of_credits"] = when_out(b.when_out or BLOCK)
    return out


def allowance(a: AllowanceStatus) -> dict[str, Any]:
    """A recurring allowance: its period, when it resets, and this period's package."""
    p: Package = a.package
    return {"id": a.allowance.id or "plan", "name": a.allowance.name, "every": a.allowance.every.text,
            "calendar": a.allowance.calendar, "plan_credits": a.main, "grant_id": p.grant.id,
            "period_start": format_instant(a.period_start_us), "resets_at": format_instant(a.resets_at_us),
            "granted_credits": fc(p.grant.amount_uc), "used_credits": fc(p.used_uc),
            "held_credits": fc(p.held_uc), "remaining_credits": fc(p.remaining_uc)}


def limit(s: LimitStatus) -> dict[str, Any]:
    """A limit with what counts against it now and when it resets."""
    rule = s.rule
    out: dict[str, Any] = {"id": rule.id, "scope": rule.scope.value, "window": rule.window.text,
                           "calendar": rule.window.timezone, "source": rule.source,
                           "limit_credits": fc(rule.credits_uc), "used_credits": fc(s.used_uc),
                           "held_credits": fc(s.held_uc), "remaining_credits": fc(s.remaining_uc),
                           "window_start": format_instant(s.window_start_us),
                           "resets_at": format_instant(s.resets_at_us), "description": rule.describe()}
    if rule.key_id is not None:
        out["key_id"] = rule.key_id
    if rule.enterprise_id is not None:
        out["enterprise_id"] = rule.enterprise_id
    if s.frees_at_us is not None:
        out["frees_at"] = format_instant(s.frees_at_us)
    return out


def when_out(policy: OutOfCredits) -> dict[str, Any]:
    """What happens when credits run out, in fields and in words."""
    out: dict[str, Any] = {"mode": policy.mode.value, "description": policy.describe()}
    if policy.mode is WhenOut.OVERAGE:
        out["overage_cap_credits"] = fc(policy.overage_cap_uc)
    if policy.mode is WhenOut.FALLBACK:
        out["fallback_model"] = policy.fallback_model
        out["daily_cap"] = policy.daily_cap
    return out


def hold(h: Hold) -> dict[str, Any]:
    return {
        "hold_id": h.id, "account_id": h.account_id, "status": h.status.value,
        "amount_credits": fc(h.amount_uc), "expires_at": format_instant(h.expires_at_us),
        "parts": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)} for p in h.parts],
    }


def refused(r: Refused) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": "refused", "code": r.code, "account_id": r.account_id, "reason": r.reason,
        "requested_credits": fc(r.requested_uc), "available_credits": fc(r.available_uc),
        "overage_credits": fc(r.overage_uc)}
    if r.limit is not None:
        out["limit"] = limit(r.limit)
    if r.fallback_model is not None:
        out["fallback_model"] = r.fallback_model
    return out


def account(a: Account, overage_uc: int) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "kind": a.kind.value,
            "created_at": format_instant(a.created_at_us), "overage_credits": fc(overage_uc)}


def key(k: ApiKey) -> dict[str, Any]:
    return {"key_id": k.id, "prefix": k.prefix, "role": k.role.value, "account_id": k.account_id,
            "name": k.name, "created_at": format_instant(k.created_at_us),
            "revoked_at": format_instant(k.revoked_at_us)}


def summary_row(row: SummaryRow, group_by: str) -> dict[str, Any]:
    return {
        group_by: format_instant(row.key)[:10] if group_by == "day" else row.key,  # type: ignore[index]
        "requests": row.requests, "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
        "cached_input_tokens": row.cached_input_tokens, "cache_write_tokens": row.cache_write_tokens,
        "reasoning_tokens": row.reasoning_tokens, "cache_write_1h_tokens": row.cache_write_1h_tokens,
        "used_credits": fc(row.cost_uc),
    }


def event(stored: StoredEvent) -> dict[str, Any]:
    e, c = stored.event, stored.charge
    return {
        "event_id": e.id, "account_id": e.account_id, "timestamp": format_instant(c.timestamp_us),
        "model": e.model, "input_tokens": e.input_tokens, "output_tokens": e.output_tokens,
        "cached_input_tokens": e.cached_input_tokens, "cache_write_tokens": e.cache_write_tokens,
        "reasoning_tokens": e.reasoning_tokens, "cache_write_1h_tokens": e.cache_write_1h_tokens,
        "service_tier": e.service_tier or STANDARD_TIER, "quantities": dict(e.quantities),
        "metadata": e.metadata,
        "cost_credits": fc(c.cost_uc), "overage_credits": fc(c.overage_uc),
        "allocations": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)}
                        for p in c.allocations],
        "price_version": c.price_version, "hold_id": c.hold_id,
    }


def prices(book: PriceBook, at_us: int) -> dict[str, Any]:
    current = book.at(at_us)
    return {
        "at": format_instant(at_us),
        "current_version": current.version if current else None,
        "versions": [{"version": v.version, "effective_at": format_instant(v.effective_at_us),
                      "models": len(v.catalog.models), "features": len(v.catalog.features)}
                     for v in book.versions],
        "catalog": current.catalog.to_dict() if current else None,
    }


def tick(report: TickReport, at_us: int) -> dict[str, Any]:
    return {"at": format_instant(at_us), "subscriptions_renewed": report.renewed,
            "accounts": report.accounts, "holds_expired": report.holds_expired, "entries": report.entries}


def subscription(sub: Subscription, at_us: int) -> dict[str, Any]:
    index = sub.index_at(at_us)
    start, end = sub.period(index) if index is not None else (None, None)
    status = sub.status(at_us)
    return {
        "subscription_id": sub.id, "account_id": sub.account_id, "plan_id": sub.plan.id,
        "plan_name": sub.plan.name, "kind": sub.plan.kind.value, "status": status.value,
        "seats": sub.seats, "allowance_credits": fc(sub.allowance_uc),
        "period": sub.plan.period.value if sub.plan.period else None,
        "started_at": format_instant(sub.anchor_us),
        "current_period": {"start": format_instant(start), "end": format_instant(end)} if start else None,
        "renews_at": format_instant(end) if status is SubscriptionStatus.ACTIVE and sub.recurring else None,
        "ends_at": format_instant(sub.ends_at_us),
        "cancelled_at": format_instant(sub.cancelled_at_us),
    }


def member_quota(packages: list[Package]) -> dict[str, Any]:
    return {"quota_credits": fc(sum(p.grant.amount_uc for p in packages)),
            "used_credits": fc(sum(p.used_uc for p in packages)),
            "held_credits": fc(sum(p.held_uc for p in packages)),
            "remaining_credits": fc(sum(p.remaining_uc for p in packages)),
            "expired_credits": fc(sum(p.expired_uc for p in packages)),
            "returned_credits": fc(sum(p.voided_uc for p in packages))}


def allocation(a: QuotaAllocation) -> dict[str, Any]:
    return {"allocation_id": a.id, "enterprise_id": a.enterprise_id, "account_id": a.member_id,
            "amount_credits": fc(a.amount_uc), "created_at": format_instant(a.created_at_us),
            "revoked_at": format_instant(a.revoked_at_us), "returned_credits": fc(a.returned_uc),
            "parts": [{"grant_id": p.grant_id, "amount_credits": fc(p.amount_uc)} for p in a.parts]}


def member(m: Member) -> dict[str, Any]:
    return {"enterprise_id": m.enterprise_id, "account_id": m.account_id, "role": m.role.value,
            "added_at": format_instant(m.added_at_us)}


def enterprise(view: EnterpriseView) -> dict[str, Any]:
    roles = {m.account_id: m for m in view.members}
    members = []
    for member_id in sorted(set(roles) | set(view.quota)):
        packages = view.quota.get(member_id, [])
        members.append({"account_id": member_id,
                        "role": roles[member_id].role.value if member_id in roles else None,
                        **member_quota(packages), "packages": [package(p) for p in packages]})
    pool = balance(view.pool)
    pool["allocated_credits"] = fc(view.allocated_uc)
    pool["members_used_credits"] = fc(view.members_used_uc)
    return {"enterprise_id": view.account.id, "name": view.account.name,
            "pool": pool, "members": members,
            "allocations": [allocation(a) for a in view.allocations]}


def cursor(mark: PageMark | None) -> str | None:
    """A page mark as the opaque ``cursor`` text the API and the console give out."""
    if mark is None:
        return None
    raw = f"{mark.ts_us}.{mark.seq}.{mark.max_seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_mark(text: str | None) -> PageMark | None:
    """The page mark a ``cursor`` stands for (None for none); any other text is refused."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 200:
        raise InputError("cursor", "is not a cursor this API gave out")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        ts, seq, max_seq = (int(part) for part in decoded.split("."))
    except (ValueError, UnicodeDecodeError):
        raise InputError("cursor", "is not a cursor this API gave out") from None
    if min(ts, seq, max_seq) < 0:
        raise InputError("cursor", "is not a cursor this API gave out")
    return PageMark(ts, seq, max_seq)


def notice(account_id: str, n: Notice) -> dict[str, Any]:
    """A notice as the API and ``--json`` give it: the alert (as its webhooks carry it), the
    reader's read mark, its words, and its ``seq`` (the paging cursor)."""
    return {"id": n.id, "seq": n.seq, "type": n.type.value, "timestamp": format_instant(n.at_us),
            "account_id": account_id, "data": dict(n.data), "read": n.read, "text": n.text}


def notice_page(account_id: str, page: NoticePage) -> dict[str, Any]:
    return {"notifications": [notice(account_id, n) for n in page.notices], "unread": page.unread,
            "next_before": page.next_before}
