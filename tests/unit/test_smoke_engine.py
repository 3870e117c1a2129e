"""The engine end to end on a fresh database: charge, hold, settle, balance, reconcile."""

from creditmeter.engine import Engine, Usage
from tests.conftest import at


def test_charge_and_settle_reconcile(engine: Engine) -> None:
    t0 = at("2026-11-01")
    engine.create_account("alice", t0)
    engine.add_grant("alice", 10_000_000, "trial", t0, grant_id="trial")
    charge = engine.record({"id": "e1", "account_id": "alice", "model": "gpt-4o",
                            "input_tokens": 1_000, "output_tokens": 1_000}, t0)
    assert charge.cost_uc == 1_250_000
    hold = engine.reserve("alice", 2_000_000, t0, hold_id="h1")
    assert not isinstance(hold, type(None))
    settled = engine.settle("h1", Usage("gpt-4o", 1_000, 0), t0)
    assert settled.cost_uc == 250_000
    assert engine.balance("alice", t0).available_uc == 10_000_000 - 1_500_000
    assert engine.check_invariants() == []
