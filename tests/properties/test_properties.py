"""Properties of the ledger over random grants, events, holds and times (SPEC §4-§6).

Every operation is done on the engine and on the naive oracle (``oracle.py``); after each one the
balances must agree, every package must satisfy granted = used + held + expired + voided +
remaining with nothing negative, and ``check_invariants()`` must be empty.

Amounts are tiny (a few hundred µc) so that grants run out, overlap and expire all the time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from creditmeter.domain import Balance, Charge, GrantKind, Hold, Refused, Rejected
from creditmeter.engine import Engine, Settings, Usage
from creditmeter.errors import Conflict, CreditmeterError
from creditmeter.pricing import parse_catalog
from creditmeter.timeutil import format_instant
from tests.conftest import Engines, at
from tests.properties.oracle import NEVER, Ev, OBalance, OCharge, OPackage, Oracle, Price

US = 1_000_000
U = 600 * US                  # the time grid: 10 minutes (so instants collide often)
DAY = 86_400 * US
T0 = at("2026-11-01T00:00")
ACCOUNTS = ("a", "b")

# Version 1: input 1.5 µc/token (rounding up matters), output 2 µc/token, feature f 10 µc/unit.
# Version 2, from T0 + 2 days: input 2, output 3. An event is priced at its own timestamp.
CATALOGS = [
    (T0 - 30 * DAY, parse_catalog({"models": {"m": {"input": "1.5", "output": 2}},
                                   "features": {"f": "0.00001"}})),
    (T0 + 2 * DAY, parse_catalog({"models": {"m": {"input": 2, "output": 3}},
                                  "features": {"f": "0.00001"}})),
]
PRICES = [Price(1, T0 - 30 * DAY, {"m": (1_500_000, 2_000_000)}, {"f": 10}),
          Price(2, T0 + 2 * DAY, {"m": (2_000_000, 3_000_000)}, {"f": 10})]

SETTINGS = settings(max_examples=60, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# -- glue between the engine and the oracle ------------------------------------------------------

def event_json(e: Ev) -> dict[str, object]:
    body: dict[str, object] = {"id": e.id, "account_id": e.account,
                               "input_tokens": e.input_tokens, "output_tokens": e.output_tokens}
    if e.model is not None:
        body["model"] = e.model
    if e.ts is not None:
        body["timestamp"] = format_instant(e.ts)
    if e.quantities:
        body["quantities"] = dict(e.quantities)
    return body


def norm(result: Charge | Rejected) -> OCharge | str:
    """An engine result in the oracle's terms (a rejection is its error kind)."""
    if isinstance(result, Rejected):
        return result.error_type
    assert result.price_version is not None
    return OCharge(result.status, result.cost_uc,
                   tuple((p.grant_id, p.amount_uc) for p in result.allocations),
                   result.overage_uc, result.price_version, result.timestamp_us)


def snap(balance: Balance) -> OBalance:
    packages = {p.grant.id: OPackage(p.grant.id, p.used_uc, p.held_uc, p.expired_uc, p.voided_uc,
                                     p.remaining_uc, p.status.value) for p in balance.packages}
    return OBalance(balance.available_uc, balance.held_uc, balance.overage_uc, packages)


def order_key(p_grant: object) -> tuple[int, int, int, int]:
    """The SPEC's burn-down order, written again here (not imported from the engine)."""
    g = p_grant
    expires = NEVER if g.expires_at_us is None else g.expires_at_us  # type: ignore[attr-defined]
    return (g.priority, expires, g.effective_at_us, g.seq)  # type: ignore[attr-defined]


def check_balance(balance: Balance) -> None:
    """(a) conservation per package and (b) nothing negative."""
    for p in balance.packages:
        figures = (p.used_uc, p.held_uc, p.expired_uc, p.voided_uc, p.remaining_uc)
        assert p.grant.amount_uc == sum(figures), p
        assert min(figures) >= 0, p
    assert min(balance.available_uc, balance.held_uc, balance.overage_uc) >= 0, balance
    assert [order_key(p.grant) for p in balance.packages] == sorted(order_key(p.grant)
                                                                     for p in balance.packages)


def check_burn_down(before: Balance, charge: Charge, ts: int) -> None:
    """(c) a charge draws in burn-down order among grants usable at ``ts``, each one fully before
    the next; ``before`` is the balance read at the same instant, just before the charge."""
    usable = sorted((p for p in before.packages if p.grant.usable_at(ts)), key=lambda p: order_key(p.grant))
    residual = {p.grant.id: p.grant.amount_uc - p.used_uc - p.held_uc for p in usable}
    rank = {p.grant.id: i for i, p in enumerate(usable)}
    drawn = [(a.grant_id, a.amount_uc) for a in charge.allocations]
    assert all(gid in rank for gid, _ in drawn), (drawn, rank)
    assert [rank[gid] for gid, _ in drawn] == sorted({rank[gid] for gid, _ in drawn}), drawn
    assert all(0 < amount <= residual[gid] for gid, amount in drawn), (drawn, residual)
    assert sum(a for _, a in drawn) + charge.overage_uc == charge.cost_uc
    last = rank[drawn[-1][0]] if drawn else -1
    if charge.overage_uc:
        last = len(usable)
    taken = dict(drawn)
    for p in usable[:max(last, 0)]:
        gid = p.grant.id
        assert taken.get(gid, 0) == residual[gid], (gid, drawn, residual)


class Driver:
    """Does each operation on an engine and on the oracle, and checks they agree."""

    def __init__(self, engine: Engine, lateness_s: int = 7 * 86_400) -> None:
        self.engine = engine
        self.oracle = Oracle(PRICES, lateness_s=lateness_s)
        self.now = T0
        for effective, catalog in CATALOGS:
            engine.load_prices(catalog, effective, T0 - 30 * DAY)
        for account in ACCOUNTS:
            engine.create_account(account, T0)
            self.oracle.do("account", account, T0)
        self.grants: list[str] = []
        self.holds: list[str] = []
        self.events: dict[str, Ev] = {}
        self.counter = 0

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # -- operations ------------------------------------------------------------------------------

    def grant(self, account: str, amount: int, kind: str, expires: int | None = None,
              effective: int | None = None, priority: int | None = None) -> str:
        """Offsets are relative to now (µs)."""
        gid = self.new_id("g")
        exp = None if expires is None else self.now + expires
        eff = None if effective is None else self.now + effective
        try:
            self.engine.add_grant(account, amount, kind, self.now, expires_at_us=exp, effective_at_us=eff,
                                  priority=priority, grant_id=gid)
            got = "ok"
        except CreditmeterError as exc:
            got = exc.kind
        assert got == self.oracle.do("grant", gid, account, amount, kind, self.now, exp, eff, priority)
        if got == "ok":
            self.grants.append(gid)
        return got

    def void(self, gid: str) -> str:
        try:
            package = self.engine.void_grant(gid, self.now)
            assert package.status.value == "voided", package
            got = "ok"
        except Conflict:
            got = "conflict"
        assert got == self.oracle.do("void", gid, self.now)
        return got

    def record(self, events: Sequence[Ev], batch: bool) -> list[Charge | Rejected]:
        single = len(events) == 1 and not batch
        known = single and events[0].account in ACCOUNTS
        before = self.engine.balance(events[0].account, self.now) if known else None
        results: list[Charge | Rejected]
        if batch:
            results = self.engine.record_batch([event_json(e) for e in events], self.now)
        else:
            results = []
            for e in events:
                try:
                    results.append(self.engine.record(event_json(e), self.now))
                except CreditmeterError as exc:
                    results.append(Rejected(e.id, exc))
        want = self.oracle.do("record", list(events), self.now)
        assert [norm(r) for r in results] == want
        for e, r in zip(events, results, strict=True):
            if isinstance(r, Charge) and r.status == "charged":
                self.events.setdefault(e.id, e)
                if before is not None:
                    check_burn_down(before, r, r.timestamp_us)
        return results

    def reserve(self, account: str, amount: int, ttl_s: int | None) -> Hold | Refused:
        hid = self.new_id("h")
        available = self.engine.balance(account, self.now).available_uc
        result = self.engine.reserve(account, amount, self.now, ttl_s=ttl_s, hold_id=hid)
        want = self.oracle.do("reserve", hid, account, amount, 600 if ttl_s is None else ttl_s, self.now)
        if isinstance(result, Hold):
            assert want == "open"
            assert amount <= available  # (f) never more than available
            assert sum(p.amount_uc for p in result.parts) == amount
            assert [(p.grant_id, p.amount_uc) for p in result.parts] == self.oracle.hold_parts(hid)
            self.holds.append(hid)
        else:
            assert want == "refused", (result, want)
        return result

    def settle(self, hid: str, model: str, input_tokens: int, output_tokens: int) -> OCharge | str:
        try:
            got: OCharge | str = norm(self.engine.settle(hid, Usage(model, input_tokens, output_tokens),
                                                         self.now))
        except CreditmeterError as exc:
            got = exc.kind
        assert got == self.oracle.do("settle", hid, model, input_tokens, output_tokens, (), self.now)
        return got

    def release(self, hid: str) -> str:
        try:
            got = self.engine.release(hid, self.now).status.value
        except Conflict:
            got = "conflict"
        assert got == self.oracle.do("release", hid, self.now)
        return got

    def tick(self) -> None:
        self.engine.tick(self.now)
        self.oracle.do("tick", self.now)

    # -- checks ----------------------------------------------------------------------------------

    def check(self, later: int = 0) -> None:
        """Balances equal the oracle's (now, ``later`` µs ahead, and at and just before the next
        instants where something expires or takes effect); (a), (b), (g)."""
        edges = self.oracle.boundaries(self.now)[:4]  # exactly at a boundary, and just before it
        instants = sorted({self.now, self.now + later, *edges, *(max(x - 1, self.now) for x in edges)})
        for account in ACCOUNTS:
            for t in instants:
                balance = self.engine.balance(account, t)
                check_balance(balance)
                want = self.oracle.balance(account, t)
                got = snap(balance)
                assert got == want, (account, t, got, want)
                assert list(got.packages) == list(want.packages)
        assert self.engine.check_invariants() == []


# -- strategies ------------------------------------------------------------------------------------

accounts = st.sampled_from(ACCOUNTS)
# Rollover packages are made by a plan's rollover, never added.
kinds = st.sampled_from([k.value for k in GrantKind if k is not GrantKind.ROLLOVER])
grant_args = st.fixed_dictionaries({
    "account": accounts,
    "amount": st.one_of(st.integers(1, 300), st.integers(300, 1500)),
    "kind": kinds,
    "expires": st.one_of(st.none(), st.integers(1, 300).map(lambda k: k * U)),
    "effective": st.one_of(st.none(), st.integers(-200, 40).map(lambda k: k * U)),
    "priority": st.one_of(st.none(), st.sampled_from([0, 10, 50, 100])),
})
ts_offsets = st.one_of(
    st.none(),
    st.integers(0, 30).map(lambda k: -k * U),
    st.integers(0, 1010).map(lambda k: -k * U),          # up to just beyond the 7-day window
    st.sampled_from([180 * US, 300 * US, 301 * US, -7 * DAY, -7 * DAY - 1]),
)


@st.composite
def event_specs(draw: st.DrawFn, account: st.SearchStrategy[str] = accounts) -> Callable[[Driver], Ev]:
    acct = draw(account)
    offset = draw(ts_offsets)
    model = draw(st.sampled_from(["m", "m", "m", "x", None]))
    if model is None:
        inp, out, qty = 0, 0, (("f", draw(st.integers(0, 3))),)
    else:
        inp, out = draw(st.integers(0, 150)), draw(st.integers(0, 40))
        qty = draw(st.sampled_from([(), (), (("f", 1),)]))

    def make(driver: Driver) -> Ev:
        ts = None if offset is None else driver.now + offset
        return Ev(driver.new_id("e"), acct, ts, model, inp, out, qty)

    return make


time_steps = st.sampled_from([0, 1, 2, 3, 6, 12, 36, 144, 432]).map(lambda k: k * U)

operations = st.one_of(
    st.tuples(st.just("grant"), grant_args),
    st.tuples(st.just("record"), st.lists(event_specs(), min_size=1, max_size=4)),
    st.tuples(st.just("reserve"), st.tuples(accounts, st.integers(1, 200),
                                            st.sampled_from([None, 600, 1800, 7200]))),
    st.tuples(st.just("settle"), st.tuples(st.integers(0, 10**6), st.sampled_from(["m", "x"]),
                                           st.integers(0, 300), st.integers(0, 50))),
    st.tuples(st.just("release"), st.integers(0, 10**6)),
    st.tuples(st.just("void"), st.integers(0, 10**6)),
    st.tuples(st.just("time"), time_steps),
)


def apply(driver: Driver, op: tuple[str, object], *, tick_after_time: bool = False) -> None:
    name, args = op
    if name == "grant":
        driver.grant(**args)  # type: ignore[arg-type]
    elif name == "record":
        specs = args
        driver.record([make(driver) for make in specs], batch=len(specs) > 1)  # type: ignore[attr-defined]
    elif name == "reserve":
        driver.reserve(*args)  # type: ignore[misc]
    elif name == "settle" and driver.holds:
        pick, model, inp, out = args  # type: ignore[misc]
        driver.settle(driver.holds[pick % len(driver.holds)], model, inp, out)
    elif name == "release" and driver.holds:
        driver.release(driver.holds[args % len(driver.holds)])  # type: ignore[operator]
    elif name == "void" and driver.grants:
        driver.void(driver.grants[args % len(driver.grants)])  # type: ignore[operator]
    elif name in ("time", "times"):
        for step in args if isinstance(args, list) else [args]:
            driver.now += step
            if tick_after_time:
                driver.tick()


# -- (a) (b) (c) (g): random histories against the oracle -----------------------------------------

@SETTINGS
@given(ops=st.lists(operations, min_size=1, max_size=25))
def test_random_history_matches_oracle(make_engine: Engines,
                                       ops: list[tuple[str, object]]) -> None:
    driver = Driver(make_engine())
    driver.check()
    for op in ops:
        apply(driver, op)
        driver.check(later=DAY)
    make_engine.close()  # and gives the databases back for the next example


@SETTINGS
@given(grants=st.lists(grant_args, min_size=1, max_size=6),
       costs=st.lists(st.integers(2, 400), min_size=1, max_size=6),  # an event records some usage
       ts_back=st.lists(st.integers(0, 40), min_size=6, max_size=6))
def test_each_charge_drains_earlier_grants_first(make_engine: Engines,
                                                 grants: list[dict[str, object]],
                                                 costs: list[int], ts_back: list[int]) -> None:
    """(c) directly: each charge is drawn in burn-down order among the grants usable at its
    timestamp, and a later grant is drawn only once every earlier usable one is exhausted."""
    driver = Driver(make_engine())
    for args in grants:
        driver.grant(**args)  # type: ignore[arg-type]
    driver.now += 30 * U
    charged = 0
    for i, cost in enumerate(costs):
        e = Ev(driver.new_id("e"), "a", driver.now - ts_back[i] * U, "m", 0, cost // 2)
        before = driver.engine.balance("a", driver.now)
        (charge,) = driver.record([e], batch=False)
        assert isinstance(charge, Charge) and charge.cost_uc == cost // 2 * 2
        check_burn_down(before, charge, e.ts or driver.now)
        charged += 1
        driver.check()
    assert charged == len(costs)
    make_engine.close()  # and gives the databases back for the next example


# -- (d) one by one or in batches of any size: the same ------------------------------------------

@SETTINGS
@given(grants=st.lists(grant_args, min_size=0, max_size=5),
       specs=st.lists(event_specs(st.sampled_from(["a", "b", "ghost"])), min_size=1, max_size=14),
       replays=st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=4),
       cuts=st.lists(st.integers(1, 6), min_size=1, max_size=14),
       hold=st.integers(0, 200))
def test_batches_equal_one_by_one(make_engine: Engines, grants: list[dict[str, object]],
                                  specs: list[Callable[[Driver], Ev]], replays: list[tuple[int, bool]],
                                  cuts: list[int], hold: int) -> None:
    single, batched = Driver(make_engine()), Driver(make_engine())
    for driver in (single, batched):
        for args in grants:
            driver.grant(**args)  # type: ignore[arg-type]
        if hold:
            driver.reserve("a", hold, 600)
        driver.now += 3 * U
    events = [make(single) for make in specs]
    batched.counter = single.counter
    for index, changed in replays:  # the same id again, with the same or another body
        original = events[index % len(events)]
        events.append(replace(original, input_tokens=original.input_tokens + 1) if changed else original)
    events.append(Ev("bad", "a", single.now, "m", -1))  # malformed: rejected in both
    one_by_one = single.record(events, batch=False)
    batches: list[Charge | Rejected] = []
    start = 0
    for size in cuts * len(events):
        if start >= len(events):
            break
        batches += batched.record(events[start:start + size], batch=True)
        start += size
    assert [norm(r) for r in one_by_one] == [norm(r) for r in batches]
    assert [type(r.error) if isinstance(r, Rejected) else None for r in one_by_one] == \
        [type(r.error) if isinstance(r, Rejected) else None for r in batches]
    for account in ACCOUNTS:
        for t in (single.now, single.now + DAY):
            assert snap(single.engine.balance(account, t)) == snap(batched.engine.balance(account, t))
    single.check()
    batched.check()
    make_engine.close()  # and gives the databases back for the next example


# -- (e) a replayed event never charges twice -----------------------------------------------------

@SETTINGS
@given(ops=st.lists(operations, min_size=1, max_size=12),
       picks=st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(["same", "tokens", "ts", "account"]),
                                st.sampled_from([0, U, 3 * DAY, 8 * DAY])), min_size=1, max_size=6))
def test_replayed_event_never_charges_twice(make_engine: Engines, ops: list[tuple[str, object]],
                                            picks: list[tuple[int, str, int]]) -> None:
    driver = Driver(make_engine())
    driver.grant("a", 100, "trial", expires=6 * U)
    driver.record([Ev("first", "a", None, "m", 40, 0)], batch=False)
    for op in ops:
        apply(driver, op)
    originals = {eid: norm(r) for eid, r in
                 ((eid, driver.engine.record_batch([event_json(e)], driver.now)[0])
                  for eid, e in driver.events.items())}
    assert all(isinstance(o, OCharge) and o.status == "duplicate" for o in originals.values())
    for pick, how, later in picks:
        driver.now += later
        before = {a: snap(driver.engine.balance(a, driver.now)) for a in ACCOUNTS}
        eid = sorted(driver.events)[pick % len(driver.events)]
        e = driver.events[eid]
        if how == "tokens":
            e = replace(e, input_tokens=e.input_tokens + 1)
        elif how == "ts":
            e = replace(e, ts=(e.ts or driver.now) - 1)
        elif how == "account":
            e = replace(e, account="b" if e.account == "a" else "a")
        (result,) = driver.record([e], batch=False)
        if how == "same":
            assert isinstance(result, Charge) and result.status == "duplicate"
            assert norm(result) == originals[eid]
        else:
            assert isinstance(result, Rejected) and isinstance(result.error, Conflict), result
            try:
                driver.engine.record(event_json(e), driver.now)
                raise AssertionError("a conflicting replay was accepted")
            except Conflict:
                pass
        assert {a: snap(driver.engine.balance(a, driver.now)) for a in ACCOUNTS} == before
        driver.check()
    make_engine.close()  # and gives the databases back for the next example


@SETTINGS
@given(amount=st.integers(1, 200), tokens=st.integers(0, 300), later=st.sampled_from([0, U, 2 * U]))
def test_settle_twice_never_charges_twice(make_engine: Engines, amount: int, tokens: int,
                                          later: int) -> None:
    driver = Driver(make_engine())
    driver.grant("a", 250, "subscription")
    hold = driver.reserve("a", amount, 900)
    assert isinstance(hold, Hold)
    driver.now += later
    first = driver.settle(hold.id, "m", tokens, 0)
    assert isinstance(first, OCharge) and first.status == "charged"
    before = snap(driver.engine.balance("a", driver.now))
    driver.now += U
    again = driver.settle(hold.id, "m", tokens, 0)
    assert again == replace(first, status="duplicate")
    assert driver.settle(hold.id, "m", tokens + 1, 0) == "conflict"
    assert driver.release(hold.id) == "conflict"  # settled (afresh, when its ttl had passed)
    after = snap(driver.engine.balance("a", driver.now - U))
    assert after == before
    driver.check()
    make_engine.close()  # and gives the databases back for the next example


# -- (f) N reservations never hold more than available --------------------------------------------

@SETTINGS
@given(grants=st.lists(grant_args, min_size=0, max_size=4),
       amounts=st.lists(st.integers(1, 250), max_size=10), debt=st.integers(0, 50))
def test_reservations_never_exceed_available(make_engine: Engines,
                                             grants: list[dict[str, object]],
                                             amounts: list[int], debt: int) -> None:
    driver = Driver(make_engine())
    if debt:
        driver.record([Ev("debt", "a", None, "m", 0, debt)], batch=False)
    for args in grants:
        driver.grant(**{**args, "account": "a"})  # type: ignore[arg-type]
    start = driver.engine.balance("a", driver.now)
    held = 0
    for amount in amounts:
        available = driver.engine.balance("a", driver.now).available_uc
        result = driver.reserve("a", amount, 600)
        fits = start.overage_uc == 0 and 0 < available and amount <= available
        assert isinstance(result, Hold) == fits, (amount, available, result)
        if isinstance(result, Hold):
            held += amount
        assert held <= start.available_uc
        after = driver.engine.balance("a", driver.now)
        assert after.available_uc == start.available_uc - held
        assert after.held_uc == start.held_uc + held
        driver.check()
    make_engine.close()  # and gives the databases back for the next example


def _reserve_in_thread(barrier: threading.Barrier, results: list[Hold | Refused | Exception], i: int,
                       engine: Engine, amount: int, now: int) -> None:
    try:
        barrier.wait()
        results[i] = engine.reserve("a", amount, now, ttl_s=600, hold_id=f"c{i}")
    except Exception as exc:
        results[i] = exc


def test_concurrent_reservations_never_exceed_available(template_db: object, tmp_path: object) -> None:
    """N reservations at once (one engine per thread, as separate workers would be) on one database."""
    import random
    import shutil
    from pathlib import Path

    from creditmeter.store.sql import SqlStore

    rng = random.Random(7)
    for round_ in range(3):
        path = Path(str(tmp_path)) / f"concurrent-{round_}.db"
        shutil.copy(str(template_db), path)
        url = f"sqlite:///{path}"
        setup = Driver(Engine(SqlStore(url)))
        total = 0
        for _ in range(3):
            total += 100
            setup.grant("a", 100, rng.choice(["trial", "addon", "package"]), expires=rng.randint(1, 50) * U)
        amounts = [rng.randint(1, 80) for _ in range(12)]
        workers = [Engine(SqlStore(url)) for _ in amounts]
        results: list[Hold | Refused | Exception] = [Refused("a", 0, 0, 0, "not run")] * len(amounts)
        barrier = threading.Barrier(len(amounts))

        threads = [threading.Thread(target=_reserve_in_thread,
                                    args=(barrier, results, i, w, a, setup.now))
                   for i, (w, a) in enumerate(zip(workers, amounts, strict=True))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not [r for r in results if isinstance(r, Exception)], results
        held = sum(r.amount_uc for r in results if isinstance(r, Hold))
        assert held <= total
        balance = setup.engine.balance("a", setup.now)
        assert balance.held_uc == held
        assert balance.available_uc == total - held
        # each refusal was right at its moment: nothing that fits in what is left was refused
        assert all(r.requested_uc > r.available_uc for r in results if isinstance(r, Refused))
        assert setup.engine.check_invariants() == []
        for engine in [*workers, setup.engine]:
            engine.store.close()


# -- maintenance changes nothing a user can see ----------------------------------------------------

debt_and_later_grants = st.one_of(
    st.tuples(st.just("record"), st.lists(event_specs(), min_size=1, max_size=2)),
    st.tuples(st.just("grant"), grant_args.map(lambda g: {**g, "effective": abs(g["effective"] or 0) + U,
                                                         "expires": abs(g["effective"] or 0) + U
                                                         + (g["expires"] or U)})),
    st.tuples(st.just("grant"), grant_args),
    st.tuples(st.just("times"), st.lists(time_steps, min_size=1, max_size=3)),
)


@settings(SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: the test below
@given(ops=st.lists(st.one_of(operations, debt_and_later_grants), min_size=1, max_size=20))  # is the minimum
def test_tick_changes_no_balance(make_engine: Engines, ops: list[tuple[str, object]]) -> None:
    """SPEC §4: the balance at t is right without waiting for any background job; ``tick`` only
    records history. So ticking after every step of time changes no balance, now or later."""
    plain, ticked = Driver(make_engine()), Driver(make_engine())
    for op in ops:
        apply(plain, op)
        apply(ticked, op, tick_after_time=True)
    for account in ACCOUNTS:
        for t in (plain.now, plain.now + DAY, plain.now + 30 * DAY):
            assert snap(plain.engine.balance(account, t)) == snap(ticked.engine.balance(account, t)), \
                (account, t)
    plain.check()
    ticked.check()
    make_engine.close()  # and gives the databases back for the next example


def test_settings_lateness_window_is_respected(make_engine: Engines) -> None:
    """The oracle's window follows the engine's setting (a configured window of 1 hour)."""
    driver = Driver(make_engine(Settings(lateness_window_s=3600)), lateness_s=3600)
    driver.grant("a", 100, "addon")
    driver.now += 12 * U
    results = driver.record([Ev("old", "a", driver.now - 3601 * US, "m", 10),
                             Ev("edge", "a", driver.now - 3600 * US, "m", 10)], batch=True)
    assert [norm(r) if isinstance(r, Rejected) else r.status for r in results] == ["invalid_input", "charged"]
    driver.check()
    make_engine.close()  # and gives the databases back for the next example


def test_tick_changes_no_balance_debt_and_scheduled_grant(make_engine: Engines) -> None:
    """The smallest case of the property above: overage, then a grant usable only later, for a day.
    With or without a tick (or any write) while the grant is usable, the later balance must agree."""
    answers = []
    for tick in (False, True):
        engine = make_engine()
        engine.load_prices(CATALOGS[0][1], CATALOGS[0][0], T0)
        engine.create_account("a", T0)
        engine.record({"id": "e1", "account_id": "a", "model": "m", "output_tokens": 25}, T0)  # 50 µc
        engine.add_grant("a", 100, "addon", T0, grant_id="g", effective_at_us=T0 + DAY,
                         expires_at_us=T0 + 2 * DAY)
        if tick:
            engine.tick(T0 + DAY + DAY // 2)
        balance = engine.balance("a", T0 + 3 * DAY)
        assert engine.check_invariants() == []
        answers.append((balance.overage_uc, [(p.used_uc, p.expired_uc) for p in balance.packages]))
    assert answers[0] == answers[1], answers
