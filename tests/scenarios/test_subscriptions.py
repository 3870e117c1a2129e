"""Plans, subscriptions and purchases as scenarios (SPEC §4, §7, §11).

A monthly subscription grants one package per billing period, month-end safe from its start, each
expiring at its period's end; cancelling ends it at the period's end; the trial is once per
account; renewals run from ``tick``, and ticking twice, late or at once from two processes issues
nothing twice; purchases are idempotent by order id; bad input writes nothing.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture), with the shipped default
plans and the example price catalog; every instant is passed explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from creditmeter.domain import Allocation, GrantId, GrantKind, GrantStatus, Package
from creditmeter.engine import Engine
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound
from creditmeter.plans import DAY_US, parse_plans
from creditmeter.store.sql import SqlStore, SqlTransaction
from creditmeter.subscriptions import Subscription, SubscriptionStatus
from creditmeter.timeutil import format_instant
from tests.conftest import at

CREDIT = 1_000_000  # µc
PRO = "professional-monthly"
PRO_CREDITS = 2_000 * CREDIT
TRIAL_CREDITS = 500 * CREDIT
SEAT_CREDITS = 2_500 * CREDIT
US = 1  # one microsecond
HOUR_US = 3_600 * 1_000_000

# A monthly subscription started 2028-01-31T10:00Z (2028 is a leap year): its periods start on
# the anchor's day clamped to each month, at the anchor's time of day.
YEAR_STARTS = [at(f"{day}T10:00:00Z") for day in (
    "2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30", "2028-05-31", "2028-06-30",
    "2028-07-31", "2028-08-31", "2028-09-30", "2028-10-31", "2028-11-30", "2028-12-31",
    "2029-01-31", "2029-02-28", "2029-03-31",
)]


# -- helpers ---------------------------------------------------------------------------------------

def packages(engine: Engine, account: str, at_us: int, kind: GrantKind | None = None) -> list[Package]:
    """The account's packages at ``at_us`` (optionally of one kind), oldest period first."""
    found = [p for p in engine.balance(account, at_us).packages if kind is None or p.grant.kind is kind]
    return sorted(found, key=lambda p: (p.grant.effective_at_us, p.grant.seq))


def windows(engine: Engine, account: str, at_us: int, kind: GrantKind) -> list[tuple[int, int | None, int]]:
    """(effective_at, expires_at, amount) of each package of ``kind``, oldest first."""
    return [(p.grant.effective_at_us, p.grant.expires_at_us, p.grant.amount_uc)
            for p in packages(engine, account, at_us, kind)]


def snapshot(engine: Engine, account: str, at_us: int) -> tuple[Any, ...]:
    """Everything an account shows: its figures, every package, every subscription."""
    balance = engine.balance(account, at_us)
    return (balance.available_uc, balance.held_uc, balance.overage_uc, balance.packages,
            tuple(engine.subscriptions(account)))


def use(engine: Engine, event_id: str, account: str, credits: int, when: int, recorded: int | None = None):  # noqa: ANN201
    """Record ``credits`` credits of usage at ``when`` (web_search costs 2 credits a call)."""
    assert credits % 2 == 0
    event = {"id": event_id, "account_id": account, "timestamp": _iso(when),
             "quantities": {"web_search": credits // 2}}
    return engine.record(event, when if recorded is None else recorded)


def _iso(us: int) -> str:
    text = format_instant(us)
    assert text is not None
    return text


def parts(charge: Any) -> list[tuple[str, int]]:
    return [(a.grant_id, a.amount_uc // CREDIT) for a in charge.allocations]


def status_of(engine: Engine, subscription_id: str, at_us: int) -> SubscriptionStatus:
    return engine.get_subscription(subscription_id).status(at_us)


# -- 1. a year of a monthly subscription ------------------------------------------------------------

def test_a_leap_year_of_monthly_periods_grants_one_package_per_period_on_its_dates(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("yael", anchor)
    sub = engine.subscribe("yael", PRO, anchor, subscription_id="yael-pro")
    assert (sub.anchor_us, sub.next_period) == (anchor, 1)
    # The first period's allowance is granted at once.
    assert windows(engine, "yael", anchor, GrantKind.SUBSCRIPTION) == [(YEAR_STARTS[0], YEAR_STARTS[1],
                                                                          PRO_CREDITS)]
    assert engine.balance("yael", anchor).available_uc == PRO_CREDITS

    for k in range(1, 14):
        start, prev_start = YEAR_STARTS[k], YEAR_STARTS[k - 1]
        # Mid-period and just before the next start: nothing new is due.
        for when in (prev_start + 10 * DAY_US, start - US):
            engine.tick(when)
            assert len(packages(engine, "yael", when, GrantKind.SUBSCRIPTION)) == k, _iso(when)
        # The running allowance counts up to the last microsecond of its period ...
        before = engine.balance("yael", start - US)
        assert before.available_uc == PRO_CREDITS, _iso(start)
        assert packages(engine, "yael", start - US)[-1].status is GrantStatus.ACTIVE
        # ... and not at its end; the next period's package is usable at its first µs, whether
        # or not a tick has run yet (derived on read, made by the first write that needs it).
        at_end = engine.balance("yael", start)
        assert at_end.available_uc == PRO_CREDITS, _iso(start)
        ended = packages(engine, "yael", start)[-2]
        assert (ended.status, ended.expired_uc, ended.remaining_uc) == (GrantStatus.EXPIRED, PRO_CREDITS, 0)
        assert packages(engine, "yael", start)[-1].grant.effective_at_us == start
        # The tick at the period's start grants exactly the new period's package.
        report = engine.tick(start)
        assert report.renewed == 1, _iso(start)
        assert engine.tick(start).renewed == 0
        got = windows(engine, "yael", start, GrantKind.SUBSCRIPTION)
        assert len(got) == k + 1
        assert got[-1] == (start, YEAR_STARTS[k + 1], PRO_CREDITS), _iso(start)
        assert engine.balance("yael", start).available_uc == PRO_CREDITS
        assert engine.check_invariants() == []

    # Through 2029-03-01: the 14 periods, each once, each with its own dates; nothing more.
    engine.tick(at("2029-03-01T00:00:00Z"))
    final = packages(engine, "yael", at("2029-03-01T00:00:00Z"), GrantKind.SUBSCRIPTION)
    assert [(p.grant.effective_at_us, p.grant.expires_at_us) for p in final] == list(
        zip(YEAR_STARTS[:14], YEAR_STARTS[1:15], strict=True))
    assert all(p.grant.amount_uc == PRO_CREDITS for p in final)
    assert len({p.grant.id for p in final}) == 14
    assert all(p.grant.source == "subscription:yael-pro" for p in final)
    assert [p.status for p in final] == [GrantStatus.EXPIRED] * 13 + [GrantStatus.ACTIVE]
    assert all(p.expired_uc == PRO_CREDITS for p in final[:13])
    [stored] = engine.subscriptions("yael")
    assert stored.next_period == 14
    assert stored.status(at("2029-03-01T00:00:00Z")) is SubscriptionStatus.ACTIVE
    assert engine.check_invariants() == []


def test_ticking_every_day_of_the_year_grants_each_period_once_on_its_day(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("dora", anchor)
    engine.subscribe("dora", PRO, anchor, subscription_id="dora-pro")
    renewed_on: list[int] = []
    day = at("2028-02-01T00:00:00Z")
    while day <= at("2029-03-01T00:00:00Z"):
        if engine.tick(day).renewed:
            renewed_on.append(day)
        day += DAY_US
    # A daily tick at midnight grants each period on the first midnight after its start.
    assert [_iso(d)[:10] for d in renewed_on] == [_iso(s + DAY_US)[:10] for s in YEAR_STARTS[1:14]]
    got = windows(engine, "dora", day, GrantKind.SUBSCRIPTION)
    assert got == [(YEAR_STARTS[k], YEAR_STARTS[k + 1], PRO_CREDITS) for k in range(14)]
    assert engine.check_invariants() == []


# -- 2. cancellation at period end ----------------------------------------------------------------

def test_cancel_ends_the_subscription_at_the_end_of_the_current_period(engine: Engine) -> None:
    anchor = at("2028-03-15T08:00:00Z")
    period1_start, period1_end = at("2028-04-15T08:00:00Z"), at("2028-05-15T08:00:00Z")
    engine.create_account("cleo", anchor)
    engine.subscribe("cleo", PRO, anchor, subscription_id="cleo-pro")
    engine.tick(period1_start)
    assert len(packages(engine, "cleo", period1_start, GrantKind.SUBSCRIPTION)) == 2

    cancel_time = at("2028-04-20T12:00:00Z")
    cancelled = engine.cancel_subscription("cleo-pro", cancel_time)
    assert (cancelled.cancel_at_us, cancelled.cancelled_at_us) == (period1_end, cancel_time)
    assert cancelled.status(cancel_time) is SubscriptionStatus.CANCELLED
    assert status_of(engine, "cleo-pro", period1_end - US) is SubscriptionStatus.CANCELLED
    assert status_of(engine, "cleo-pro", period1_end) is SubscriptionStatus.EXPIRED
    assert status_of(engine, "cleo-pro", at("2029-01-01")) is SubscriptionStatus.EXPIRED
    assert engine.balance("cleo", cancel_time).subscription.id == "cleo-pro"

    # The current period's package stays, usable until its end.
    assert engine.balance("cleo", period1_end - US).available_uc == PRO_CREDITS
    assert engine.balance("cleo", period1_end).available_uc == 0

    # Cancelling again changes nothing.
    again = engine.cancel_subscription("cleo-pro", at("2028-04-25T00:00:00Z"))
    assert again == cancelled
    assert engine.get_subscription("cleo-pro") == cancelled

    # A second running subscription is refused while this one runs, cancelled or not.
    with pytest.raises(Conflict):
        engine.subscribe("cleo", PRO, at("2028-05-01T00:00:00Z"), subscription_id="cleo-pro-2")

    # No further package, whatever ticks run.
    for when in ("2028-05-15T08:00:00Z", "2028-05-15T08:00:00Z", "2028-06-15T08:00:00Z",
                 "2028-12-31T23:00:00Z", "2030-06-01T00:00:00Z"):
        assert engine.tick(at(when)).renewed == 0
        assert len(packages(engine, "cleo", at(when), GrantKind.SUBSCRIPTION)) == 2
    assert engine.balance("cleo", at("2030-06-01T00:00:00Z")).subscription is None

    with pytest.raises(NotFound):
        engine.cancel_subscription("no-such-subscription", cancel_time)

    # After it expired, a new subscription can be made; it renews on its own anchor.
    fresh_start = at("2030-06-01T00:00:00Z")
    fresh = engine.subscribe("cleo", PRO, fresh_start, subscription_id="cleo-pro-2")
    assert fresh.status(fresh_start) is SubscriptionStatus.ACTIVE
    engine.tick(at("2030-07-01T00:00:00Z"))
    assert windows(engine, "cleo", at("2030-07-01T00:00:00Z"), GrantKind.SUBSCRIPTION)[2:] == [
        (fresh_start, at("2030-07-01T00:00:00Z"), PRO_CREDITS),
        (at("2030-07-01T00:00:00Z"), at("2030-08-01T00:00:00Z"), PRO_CREDITS)]
    assert [s.id for s in engine.subscriptions("cleo")] == ["cleo-pro", "cleo-pro-2"]
    assert engine.check_invariants() == []


def test_cancelling_a_subscription_that_has_ended_is_a_conflict(engine: Engine) -> None:
    anchor = at("2028-03-15T08:00:00Z")
    engine.create_account("cora", anchor)
    engine.subscribe("cora", PRO, anchor, subscription_id="cora-pro")
    cancelled = engine.cancel_subscription("cora-pro", at("2028-03-20T00:00:00Z"))
    assert cancelled.cancel_at_us == at("2028-04-15T08:00:00Z")
    engine.tick(at("2028-05-01T00:00:00Z"))
    assert status_of(engine, "cora-pro", at("2028-05-01T00:00:00Z")) is SubscriptionStatus.EXPIRED
    for when in (at("2028-04-15T08:00:00Z"), at("2028-05-01T00:00:00Z")):
        with pytest.raises(Conflict):
            engine.cancel_subscription("cora-pro", when)
    assert engine.get_subscription("cora-pro") == cancelled


def test_cancel_in_the_first_period_keeps_only_the_first_package(engine: Engine) -> None:
    anchor = at("2028-01-31T10:00:00Z")
    engine.create_account("finn", anchor)
    engine.subscribe("finn", PRO, anchor, subscription_id="finn-pro")
    sub = engine.cancel_subscription("finn-pro", anchor + US)
    assert sub.cancel_at_us == at("2028-02-29T10:00:00Z")
    for when in ("2028-02-29T10:00:00Z", "2028-03-31T10:00:00Z", "2028-05-01T00:00:00Z"):
        engine.tick(at(when))
    assert windows(engine, "finn", at("2028-05-01"), GrantKind.SUBSCRIPTION) == [
        (anchor, at("2028-02-29T10:00:00Z"), PRO_CREDITS)]


def test_a_trial_cannot_be_cancelled_it_ends_by_itself(engine: Engine) -> None:
    t0 = at("2028-03-01T00:00:00Z")
    engine.create_account("tom", t0)
    engine.subscribe("tom", "trial", t0, subscription_id="tom-trial")
    with pytest.raises(Conflict):
        engine.cancel_subscription("tom-trial", t0 + DAY_US)
    assert status_of(engine, "tom-trial", t0 + 14 * DAY_US - US) is SubscriptionStatus.ACTIVE
    assert status_of(engine, "tom-trial", t0 + 14 * DAY_US) is SubscriptionStatus.EXPIRED


# -- 3. the trial, once only -----------------------------------------------------------------------

def test_the_trial_is_granted_once_per_account_ever(engine: Engine) -> None:
    t0 = at("2028-03-01T09:00:00Z")
    engine.create_account("tia", t0)
    first = engine.subscribe("tia", "trial", t0, subscription_id="tia-trial")
    [trial] = packages(engine, "tia", t0, GrantKind.TRIAL)
    assert trial.grant.amount_uc == TRIAL_CREDITS
    assert trial.grant.priority == 0
    assert (trial.grant.effective_at_us, trial.grant.expires_at_us) == (t0, t0 + 14 * DAY_US)

    # The same id with the same details answers the same subscription, granting nothing.
    same = engine.subscribe("tia", "trial", t0 + HOUR_US, subscription_id="tia-trial")
    assert same == first
    assert len(packages(engine, "tia", t0 + DAY_US, GrantKind.TRIAL)) == 1

    before = snapshot(engine, "tia", t0 + DAY_US)
    with pytest.raises(Conflict):
        engine.subscribe("tia", "trial", t0 + DAY_US, subscription_id="tia-trial-2")
    with pytest.raises(Conflict):
        engine.subscribe("tia", "trial", t0 + DAY_US)
    assert snapshot(engine, "tia", t0 + DAY_US) == before

    # Even after the trial expired.
    later = t0 + 30 * DAY_US
    engine.tick(later)
    assert status_of(engine, "tia-trial", later) is SubscriptionStatus.EXPIRED
    before = snapshot(engine, "tia", later)
    with pytest.raises(Conflict):
        engine.subscribe("tia", "trial", later, subscription_id="tia-trial-3")
    assert engine.subscribe("tia", "trial", later, subscription_id="tia-trial") == first
    assert snapshot(engine, "tia", later) == before

    # Another account has its own trial.
    engine.create_account("tad", later)
    engine.subscribe("tad", "trial", later, subscription_id="tad-trial")
    assert len(packages(engine, "tad", later, GrantKind.TRIAL)) == 1
    assert engine.check_invariants() == []


def test_the_trial_is_burned_first(engine: Engine) -> None:
    t0 = at("2028-03-01T09:00:00Z")
    engine.create_account("tess", t0)
    # Bought and subscribed before the trial: the trial still goes first (priority 0).
    engine.purchase("tess", "package-3000", t0, order_id="tess-pack")
    engine.subscribe("tess", PRO, t0, subscription_id="tess-pro")
    engine.subscribe("tess", "trial", t0, subscription_id="tess-trial")
    order = [p.grant.kind for p in engine.balance("tess", t0).packages]
    assert order[0] is GrantKind.TRIAL
    pro_id = packages(engine, "tess", t0, GrantKind.SUBSCRIPTION)[0].grant.id

    assert parts(use(engine, "t1", "tess", 300, t0 + DAY_US)) == [("trial:tess", 300)]
    # What the trial cannot cover comes from what expires soonest: the month's allowance.
    assert parts(use(engine, "t2", "tess", 400, t0 + 2 * DAY_US)) == [("trial:tess", 200), (pro_id, 200)]
    trial = packages(engine, "tess", t0 + 2 * DAY_US, GrantKind.TRIAL)[0]
    assert (trial.used_uc, trial.remaining_uc, trial.status) == (TRIAL_CREDITS, 0, GrantStatus.DEPLETED)
    assert engine.check_invariants() == []


# -- 4. ticks twice, late, and at once ---------------------------------------------------------------

def test_ticking_twice_at_the_same_instant_grants_once(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("tw", anchor)
    engine.subscribe("tw", PRO, anchor, subscription_id="tw-pro")
    engine.subscribe("tw", PRO, anchor, subscription_id="tw-pro")  # the same call again
    assert len(packages(engine, "tw", anchor, GrantKind.SUBSCRIPTION)) == 1
    assert engine.tick(YEAR_STARTS[1]).renewed == 1
    assert engine.tick(YEAR_STARTS[1]).renewed == 0
    assert engine.tick(YEAR_STARTS[1] + US).renewed == 0
    assert windows(engine, "tw", YEAR_STARTS[1], GrantKind.SUBSCRIPTION) == [
        (YEAR_STARTS[0], YEAR_STARTS[1], PRO_CREDITS), (YEAR_STARTS[1], YEAR_STARTS[2], PRO_CREDITS)]
    assert engine.balance("tw", YEAR_STARTS[1]).available_uc == PRO_CREDITS
    assert engine.check_invariants() == []


def test_a_late_tick_grants_every_missed_period_once_with_its_own_dates(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("lou", anchor)
    engine.subscribe("lou", PRO, anchor, subscription_id="lou-pro")
    late = at("2028-07-15T00:00:00Z")  # five periods missed: Feb 29 .. Jun 30
    assert engine.tick(late).renewed == 1
    got = packages(engine, "lou", late, GrantKind.SUBSCRIPTION)
    assert [(p.grant.effective_at_us, p.grant.expires_at_us, p.grant.amount_uc) for p in got] == [
        (YEAR_STARTS[k], YEAR_STARTS[k + 1], PRO_CREDITS) for k in range(6)]
    assert [p.status for p in got] == [GrantStatus.EXPIRED] * 5 + [GrantStatus.ACTIVE]
    assert engine.balance("lou", late).available_uc == PRO_CREDITS
    # Each missed period's allowance was usable in its own period (seen from then).
    for k in range(1, 6):
        assert engine.balance("lou", YEAR_STARTS[k] + DAY_US).available_uc == PRO_CREDITS
    # Ticking again (now, or at an earlier instant) grants nothing more.
    for when in (late, late + US, at("2028-07-01T00:00:00Z"), at("2028-03-01T00:00:00Z")):
        assert engine.tick(when).renewed == 0
    assert len(packages(engine, "lou", late, GrantKind.SUBSCRIPTION)) == 6
    assert engine.get_subscription("lou-pro").next_period == 6
    assert engine.check_invariants() == []


ACCOUNTS = ("c1", "c2", "c3")


def _subscribe_all(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    for account in ACCOUNTS:
        engine.create_account(account, anchor)
        engine.subscribe(account, PRO, anchor, subscription_id=f"{account}-pro")


def _race(tickers: list[Callable[[int], object]], when: int) -> None:
    """Run every ticker at ``when`` at once; re-raise what any of them raised."""
    barrier = threading.Barrier(len(tickers))

    def run(tick: Callable[[int], object]) -> object:
        barrier.wait(timeout=30)
        return tick(when)

    with ThreadPoolExecutor(len(tickers)) as pool:
        for future in [pool.submit(run, t) for t in tickers]:
            future.result(timeout=120)


def _check_one_package_per_period(engine: Engine, periods: int, when: int) -> None:
    for account in ACCOUNTS:
        got = windows(engine, account, when, GrantKind.SUBSCRIPTION)
        assert got == [(YEAR_STARTS[k], YEAR_STARTS[k + 1], PRO_CREDITS) for k in range(periods)], account
        assert engine.get_subscription(f"{account}-pro").next_period == periods
    assert engine.check_invariants() == []


def test_ticks_from_threads_at_once_grant_each_period_once(engine: Engine) -> None:
    _subscribe_all(engine)
    for periods, when in ((2, YEAR_STARTS[1]), (5, YEAR_STARTS[4] + DAY_US), (6, YEAR_STARTS[5])):
        _race([engine.tick] * 4, when)
        _check_one_package_per_period(engine, periods, when)


def test_ticks_from_two_engines_on_the_same_database_grant_each_period_once(engine: Engine) -> None:
    _subscribe_all(engine)
    other = Engine(SqlStore(engine.store.url))
    try:
        for periods, when in ((2, YEAR_STARTS[1]), (4, YEAR_STARTS[3] + DAY_US), (7, YEAR_STARTS[6])):
            _race([engine.tick, other.tick, engine.tick, other.tick], when)
            _check_one_package_per_period(engine, periods, when)
            _check_one_package_per_period(other, periods, when)
    finally:
        other.store.close()


def _at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call at once; each answers its result or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait(timeout=30)
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the test looks at what each call answered
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=120) for f in [pool.submit(run, c) for c in calls]]


def test_subscribing_at_once_from_two_engines_makes_one_subscription_and_one_trial(engine: Engine) -> None:
    t0 = at("2028-03-01T00:00:00Z")
    other = Engine(SqlStore(engine.store.url))
    try:
        for n in range(3):
            acct = f"racer{n}"
            engine.create_account(acct, t0)
            results = _at_once([
                lambda a=acct: engine.subscribe(a, PRO, t0, subscription_id=f"{a}-a"),
                lambda a=acct: other.subscribe(a, PRO, t0, subscription_id=f"{a}-b"),
                lambda a=acct: engine.subscribe(a, "trial", t0, subscription_id=f"{a}-t1"),
                lambda a=acct: other.subscribe(a, "trial", t0, subscription_id=f"{a}-t2"),
            ])
            made = [r for r in results if isinstance(r, Subscription)]
            refused = [r for r in results if not isinstance(r, Subscription)]
            assert all(type(r) is Conflict for r in refused), refused
            assert len({(s.id, s.plan.kind) for s in made}) == 2, results
            subs = engine.subscriptions(acct)
            assert sorted(s.plan.id for s in subs) == [PRO, "trial"]
            assert len(packages(engine, acct, t0, GrantKind.TRIAL)) == 1
            assert len(packages(engine, acct, t0, GrantKind.SUBSCRIPTION)) == 1
            assert engine.balance(acct, t0).available_uc == PRO_CREDITS + TRIAL_CREDITS
    finally:
        other.store.close()
    assert engine.check_invariants() == []


# A command that looks up its idempotency key (or the subscription it changes) and only then locks
# the account can be overtaken by another engine between the two. To make that interleaving happen
# every time, the first command pauses right after the lookup while the second one runs whole.

def _interleave(monkeypatch: pytest.MonkeyPatch, lookup: str, first: Callable[[], object],
                second: Callable[[], object]) -> list[object]:
    """Run ``first`` and ``second`` at once; ``first`` pauses after its store ``lookup`` call."""
    original = getattr(SqlTransaction, lookup)
    paused = threading.local()

    def slow(self: SqlTransaction, *args: object) -> object:
        answer = original(self, *args)
        if getattr(paused, "on", False):
            paused.on = False
            time.sleep(0.4)
        return answer

    monkeypatch.setattr(SqlTransaction, lookup, slow)

    def run_first() -> object:
        paused.on = True
        return first()

    def run_second() -> object:
        time.sleep(0.1)
        return second()

    return _at_once([run_first, run_second])


def test_the_same_subscription_from_two_engines_at_once_answers_the_same_subscription(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = at("2028-03-01T00:00:00Z")
    other = Engine(SqlStore(engine.store.url))
    try:
        for acct, plan in (("sam", PRO), ("sue", "trial")):
            engine.create_account(acct, t0)
            results = _interleave(
                monkeypatch, "get_subscription",
                lambda a=acct, p=plan: engine.subscribe(a, p, t0, subscription_id=f"{a}-1"),
                lambda a=acct, p=plan: other.subscribe(a, p, t0, subscription_id=f"{a}-1"))
            assert all(isinstance(r, Subscription) for r in results), (acct, results)
            assert {r.id for r in results} == {f"{acct}-1"}  # type: ignore[union-attr]
            assert [s.id for s in engine.subscriptions(acct)] == [f"{acct}-1"]
            assert len(packages(engine, acct, t0)) == 1
            monkeypatch.undo()
    finally:
        other.store.close()
    assert engine.check_invariants() == []


def test_the_same_order_from_two_engines_at_once_is_bought_once(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = at("2028-03-01T00:00:00Z")
    engine.create_account("olga", t0)
    other = Engine(SqlStore(engine.store.url))
    try:
        results = _interleave(
            monkeypatch, "get_grant",
            lambda: engine.purchase("olga", "addon-1000", t0, order_id="webhook-1"),
            lambda: other.purchase("olga", "addon-1000", t0, order_id="webhook-1"))
    finally:
        other.store.close()
    assert all(isinstance(r, Package) for r in results), results
    assert {r.grant.id for r in results} == {"order:webhook-1"}  # type: ignore[union-attr]
    assert len(packages(engine, "olga", t0)) == 1
    assert engine.balance("olga", t0).available_uc == 1_000 * CREDIT
    assert engine.check_invariants() == []


def test_a_cancel_overtaken_by_a_renewal_keeps_the_renewal(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.create_account("ken", YEAR_STARTS[0])
    engine.subscribe("ken", PRO, YEAR_STARTS[0], subscription_id="ken-pro")
    other = Engine(SqlStore(engine.store.url))
    try:
        results = _interleave(monkeypatch, "get_subscription",
                              lambda: other.cancel_subscription("ken-pro", YEAR_STARTS[1] + HOUR_US),
                              lambda: engine.tick(YEAR_STARTS[1]))
    finally:
        other.store.close()
    assert isinstance(results[0], Subscription), results
    assert results[1].renewed == 1  # type: ignore[union-attr]
    stored = engine.get_subscription("ken-pro")
    assert (stored.next_period, stored.cancel_at_us) == (2, YEAR_STARTS[2])
    assert len(packages(engine, "ken", YEAR_STARTS[1], GrantKind.SUBSCRIPTION)) == 2
    # Nothing is left to renew.
    assert engine.tick(YEAR_STARTS[1] + 2 * HOUR_US).renewed == 0
    assert engine.check_invariants() == []


def test_two_cancels_at_once_keep_the_first(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.create_account("kai", YEAR_STARTS[0])
    engine.subscribe("kai", PRO, YEAR_STARTS[0], subscription_id="kai-pro")
    engine.tick(YEAR_STARTS[1])
    first_at, second_at = YEAR_STARTS[1] + HOUR_US, YEAR_STARTS[1] + 2 * HOUR_US
    other = Engine(SqlStore(engine.store.url))
    try:
        results = _interleave(monkeypatch, "get_subscription",
                              lambda: other.cancel_subscription("kai-pro", second_at),
                              lambda: engine.cancel_subscription("kai-pro", first_at))
    finally:
        other.store.close()
    # The cancel that committed first stands; the other one answers it, unchanged.
    assert all(isinstance(r, Subscription) for r in results), results
    stored = engine.get_subscription("kai-pro")
    assert stored.cancel_at_us == YEAR_STARTS[2]
    assert stored.cancelled_at_us in (first_at, second_at)
    assert results[0] == results[1] == stored


# -- 5. usage within each period --------------------------------------------------------------------

def test_usage_burns_the_running_periods_allowance_and_the_trial_first(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]  # 2028-01-31T10:00Z
    engine.create_account("uma", anchor)
    engine.subscribe("uma", PRO, anchor, subscription_id="uma-pro")
    engine.subscribe("uma", "trial", anchor, subscription_id="uma-trial")
    p0 = packages(engine, "uma", anchor, GrantKind.SUBSCRIPTION)[0].grant.id

    assert parts(use(engine, "u1", "uma", 100, at("2028-02-01T10:00:00Z"))) == [("trial:uma", 100)]
    assert parts(use(engine, "u2", "uma", 500, at("2028-02-05T10:00:00Z"))) == [("trial:uma", 400),
                                                                                 (p0, 100)]
    # The trial ended on 2028-02-14T10:00Z: usage after it burns the month's allowance.
    assert parts(use(engine, "u3", "uma", 200, at("2028-02-20T10:00:00Z"))) == [(p0, 200)]

    balance = engine.balance("uma", at("2028-02-21T00:00:00Z"))
    assert balance.subscription.id == "uma-pro"
    assert balance.period is not None
    assert (balance.period.start_us, balance.period.end_us, balance.period.basis) == (
        YEAR_STARTS[0], YEAR_STARTS[1], "subscription")
    assert balance.period.used_uc == 800 * CREDIT
    assert balance.available_uc == PRO_CREDITS - 300 * CREDIT

    engine.tick(YEAR_STARTS[1])
    p1 = packages(engine, "uma", YEAR_STARTS[1], GrantKind.SUBSCRIPTION)[1].grant.id
    assert parts(use(engine, "u4", "uma", 300, at("2028-03-01T10:00:00Z"))) == [(p1, 300)]
    # A late event from the last minute of period 0 draws on period 0's allowance, not period 1's.
    late = use(engine, "u5", "uma", 50 * 2, YEAR_STARTS[1] - US, recorded=at("2028-03-02T00:00:00Z"))
    assert parts(late) == [(p0, 100)]

    balance = engine.balance("uma", at("2028-03-02T00:00:00Z"))
    assert balance.period is not None
    assert (balance.period.start_us, balance.period.end_us, balance.period.basis) == (
        YEAR_STARTS[1], YEAR_STARTS[2], "subscription")
    assert balance.period.used_uc == 300 * CREDIT
    assert balance.available_uc == PRO_CREDITS - 300 * CREDIT
    view = {p.grant.id: (p.used_uc, p.expired_uc, p.remaining_uc) for p in balance.packages}
    assert view[p0] == (400 * CREDIT, PRO_CREDITS - 400 * CREDIT, 0)
    assert view[p1] == (300 * CREDIT, 0, PRO_CREDITS - 300 * CREDIT)
    # Seen from period 0, its usage is period 0's.
    then = engine.balance("uma", YEAR_STARTS[1] - US)
    assert then.period is not None and then.period.start_us == YEAR_STARTS[0]
    assert then.period.used_uc == 900 * CREDIT
    engine.tick(at("2028-03-10T00:00:00Z"))
    assert engine.check_invariants() == []


def test_usage_before_the_renewal_tick_is_paid_by_that_periods_allowance(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("otto", anchor)
    engine.subscribe("otto", PRO, anchor, subscription_id="otto-pro")
    # An hour into period 1, before any tick granted it: period 1's package is made by the charge
    # that needs it, and pays it.
    charge = use(engine, "o1", "otto", 100, YEAR_STARTS[1] + HOUR_US)
    assert (charge.allocations, charge.overage_uc) == (
        (Allocation(GrantId(f"sub:otto-pro@{_iso(YEAR_STARTS[1])}"), 100 * CREDIT),), 0)
    # The renewal tick finds it there and grants nothing twice.
    engine.tick(YEAR_STARTS[1] + 2 * HOUR_US)
    balance = engine.balance("otto", YEAR_STARTS[1] + 2 * HOUR_US)
    assert (balance.overage_uc, balance.available_uc) == (0, PRO_CREDITS - 100 * CREDIT)
    p1 = packages(engine, "otto", YEAR_STARTS[1] + 2 * HOUR_US, GrantKind.SUBSCRIPTION)[1]
    assert (p1.grant.effective_at_us, p1.used_uc) == (YEAR_STARTS[1], 100 * CREDIT)
    assert balance.period is not None
    assert (balance.period.start_us, balance.period.used_uc) == (YEAR_STARTS[1], 100 * CREDIT)
    assert engine.check_invariants() == []


def test_without_a_subscription_the_period_is_the_calendar_month(engine: Engine) -> None:
    t0 = at("2028-03-02T00:00:00Z")
    engine.create_account("nora", t0)
    engine.purchase("nora", "addon-1000", t0, order_id="nora-1")
    use(engine, "n1", "nora", 10, at("2028-03-05T12:00:00Z"))
    balance = engine.balance("nora", at("2028-03-20T00:00:00Z"))
    assert balance.subscription is None
    assert balance.period is not None
    assert (balance.period.start_us, balance.period.end_us, balance.period.basis, balance.period.used_uc) == (
        at("2028-03-01"), at("2028-04-01"), "calendar_month", 10 * CREDIT)

    # A subscription that ended leaves the calendar month as the basis again.
    engine.subscribe("nora", PRO, at("2028-03-20T00:00:00Z"), subscription_id="nora-pro")
    during = engine.balance("nora", at("2028-03-21T00:00:00Z")).period
    assert during is not None and during.basis == "subscription"
    assert (during.start_us, during.end_us) == (at("2028-03-20"), at("2028-04-20"))
    engine.cancel_subscription("nora-pro", at("2028-03-21T00:00:00Z"))
    after = engine.balance("nora", at("2028-04-25T00:00:00Z")).period
    assert after is not None
    assert (after.start_us, after.end_us, after.basis) == (
        at("2028-04-01"), at("2028-05-01"), "calendar_month")


# -- 6. purchases ----------------------------------------------------------------------------------

def test_a_purchase_is_idempotent_by_order_id_and_valid_its_days(engine: Engine) -> None:
    t0 = at("2028-03-01T12:00:00Z")
    engine.create_account("pat", t0)
    engine.create_account("quinn", t0)
    bought = engine.purchase("pat", "addon-1000", t0, order_id="ord-1")
    assert bought.grant.kind is GrantKind.ADDON
    assert bought.grant.amount_uc == 1_000 * CREDIT
    assert (bought.grant.effective_at_us, bought.grant.expires_at_us) == (t0, t0 + 365 * DAY_US)
    assert bought.grant.expires_at_us == at("2029-03-01T12:00:00Z")
    assert bought.remaining_uc == 1_000 * CREDIT

    again = engine.purchase("pat", "addon-1000", t0 + HOUR_US, order_id="ord-1")
    assert again.grant == bought.grant
    assert len(packages(engine, "pat", t0 + DAY_US)) == 1
    assert engine.balance("pat", t0 + DAY_US).available_uc == 1_000 * CREDIT

    pat_before, quinn_before = snapshot(engine, "pat", t0 + DAY_US), snapshot(engine, "quinn", t0 + DAY_US)
    with pytest.raises(Conflict):
        engine.purchase("pat", "addon-5000", t0 + DAY_US, order_id="ord-1")
    with pytest.raises(Conflict):
        engine.purchase("quinn", "addon-1000", t0 + DAY_US, order_id="ord-1")
    assert snapshot(engine, "pat", t0 + DAY_US) == pat_before
    assert snapshot(engine, "quinn", t0 + DAY_US) == quinn_before

    pack = engine.purchase("pat", "package-3000", t0 + DAY_US, order_id="ord-2")
    assert pack.grant.kind is GrantKind.PACKAGE
    assert (pack.grant.effective_at_us, pack.grant.expires_at_us) == (t0 + DAY_US, t0 + 91 * DAY_US)
    assert pack.grant.priority == 50
    assert engine.balance("pat", t0 + DAY_US).available_uc == 4_000 * CREDIT
    # Each counts until its expiry, not at it.
    assert engine.balance("pat", t0 + 91 * DAY_US - US).available_uc == 4_000 * CREDIT
    assert engine.balance("pat", t0 + 91 * DAY_US).available_uc == 1_000 * CREDIT
    assert engine.balance("pat", t0 + 365 * DAY_US).available_uc == 0
    # Without an order id, each purchase is a new one.
    engine.purchase("quinn", "addon-1000", t0)
    engine.purchase("quinn", "addon-1000", t0)
    assert engine.balance("quinn", t0).available_uc == 2_000 * CREDIT
    assert engine.check_invariants() == []


# -- 7. bad input writes nothing ---------------------------------------------------------------------

T_BAD = at("2028-03-01T12:00:00Z")
LONG_ID = "s" * 201

BAD_CALLS: list[tuple[str, Callable[[Engine], object], type[CreditmeterError], str | None]] = [
    ("unknown plan", lambda e: e.subscribe("vic", "no-such-plan", T_BAD), NotFound, "plan"),
    ("unknown pack", lambda e: e.purchase("vic", "no-such-pack", T_BAD, order_id="o-1"), NotFound, None),
    ("a pack given to subscribe", lambda e: e.subscribe("vic", "addon-1000", T_BAD), InputError, "plan"),
    ("a resource package given to subscribe", lambda e: e.subscribe("vic", "package-3000", T_BAD),
     InputError, "plan"),
    ("a subscription plan given to purchase", lambda e: e.purchase("vic", PRO, T_BAD, order_id="o-2"),
     InputError, "pack"),
    ("the trial given to purchase", lambda e: e.purchase("vic", "trial", T_BAD, order_id="o-3"),
     InputError, "pack"),
    ("an enterprise plan given to purchase",
     lambda e: e.purchase("vic", "enterprise-seat", T_BAD, order_id="o-4"), InputError, "pack"),
    ("an enterprise plan on a user account", lambda e: e.subscribe("vic", "enterprise-seat", T_BAD),
     InputError, "plan"),
    ("an enterprise plan on a user account with seats",
     lambda e: e.subscribe("vic", "enterprise-seat", T_BAD, seats=3), InputError, "plan"),
    ("a user plan on an enterprise account", lambda e: e.subscribe("acme", PRO, T_BAD), InputError, "plan"),
    ("the trial on an enterprise account", lambda e: e.subscribe("acme", "trial", T_BAD), InputError, "plan"),
    ("a pack bought by an enterprise account",
     lambda e: e.purchase("acme", "addon-1000", T_BAD, order_id="o-5"), InputError, "pack"),
    ("seats on a non-enterprise plan", lambda e: e.subscribe("vic", PRO, T_BAD, seats=3),
     InputError, "seats"),
    ("seats on the trial", lambda e: e.subscribe("vic", "trial", T_BAD, seats=1), InputError, "seats"),
    ("seats 0", lambda e: e.subscribe("acme", "enterprise-seat", T_BAD, seats=0), InputError, "seats"),
    ("seats negative", lambda e: e.subscribe("acme", "enterprise-seat", T_BAD, seats=-2),
     InputError, "seats"),
    ("seats not a whole number", lambda e: e.subscribe("acme", "enterprise-seat", T_BAD, seats=2.5),  # type: ignore[arg-type]
     InputError, "seats"),
    ("seats true", lambda e: e.subscribe("acme", "enterprise-seat", T_BAD, seats=True), InputError, "seats"),
    ("seats over the maximum", lambda e: e.subscribe("acme", "enterprise-seat", T_BAD, seats=1_000_001),
     InputError, "seats"),
    ("an unknown account subscribing", lambda e: e.subscribe("ghost", PRO, T_BAD), NotFound, "account_id"),
    ("an unknown account buying", lambda e: e.purchase("ghost", "addon-1000", T_BAD, order_id="o-6"),
     NotFound, "account_id"),
    ("an unknown account's subscriptions", lambda e: e.subscriptions("ghost"), NotFound, "account_id"),
    ("a subscription id over 200 characters",
     lambda e: e.subscribe("vic", PRO, T_BAD, subscription_id=LONG_ID), InputError, "id"),
    ("a subscription id over 255 characters",
     lambda e: e.subscribe("vic", PRO, T_BAD, subscription_id="s" * 300), InputError, "id"),
    ("an empty subscription id", lambda e: e.subscribe("vic", PRO, T_BAD, subscription_id=""),
     InputError, "id"),
    ("an order id over 240 characters",
     lambda e: e.purchase("vic", "addon-1000", T_BAD, order_id="o" * 241), InputError, "id"),
    ("a bad instant", lambda e: e.subscribe("vic", PRO, -1), InputError, "at"),
    ("a subscription id used for another account",
     lambda e: e.subscribe("vic", PRO, T_BAD, subscription_id="wes-pro"), Conflict, None),
    ("a subscription id used for another plan",
     lambda e: e.subscribe("wes", "trial", T_BAD, subscription_id="wes-pro"), Conflict, None),
    ("a second running subscription", lambda e: e.subscribe("wes", PRO, T_BAD, subscription_id="wes-2"),
     Conflict, None),
    ("cancelling an unknown subscription", lambda e: e.cancel_subscription("no-such-sub", T_BAD),
     NotFound, "subscription_id"),
]


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """``vic`` has bought a pack, ``wes`` has a running subscription, ``acme`` is an enterprise."""
    t0 = at("2028-02-01T00:00:00Z")
    engine.create_account("vic", t0)
    engine.create_account("wes", t0)
    engine.create_account("acme", t0, kind="enterprise")
    engine.purchase("vic", "addon-1000", t0, order_id="vic-order")
    engine.subscribe("wes", PRO, t0, subscription_id="wes-pro")
    engine.subscribe("acme", "enterprise-seat", t0, subscription_id="acme-seats", seats=2)
    return engine


def test_bad_input_raises_the_right_error_and_writes_nothing(shop: Engine) -> None:
    """Each bad call on its own, on one database: a list of what went wrong, by case."""
    accounts = ("vic", "wes", "acme")
    wrong: list[str] = []
    for name, call, error, field in BAD_CALLS:
        before = {a: snapshot(shop, a, T_BAD) for a in accounts}
        try:
            call(shop)
        except CreditmeterError as exc:
            if type(exc) is not error:
                wrong.append(f"{name}: raised {type(exc).__name__} ({exc}), not {error.__name__}")
            elif field is not None and getattr(exc, "field", None) != field:
                wrong.append(f"{name}: names field {getattr(exc, 'field', None)!r}, not {field!r} ({exc})")
        else:
            wrong.append(f"{name}: raised nothing")
        if {a: snapshot(shop, a, T_BAD) for a in accounts} != before:
            wrong.append(f"{name}: wrote something")
        if shop.account("ghost") is not None:
            wrong.append(f"{name}: created the unknown account")
    assert wrong == []
    assert len(BAD_CALLS) > 25
    assert shop.check_invariants() == []


def test_unknown_pack_names_the_pack(shop: Engine) -> None:
    with pytest.raises(NotFound) as raised:
        shop.purchase("vic", "no-such-pack", T_BAD)
    assert raised.value.ident == "no-such-pack"
    assert "no-such-pack" in str(raised.value)


def test_a_subscription_id_of_200_characters_is_accepted(shop: Engine) -> None:
    sid = "s" * 200
    sub = shop.subscribe("vic", PRO, T_BAD, subscription_id=sid)
    assert sub.id == sid
    shop.tick(at("2028-04-01T12:00:00Z"))
    assert len(packages(shop, "vic", at("2028-04-01T12:00:00Z"), GrantKind.SUBSCRIPTION)) == 2


# -- 8. enterprise seats -------------------------------------------------------------------------------

def test_an_enterprise_plan_grants_seats_times_credits_per_seat_each_period(engine: Engine) -> None:
    anchor = at("2028-01-31T10:00:00Z")
    engine.create_account("acme", anchor, kind="enterprise")
    engine.create_account("globex", anchor, kind="enterprise")
    sub = engine.subscribe("acme", "enterprise-seat", anchor, subscription_id="acme-seats", seats=4)
    assert sub.seats == 4
    assert sub.allowance_uc == 4 * SEAT_CREDITS
    default = engine.subscribe("globex", "enterprise-seat", anchor, subscription_id="globex-seats")
    assert default.seats == 10  # the plan's seats_default

    # A catalog loaded later changes nothing for running subscriptions: they keep their terms.
    cheaper = parse_plans({"plans": [{"id": "enterprise-seat", "kind": "enterprise", "name": "Enterprise",
                                      "credits": 1, "period": "month", "seats_default": 1}]})
    engine.load_plans(cheaper, anchor + DAY_US)
    engine.tick(YEAR_STARTS[1])
    engine.tick(YEAR_STARTS[2] + DAY_US)
    got = packages(engine, "acme", YEAR_STARTS[2] + DAY_US, GrantKind.ENTERPRISE)
    assert [(p.grant.effective_at_us, p.grant.expires_at_us, p.grant.amount_uc) for p in got] == [
        (YEAR_STARTS[k], YEAR_STARTS[k + 1], 4 * SEAT_CREDITS) for k in range(3)]
    assert engine.balance("acme", YEAR_STARTS[2] + DAY_US).available_uc == 4 * SEAT_CREDITS
    assert windows(engine, "globex", YEAR_STARTS[2] + DAY_US, GrantKind.ENTERPRISE) == [
        (YEAR_STARTS[k], YEAR_STARTS[k + 1], 10 * SEAT_CREDITS) for k in range(3)]
    assert engine.check_invariants() == []


def test_subscription_terms_survive_a_new_catalog(engine: Engine) -> None:
    anchor = YEAR_STARTS[0]
    engine.create_account("kim", anchor)
    engine.subscribe("kim", PRO, anchor, subscription_id="kim-pro")
    engine.load_plans(parse_plans({"plans": [{"id": PRO, "kind": "subscription", "name": "Pro",
                                               "credits": 7, "period": "year"}]}), anchor + DAY_US)
    engine.tick(YEAR_STARTS[2])
    assert windows(engine, "kim", YEAR_STARTS[2], GrantKind.SUBSCRIPTION) == [
        (YEAR_STARTS[k], YEAR_STARTS[k + 1], PRO_CREDITS) for k in range(3)]
    stored: Subscription = engine.get_subscription("kim-pro")
    assert stored.plan.credits_uc == PRO_CREDITS





