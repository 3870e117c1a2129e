"""What the engine promises the gateway once an account's credits run out (SPEC §12), as the
gateway uses it: a hold the policy lets run past the credits keeps the invariants (so
``reconcile`` passes), and a fallback's daily cap bounds every fallback hold of the day."""

from __future__ import annotations

import pytest

from creditmeter.domain import Hold, Refused
from creditmeter.engine import Engine, Usage
from tests.conftest import at

CREDIT = 1_000_000  # µc


@pytest.mark.parametrize("policy", [{"overage": "10"}, {"fallback": "demo-small", "daily_cap": 5}])
def test_a_hold_past_the_credits_keeps_the_invariants(engine: Engine, policy: dict[str, object]) -> None:
    """Such a hold holds what the credits cover and leaves the rest uncovered until settle."""
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


def test_the_fallbacks_daily_cap_bounds_every_fallback_hold(engine: Engine) -> None:
    """The credits left cannot pay for the model asked for (demo-large) but do cover the fallback's
    estimate: the fallback's daily cap still counts those holds, and refuses the third."""
    now = at("2026-11-02T09:00")
    engine.create_account("piet", now)
    engine.add_grant("piet", 1 * CREDIT, "package", now)
    engine.set_out_of_credits("piet", {"fallback": "demo-small", "daily_cap": 2}, now)
    outcomes = []
    for n in range(3):
        asked, _ = engine.reserve_estimate("piet", "demo-large", 1_000, 1_000_000, now + n, ttl_s=600,
                                           hold_id=f"ask-{n}")
        assert isinstance(asked, Refused) and asked.fallback_model == "demo-small"
        held, _ = engine.reserve_estimate("piet", "demo-small", 1_000, 1_000, now + n, ttl_s=600,
                                          hold_id=f"ask-{n}", fallback=True)
        outcomes.append(held)
    assert [type(o) for o in outcomes] == [Hold, Hold, Refused]
    assert isinstance(outcomes[2], Refused) and "used up for today (2 requests a day)" in outcomes[2].reason
