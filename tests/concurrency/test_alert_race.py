"""Alerts under concurrency (SPEC §13): eight processes charging one account across a threshold at
once raise it exactly once; an account draining under load, its auto top-up answered by every
process at once, buys at most N packs a month, each exactly once."""

from __future__ import annotations

from typing import Any

from creditmeter.engine import Engine
from creditmeter.plans import parse_plans
from creditmeter.store.sql import SqlStore
from tests.conftest import at
from tests.forked import CONTEXT

T0 = at("2026-11-02T10:00")
CREDIT = 1_000_000
WORKERS = 8
PLANS = {"plans": [
    {"id": "pro", "kind": "subscription", "name": "Pro", "credits": 1000, "period": "month",
     "alerts": [{"usage_reached_percent": 80}, {"balance_below": 150}]},
    {"id": "pack", "kind": "addon", "name": "Pack", "credits": 400, "valid_days": 30}]}


def _events(worker: int, count: int, credits: int) -> list[dict[str, Any]]:
    return [{"id": f"w{worker}-e{n}", "account_id": "a", "timestamp": "2026-11-02T10:00:00Z",
             "quantities": {"web_search": credits // 2}} for n in range(count)]


def _charge(url: str, worker: int, count: int, credits: int, buy: bool) -> int:
    """Charge ``count`` events one batch of two at a time; with ``buy``, act as the payment system
    too: answer every top-up request seen with the purchase call (retried by every process)."""
    engine = Engine(SqlStore(url))
    bought = 0
    try:
        events = _events(worker, count, credits)
        for n in range(0, count, 2):
            now = T0 + 1_000  # one instant for all: what one buys is usable by every other at once
            engine.record_batch(events[n:n + 2], now)
            if buy:
                with engine.store.transaction() as tx:
                    requests = [s[2] for s in tx.alerts_since("a", 0, 1000)
                                if s[2].type.value == "topup.requested"]
                for request in requests:
                    engine.purchase("a", "pack", now, order_id=str(request.data["order_id"]))
                    bought += 1
    finally:
        engine.store.close()
    return bought


def _setup(engine: Engine) -> str:
    engine.load_plans(parse_plans(PLANS), T0 - 1)
    engine.create_account("a", T0 - 1)
    engine.subscribe("a", "pro", T0 - 1, subscription_id="s")
    url: str = engine.store.url  # type: ignore[attr-defined]
    return url


def _alerts(engine: Engine, kind: str) -> list[Any]:
    with engine.store.transaction() as tx:
        return [s[2] for s in tx.alerts_since("a", 0, 10_000) if s[2].type.value == kind]


def test_eight_processes_crossing_a_threshold_at_once_raise_it_once(engine: Engine) -> None:
    url = _setup(engine)
    engine.record_batch(_events(99, 1, 790), T0)  # 79% used: the next events cross 80% together
    with CONTEXT.Pool(WORKERS) as pool:
        pool.starmap(_charge, [(url, worker, 4, 4, False) for worker in range(WORKERS)])
    assert engine.balance("a", T0 + 10**8).available_uc == (1000 - 790 - 8 * 4 * 4) * CREDIT
    reached = _alerts(engine, "credits.usage_reached")
    assert [a.dedupe_key for a in reached] == ["usage_reached_percent=80:sub:s@2026-11-02T09:59:59.999999Z"]
    assert len(_alerts(engine, "credits.balance_low")) == 1  # 210 → 82: below 150 once
    assert engine.check_invariants() == []


def test_auto_top_up_under_load_buys_at_most_n_packs_each_once(engine: Engine) -> None:
    url = _setup(engine)
    engine.set_auto_topup("a", {"below": 100, "pack": "pack", "max_per_month": 3}, T0)
    # 8 × 30 events of 10 credits: 2,400 credits against 1,000 and three packs of 400; a fourth
    # crossing comes, but the month's three are used.
    with CONTEXT.Pool(WORKERS) as pool:
        pool.starmap(_charge, [(url, worker, 30, 10, True) for worker in range(WORKERS)])
    requests = _alerts(engine, "topup.requested")
    assert [r.data["count"] for r in requests] == [1, 2, 3]
    orders = {str(r.data["order_id"]) for r in requests}
    packs = [p for p in engine.balance("a", T0 + 10**8).packages if p.grant.source == "purchase:pack"]
    assert sorted(p.grant.id for p in packs) == sorted(f"order:{o}" for o in orders)
    completed = _alerts(engine, "purchase.completed")
    assert sorted(str(c.data["order_id"]) for c in completed) == sorted(orders)
    assert engine.check_invariants() == []
