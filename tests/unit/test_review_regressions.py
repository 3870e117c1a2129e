"""Defects found in review, each pinned by a test."""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Any

import pytest

from creditmeter.domain import Hold, Rejected
from creditmeter.engine import Engine, Settings, Usage
from creditmeter.errors import Conflict, InputError, NotFound, Unavailable
from creditmeter.ingest import write_csv
from creditmeter.money import parse_credits
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.base import StaleWrite
from tests.conftest import EngineFactory, at

CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")


def _setup(engine: Engine) -> None:
    engine.create_account("a", T0)
    engine.add_grant("a", 10 * CREDIT, "addon", T0, grant_id="g")


@pytest.mark.parametrize("commit", [False, True], ids=["then-commit", "commit-with-write"])
def test_a_book_written_meanwhile_by_another_writer_is_refused_not_overwritten(engine: Engine,
                                                                               commit: bool) -> None:
    """Also when the write commits the transaction itself (PostgreSQL: in its pipeline, after
    the version's write checked it in the server): nothing of it is committed."""
    _setup(engine)
    with engine.store.transaction(write=True) as tx:
        stale = tx.load_books(["a"])["a"]
    engine.record({"id": "e1", "account_id": "a", "model": "gpt-4o", "input_tokens": 1000}, T0)
    stale.advance(T0)
    hold = stale.reserve("h", 10 * CREDIT, 60, T0)  # would overspend: e1 already used some
    assert isinstance(hold, Hold)
    with pytest.raises(StaleWrite), engine.store.transaction(write=True) as tx:
        tx.persist([stale], T0, commit=commit)
    assert engine.balance("a", T0).held_uc == 0
    with engine.store.transaction() as tx:
        assert tx.get_hold("h") is None
    assert engine.check_invariants() == []


class _FlakyStore:
    """A store whose first ``failures`` write transactions lose a race (StaleWrite)."""

    def __init__(self, store: Any, failures: int) -> None:
        self._store, self.failures, self.url = store, failures, store.url

    @contextmanager
    def transaction(self, write: bool = False):  # noqa: ANN201
        with self._store.transaction(write) as tx:
            yield tx
            if write and self.failures > 0:
                self.failures -= 1
                raise StaleWrite("simulated")

    def upgrade(self) -> None:
        self._store.upgrade()

    def close(self) -> None:
        self._store.close()


def test_a_lost_race_is_retried_whole_and_charges_once(engine: Engine) -> None:
    _setup(engine)
    flaky = Engine(_FlakyStore(engine.store, failures=2), engine.settings)  # type: ignore[arg-type]
    charge = flaky.record({"id": "e1", "account_id": "a", "model": "gpt-4o", "input_tokens": 1000}, T0)
    assert charge.status == "charged"
    assert [e.event.id for e in engine.usage("a")] == ["e1"]
    assert engine.check_invariants() == []


def test_a_race_lost_every_time_is_unavailable_and_writes_nothing(engine: Engine) -> None:
    _setup(engine)
    flaky = Engine(_FlakyStore(engine.store, failures=99), Settings(write_attempts=3))  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        flaky.record({"id": "e1", "account_id": "a", "model": "gpt-4o", "input_tokens": 1000}, T0)
    assert list(engine.usage("a")) == []


def test_a_lapsed_hold_is_settled_once_only(engine: Engine) -> None:
    _setup(engine)
    assert isinstance(engine.reserve("a", 1 * CREDIT, T0, ttl_s=60, hold_id="H"), Hold)
    late = T0 + 120 * CREDIT  # two minutes later (µs)
    first = engine.settle("H", Usage("gpt-4o", 1000), late, event_id="req-1")
    assert first.status == "charged" and first.hold_id == "H"
    with pytest.raises(Conflict, match="already settled"):
        engine.settle("H", Usage("gpt-4o", 3000), late, event_id="req-2")
    assert engine.settle("H", Usage("gpt-4o", 1000), late, event_id="req-1").status == "duplicate"
    with pytest.raises(Conflict):
        engine.release("H", late)
    assert [e.event.id for e in engine.usage("a")] == ["req-1"]
    assert engine.check_invariants() == []


def test_a_grant_retried_later_with_the_same_key_answers_the_same_package(engine: Engine) -> None:
    engine.create_account("a", T0)
    first = engine.add_grant("a", 100 * CREDIT, "addon", T0, expires_at_us=at("2026-11-03"),
                             grant_id="order-42")
    again = engine.add_grant("a", 100 * CREDIT, "addon", T0 + 1_000_000, expires_at_us=at("2026-11-03"),
                             grant_id="order-42")
    assert again.grant == first.grant
    after_expiry = engine.add_grant("a", 100 * CREDIT, "addon", at("2026-11-04"),
                                    expires_at_us=at("2026-11-03"), grant_id="order-42")
    assert after_expiry.grant.id == "order-42"
    with pytest.raises(Conflict):
        engine.add_grant("a", 101 * CREDIT, "addon", T0, expires_at_us=at("2026-11-03"), grant_id="order-42")
    assert len(engine.balance("a", T0).packages) == 1


def test_an_event_that_would_overflow_the_overage_is_rejected_alone(make_engine: EngineFactory) -> None:
    engine = make_engine()
    engine.load_prices(parse_catalog({"models": {"m": {"input": 1, "output": 1}},
                                      "features": {"huge": 10**12}}), at("2026-01-01"), T0)
    engine.create_account("s", T0)
    engine.create_account("v", T0)
    events: list[dict[str, object]] = [{"id": f"s{i}", "account_id": "s", "quantities": {"huge": 1}}
                                       for i in range(3)]
    events.append({"id": "v1", "account_id": "v", "model": "m", "input_tokens": 5})
    results = engine.record_batch(events, T0)
    assert [r.status for r in results] == ["charged", "rejected", "rejected", "charged"]
    assert isinstance(results[1], Rejected) and results[1].field == "event"
    assert engine.check_invariants() == []


@pytest.mark.parametrize("text", ["1e999999", "-1e999999", "1e-999999999", "0E-1000000000"])
def test_extreme_exponents_are_input_errors(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_credits(text, "amount")
    assert info.value.field == "amount"


def test_an_extreme_yaml_price_names_its_field() -> None:
    with pytest.raises(InputError) as info:
        parse_catalog(load_yaml("models:\n  m:\n    input: 1.0e+999999\n    output: 1\n"))
    assert info.value.field == "models.m.input"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"expires_at_us": 2**63}, "expires"),
    ({"expires_at_us": 1.5e15}, "expires"),
    ({"effective_at_us": -(2**64)}, "effective"),
    ({"name": 123}, "name"),
])
def test_library_arguments_are_checked(engine: Engine, kwargs: dict[str, Any], field: str) -> None:
    engine.create_account("a", T0)
    with pytest.raises(InputError) as info:
        engine.add_grant("a", CREDIT, "addon", T0, **kwargs)
    assert info.value.field == field
    assert engine.balance("a", T0).packages == ()


def test_library_account_checks(engine: Engine) -> None:
    with pytest.raises(InputError):
        engine.create_account("a", T0, name=5)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        engine.reserve(["x"], CREDIT, T0)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        engine.usage("nobody")  # raised at once, not on first iteration


@pytest.mark.parametrize("quantities", [0, [], "", False])
def test_quantities_must_be_an_object(engine: Engine, quantities: object) -> None:
    _setup(engine)
    with pytest.raises(InputError) as info:
        engine.record({"id": "q", "account_id": "a", "model": "gpt-4o", "quantities": quantities}, T0)
    assert info.value.field == "quantities"


def test_producer_ids_may_not_take_the_settlement_prefix(engine: Engine) -> None:
    _setup(engine)
    with pytest.raises(InputError) as info:
        engine.record({"id": "hold:H1", "account_id": "a", "model": "gpt-4o", "input_tokens": 1}, T0)
    assert info.value.field == "id"
    assert isinstance(engine.reserve("a", CREDIT, T0, hold_id="H1"), Hold)
    assert engine.settle("H1", Usage("gpt-4o", 10), T0).event_id == "hold:H1"


def _sql(engine: Engine, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Edit the database behind the engine's back (to forge a corrupt ledger)."""
    store: Any = engine.store
    mark = "?" if store.is_sqlite else "%s"
    with store.engine.begin() as conn:
        for sql, params in statements:
            conn.exec_driver_sql(sql.replace("?", mark), params)


def test_reconcile_sees_a_part_paid_from_another_accounts_grant(engine: Engine) -> None:
    _setup(engine)
    engine.create_account("b", T0)
    engine.add_grant("b", 10 * CREDIT, "addon", T0, grant_id="gb")
    engine.record({"id": "e1", "account_id": "a", "model": "gpt-4o", "input_tokens": 1000}, T0)
    used = engine.balance("a", T0).packages[0].used_uc
    _sql(engine,  # move the part to bob's grant, counters kept consistent
         ("UPDATE events SET allocations = replace(allocations, '\"g\"', '\"gb\"')", ()),
         ("UPDATE grants SET used_uc = ? WHERE id = 'gb'", (used,)),
         ("UPDATE grants SET used_uc = 0 WHERE id = 'g'", ()))
    problems = engine.check_invariants()
    assert any("'gb'" in p and "'a'" in p for p in problems), problems


def test_reconcile_sees_an_expiry_recorded_on_a_live_grant(engine: Engine) -> None:
    _setup(engine)
    _sql(engine, ("INSERT INTO entries (account_id, grant_id, kind, amount_uc, at_us, note, recorded_at_us) "
                  "VALUES ('a', 'g', 'expire', 0, ?, 'forged', ?)", (T0, T0)))
    assert any("expiry was recorded" in p for p in engine.check_invariants())


def test_csv_cells_that_look_like_formulas_are_quoted(engine: Engine) -> None:
    _setup(engine)
    engine.record({"id": "=HYPERLINK(1)", "account_id": "a", "model": "gpt-4o", "input_tokens": 1}, T0)
    out = io.StringIO()
    write_csv(engine.usage("a"), out)
    assert "'=HYPERLINK(1)" in out.getvalue()


# -- enterprise allocation ids cannot reach other tenants' packages ------------------------------

def test_an_allocation_id_cannot_take_or_probe_another_tenants_package_id(engine) -> None:  # type: ignore[no-untyped-def]
    from creditmeter.enterprise import allocation_grant_id

    t = at("2026-11-10T12:00:00Z")
    for account, kind in (("acme", "enterprise"), ("globex", "enterprise"), ("ada", "user"),
                          ("newuser", "user"), ("carol", "user")):
        engine.create_account(account, t, kind=kind)
    for ent in ("acme", "globex"):
        engine.add_grant(ent, 1_000 * 1_000_000, "package", t, grant_id=f"pool-{ent}")
        engine.add_member(ent, "ada", t)
    engine.allocate("globex", "ada", 5_000_000, t, allocation_id="secret")
    engine.subscribe("carol", "professional-monthly", t, subscription_id="sub-carol")
    # acme's allocations named like other objects' ids: each is acme's own, nothing collides.
    for key in ("secret", "trial:newuser", "order:pay_999", "sub:sub-carol@2026-12-10T12:00:00Z"):
        package = engine.allocate("acme", "ada", 1_000_000, t + 1, allocation_id=key)
        assert package.grant.id == allocation_grant_id("acme", key)
    assert engine.subscribe("newuser", "trial", t + 2).plan.id == "trial"
    assert engine.purchase("newuser", "addon-1000", t + 2, order_id="pay_999").grant.id == "order:pay_999"
    report = engine.tick(at("2026-12-11T00:00:00Z"))
    assert report.renewed == 1
    assert engine.check_invariants() == []


def test_a_key_looked_up_before_a_revoke_is_not_cached_after_it() -> None:
    from creditmeter.keys import Principal, Role
    from creditmeter.web.access import KeyCache

    cache = KeyCache(30)
    who = Principal(Role.ACCOUNT, "alice", "key_1")
    generation = cache.generation  # a lookup starts …
    cache.clear()                  # … a revoke clears the cache meanwhile …
    cache.put("digest", who, generation)  # … and the lookup's answer is not kept
    assert cache.get("digest") is None
    cache.put("digest", who, cache.generation)
    assert cache.get("digest") == who
