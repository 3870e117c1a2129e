"""A state machine over every ledger operation, checked against the naive oracle after each step.

Rules: add_grant (every kind, with or without expiry, effective time, priority; some invalid),
void_grant, record / record_batch (late timestamps inside and outside the lateness window,
replays with the same or another body), reserve, settle (less or more than held, after the ttl),
release, tick, and time passing. After each step every package (used, held, expired, voided,
remaining, status) and the account's available / held / overage equal the oracle's, now and a
day ahead, and ``check_invariants()`` is empty.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import EngineFactory
from tests.properties.oracle import Ev
from tests.properties.test_properties import (
    DAY,
    US,
    Driver,
    U,
    event_specs,
    grant_args,
    kinds,
    time_steps,
)


class LedgerMachine(RuleBasedStateMachine):
    factory: EngineFactory  # a fresh engine on a fresh database of the store under test

    def __init__(self) -> None:
        super().__init__()
        self.driver = Driver(LedgerMachine.factory())

    def teardown(self) -> None:
        LedgerMachine.factory.close()  # and gives the database back for the next run

    @initialize(grants=st.lists(grant_args, min_size=1, max_size=4), amounts=st.tuples(
        st.integers(100, 1500), st.integers(100, 1500)))
    def start_with_credits(self, grants: list[dict[str, object]], amounts: tuple[int, int]) -> None:
        for account, amount in zip(("a", "b"), amounts, strict=True):
            self.driver.grant(account, amount, "subscription", expires=144 * U)
        for args in grants:
            self.driver.grant(**args)  # type: ignore[arg-type]

    @rule(args=grant_args)
    def add_grant(self, args: dict[str, object]) -> None:
        self.driver.grant(**args)  # type: ignore[arg-type]

    @rule(account=st.sampled_from(["a", "b"]), kind=kinds, back=st.integers(0, 50),
          amount=st.integers(1, 300))
    def add_grant_invalid_or_backdated(self, account: str, kind: str, back: int, amount: int) -> None:
        """Backdated effective time (late events may use it), or an expiry already past (refused)."""
        self.driver.grant(account, amount, kind, expires=-back * U if back % 3 == 0 else back * U + U,
                          effective=-(back + 1) * U)

    @precondition(lambda self: self.driver.grants)
    @rule(pick=st.integers(0, 10**6))
    def void_grant(self, pick: int) -> None:
        self.driver.void(self.driver.grants[pick % len(self.driver.grants)])

    @rule(specs=st.lists(event_specs(st.sampled_from(["a", "a", "b", "ghost"])), min_size=1, max_size=5),
          batch=st.booleans())
    def record(self, specs: list, batch: bool) -> None:  # type: ignore[type-arg]
        self.driver.record([make(self.driver) for make in specs], batch=batch or len(specs) > 1)

    @precondition(lambda self: self.driver.events)
    @rule(pick=st.integers(0, 10**6), how=st.sampled_from(["same", "same", "tokens", "model"]),
          batch=st.booleans())
    def replay(self, pick: int, how: str, batch: bool) -> None:
        events = self.driver.events
        e: Ev = events[sorted(events)[pick % len(events)]]
        if how == "tokens":
            e = replace(e, output_tokens=e.output_tokens + 1)
        elif how == "model":
            e = replace(e, model="x" if e.model == "m" else "m")
        (result,) = self.driver.record([e], batch=batch)
        assert result.status == ("duplicate" if how == "same" else "rejected"), result

    @rule(account=st.sampled_from(["a", "b"]), amount=st.integers(1, 200),
          ttl=st.sampled_from([None, 60, 600, 1800, 7200]))
    def reserve(self, account: str, amount: int, ttl: int | None) -> None:
        self.driver.reserve(account, amount, ttl)

    @precondition(lambda self: self.driver.holds)
    @rule(pick=st.integers(0, 10**6), model=st.sampled_from(["m", "m", "m", "x"]),
          inp=st.integers(0, 400), out=st.integers(0, 60))
    def settle(self, pick: int, model: str, inp: int, out: int) -> None:
        self.driver.settle(self.driver.holds[pick % len(self.driver.holds)], model, inp, out)

    @precondition(lambda self: self.driver.holds)
    @rule(pick=st.integers(0, 10**6))
    def release(self, pick: int) -> None:
        self.driver.release(self.driver.holds[pick % len(self.driver.holds)])

    @rule()
    def tick(self) -> None:
        self.driver.tick()

    @rule(step=st.one_of(time_steps, st.sampled_from([1, 59 * US, 60 * US, 7 * DAY])))
    def time_passes(self, step: int) -> None:
        self.driver.now += step

    @invariant()
    def agrees_with_oracle(self) -> None:
        self.driver.check(later=DAY)


def test_ledger_state_machine(make_engine: EngineFactory, store_kind: str) -> None:
    LedgerMachine.factory = make_engine
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=40 if store_kind == "sqlite" else 25, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
