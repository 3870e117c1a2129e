"""Holds that the account's policy lets run past its credits (``overage`` up to a cap, or a
``fallback`` model) hold what the credits cover and leave the rest uncovered until settle: the
invariants (and so ``reconcile``) take such a hold as it is, open and once settled."""

from __future__ import annotations

import pytest

from creditmeter.domain import Hold
from creditmeter.engine import Engine, Usage
from tests.conftest import at

CREDIT = 1_000_000  # µc


@pytest.mark.parametrize("policy", [{"overage": "10"}, {"fallback": "demo-small", "daily_cap": 5}])
def test_a_hold_past_the_credits_keeps_the_invariants(engine: Engine, policy: dict[str, object]) -> None:
    now = at("2026-11-02T09:00")
    engine.create_account("olga", now)
    engine.add_grant("olga", 1 * CREDIT, "package", now)
    engine.set_out_of_credits("olga", policy, now)
    if "overage" in policy:
        hold = engine.reserve("olga", 3 * CREDIT, now, ttl_s=600, hold_id="past-credits")
    else:
        hold, _ = engine.reserve_estimate("olga", "demo-small", 1_000_000, 1_000_000, now, ttl_s=600,
                                          hold_id="past-credits", fallback=True)
    assert isinstance(hold, Hold), hold
    assert sum(p.amount_uc for p in hold.parts) == 1 * CREDIT < hold.amount_uc
    assert engine.check_invariants() == []  # open, partly uncovered
    engine.settle("past-credits", Usage("demo-small", 1_000, 1_000), now + 1_000_000)
    assert engine.check_invariants() == []  # settled: what the credits did not cover is overage
