"""Eight processes at once on one store: charges, reservations and settlements, with the same
events delivered more than once. Nothing is charged twice or lost, nothing is overspent."""

from __future__ import annotations

import random
from typing import Any

import pytest

from creditmeter.domain import Charge, Hold, Rejected
from creditmeter.engine import Engine, Usage
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore
from tests.conftest import EngineFactory, at
from tests.forked import CONTEXT

T0 = at("2026-11-02T10:00")
CREDIT = 1_000_000
WORKERS = 8
ROUNDS = 30


def _worker(url: str, seed: int, accounts: list[str], events: list[dict[str, Any]]) -> list[Any]:
    """Random work; returns what each call answered."""
    rng = random.Random(seed)
    engine = Engine(SqlStore(url))
    answers: list[Any] = []
    try:
        for step in range(ROUNDS):
            now = T0 + step * 1_000
            roll = rng.random()
            if roll < 0.4:  # a batch of events, some of them delivered before by others
                batch = rng.sample(events, 6)
                for result in engine.record_batch(batch, now):
                    answers.append(("event", result.event_id, result.status,
                                    getattr(result, "cost_uc", None),
                                    getattr(result, "allocations", None)))
            else:  # a request in flight: reserve, then settle or release
                account = rng.choice(accounts)
                hold_id = f"h-{seed}-{step}"
                hold = engine.reserve(account, rng.randint(1, 4) * CREDIT, now, hold_id=hold_id)
                if isinstance(hold, Hold):
                    if rng.random() < 0.8:
                        usage = Usage("m", rng.randint(0, 6_000_000))
                        charge = engine.settle(hold_id, usage, now + 10)
                        again = engine.settle(hold_id, usage, now + 20)  # a retried settle
                        assert (again.status, again.cost_uc) == ("duplicate", charge.cost_uc)
                        answers.append(("settle", hold_id, charge.status, charge.cost_uc, None))
                    else:
                        engine.release(hold_id, now + 10)
                        answers.append(("release", hold_id, "released", 0, None))
                else:
                    answers.append(("refused", hold_id, "refused", 0, None))
    finally:
        engine.store.close()
    return answers


@pytest.mark.parametrize("spread", [1, 100], ids=["one-account", "hundred-accounts"])
def test_eight_processes_never_overspend_or_charge_twice(make_engine: EngineFactory, spread: int) -> None:
    engine = make_engine()
    engine.load_prices(parse_catalog({"models": {"m": {"input": 1_000_000, "output": 1_000_000}}}),
                       at("2026-01-01"), T0)
    accounts = [f"acct-{i}" for i in range(spread)]
    for account in accounts:
        engine.create_account(account, T0)
        engine.add_grant(account, 40 * CREDIT, "trial", T0, grant_id=f"{account}-trial",
                         expires_at_us=T0 + 86_400 * CREDIT)
        engine.add_grant(account, 60 * CREDIT, "addon", T0, grant_id=f"{account}-addon")
    rng = random.Random(1)
    events = [{"id": f"evt-{i}", "account_id": rng.choice(accounts), "model": "m",
               "input_tokens": rng.randint(1, 3) * 1_000_000, "timestamp": "2026-11-02T10:00:00Z"}
              for i in range(60)]
    url: str = engine.store.url  # type: ignore[attr-defined]
    with CONTEXT.Pool(WORKERS) as pool:  # forked from a process that has imported creditmeter
        answers = pool.starmap(_worker, [(url, seed, accounts, events) for seed in range(WORKERS)])

    # Every event: charged exactly once, and every duplicate answered the original charge.
    charged: dict[str, tuple[int, Any]] = {}
    for answer in (a for worker in answers for a in worker if a[0] == "event"):
        _, event_id, status, cost, allocations = answer
        assert status in ("charged", "duplicate"), answer
        if status == "charged":
            assert event_id not in charged, f"{event_id} charged twice"
            charged[event_id] = (cost, allocations)
    for answer in (a for worker in answers for a in worker if a[0] == "event" and a[2] == "duplicate"):
        assert charged[answer[1]] == (answer[3], answer[4]), answer
    stored = {e.event.id: e.charge for account in accounts for e in engine.usage(account)}
    assert set(charged) <= set(stored)
    assert all(stored[eid].cost_uc == cost for eid, (cost, _) in charged.items())
    settles = [a for worker in answers for a in worker if a[0] == "settle"]
    assert len({a[1] for a in settles}) == len(settles)
    assert {f"hold:{a[1]}" for a in settles} <= set(stored)

    # No overspend on any package, and the ledger re-derives every figure.
    for account in accounts:
        for package in engine.balance(account, T0 + 10**9).packages:
            assert package.used_uc + package.held_uc <= package.grant.amount_uc
    assert engine.check_invariants() == []
    used = sum(p.used_uc for a in accounts for p in engine.balance(a, T0 + 10**9).packages)
    overage = sum(engine.balance(a, T0 + 10**9).overage_uc for a in accounts)
    assert used + overage == sum(c.cost_uc for c in stored.values())
    assert not any(isinstance(a, Rejected) for a in answers)
    assert all(isinstance(c, Charge) for c in stored.values())
