"""The billing page's rule, as scenarios.

"The system prioritizes using the Credits quota of the Personal Trial Edition. When the quota is
insufficient, it prioritizes using the Credits that expire first, including Personal Professional
Edition, Personal Add-on Packs, and other types of resource packages."

Prices come from a small catalog where one token costs exactly one credit (1,000,000 credits per
1M tokens), so each scenario's numbers can be read straight off the page.
"""

from __future__ import annotations

import pytest

from creditmeter.domain import GrantStatus, Refused
from creditmeter.engine import Engine, Usage
from creditmeter.pricing import parse_catalog
from tests.conftest import EngineFactory, at

CREDIT = 1_000_000  # µc


@pytest.fixture
def dana(make_engine: EngineFactory) -> Engine:
    """Dana has a trial, a monthly Professional allowance, an add-on pack, and a resource pack
    that expires before the allowance does."""
    engine = make_engine()
    catalog = parse_catalog({"models": {"one-credit-per-token": {"input": 1_000_000, "output": 1_000_000}}})
    engine.load_prices(catalog, at("2026-11-01"), at("2026-11-01"))
    now = at("2026-11-01T09:00")
    engine.create_account("dana", now)
    engine.add_grant("dana", 100 * CREDIT, "trial", now, expires_at_us=at("2026-11-15"),
                     name="Personal Trial Edition", grant_id="trial")
    engine.add_grant("dana", 1_000 * CREDIT, "subscription", now, expires_at_us=at("2026-12-01"),
                     name="Personal Professional Edition — Nov 2026", grant_id="pro")
    engine.add_grant("dana", 500 * CREDIT, "addon", now, expires_at_us=at("2027-11-01"),
                     name="Personal Add-on Pack", grant_id="addon")
    engine.add_grant("dana", 200 * CREDIT, "package", now, expires_at_us=at("2026-11-20"),
                     name="Resource pack", grant_id="pack")
    return engine


def use(engine: Engine, event_id: str, credits: int, when: str, timestamp: str | None = None):  # noqa: ANN201
    event = {"id": event_id, "account_id": "dana", "model": "one-credit-per-token",
             "input_tokens": credits}
    if timestamp:
        event["timestamp"] = timestamp
    return engine.record(event, at(when))


def packages(engine: Engine, when: str) -> dict[str, tuple[int, int, int, str]]:
    """grant id -> (used, remaining, expired, status), in credits."""
    balance = engine.balance("dana", at(when))
    return {p.grant.id: (p.used_uc // CREDIT, p.remaining_uc // CREDIT, p.expired_uc // CREDIT,
                         p.status.value) for p in balance.packages}


def test_packages_are_listed_in_burn_down_order(dana: Engine) -> None:
    order = [p.grant.id for p in dana.balance("dana", at("2026-11-02")).packages]
    assert order == ["trial", "pack", "pro", "addon"]


def test_usage_takes_the_trial_first(dana: Engine) -> None:
    charge = use(dana, "r1", 60, "2026-11-02T10:00")
    assert [(a.grant_id, a.amount_uc // CREDIT) for a in charge.allocations] == [("trial", 60)]
    assert packages(dana, "2026-11-02T10:00")["trial"] == (60, 40, 0, "active")


def test_then_whatever_expires_soonest_and_a_charge_spanning_packages_is_split(dana: Engine) -> None:
    use(dana, "r1", 90, "2026-11-02T10:00")
    charge = use(dana, "r2", 30, "2026-11-02T11:00")
    # 10 left on the trial, then the resource pack (expires Nov 20) before the allowance (Dec 1).
    assert [(a.grant_id, a.amount_uc // CREDIT) for a in charge.allocations] == [("trial", 10), ("pack", 20)]
    charge = use(dana, "r3", 250, "2026-11-03T10:00")
    assert [(a.grant_id, a.amount_uc // CREDIT) for a in charge.allocations] == [("pack", 180), ("pro", 70)]
    view = packages(dana, "2026-11-03T10:00")
    assert view["trial"] == (100, 0, 0, "depleted")
    assert view["pack"] == (200, 0, 0, "depleted")
    assert view["pro"] == (70, 930, 0, "active")
    assert view["addon"] == (0, 500, 0, "active")
    assert dana.check_invariants() == []


def test_expired_credits_stop_counting_at_the_expiry_instant(dana: Engine) -> None:
    use(dana, "r1", 100, "2026-11-02T10:00")  # the trial is used up
    use(dana, "r2", 50, "2026-11-10T10:00")   # 50 of the resource pack
    just_before = dana.balance("dana", at("2026-11-19T23:59:59.999999"))
    at_expiry = dana.balance("dana", at("2026-11-20T00:00"))
    assert just_before.available_uc == (150 + 1_000 + 500) * CREDIT
    assert at_expiry.available_uc == (1_000 + 500) * CREDIT  # no sweep has run
    pack = next(p for p in at_expiry.packages if p.grant.id == "pack")
    assert (pack.expired_uc, pack.remaining_uc, pack.status) == (150 * CREDIT, 0, GrantStatus.EXPIRED)
    # Usage after the expiry goes to the next package in line.
    charge = use(dana, "r3", 10, "2026-11-20T00:00")
    assert [a.grant_id for a in charge.allocations] == ["pro"]
    # The sweep records the expiry in the ledger; the figures do not change.
    dana.tick(at("2026-11-20T00:01"))
    assert packages(dana, "2026-11-20T00:01")["pack"] == (50, 0, 150, "expired")
    assert dana.check_invariants() == []


def test_a_late_event_may_still_draw_on_credits_that_expired_after_it(dana: Engine) -> None:
    use(dana, "r1", 100, "2026-11-02T10:00")
    dana.tick(at("2026-11-20T01:00"))  # records 200 expired on the resource pack
    late = use(dana, "late", 30, "2026-11-20T02:00", timestamp="2026-11-19T23:00")
    assert [(a.grant_id, a.amount_uc // CREDIT) for a in late.allocations] == [("pack", 30)]
    assert packages(dana, "2026-11-20T02:00")["pack"] == (30, 0, 170, "expired")
    assert dana.check_invariants() == []  # the recorded expiry was corrected by a new entry


def test_overage_appears_when_nothing_is_left_and_the_next_grant_pays_it(dana: Engine) -> None:
    charge = use(dana, "big", 1_850, "2026-11-05T10:00")
    assert charge.overage_uc == 50 * CREDIT
    balance = dana.balance("dana", at("2026-11-05T10:00"))
    assert (balance.available_uc, balance.overage_uc) == (0, 50 * CREDIT)
    refused = dana.reserve("dana", 1 * CREDIT, at("2026-11-05T10:01"))
    assert isinstance(refused, Refused)
    dana.add_grant("dana", 1_000 * CREDIT, "subscription", at("2026-12-01"), expires_at_us=at("2027-01-01"),
                   name="Personal Professional Edition — Dec 2026", grant_id="pro-dec")
    balance = dana.balance("dana", at("2026-12-01"))
    assert balance.overage_uc == 0
    assert balance.available_uc == (500 - 500 + 950) * CREDIT  # the add-on was used up by "big"
    assert dana.check_invariants() == []


def test_a_hold_reserves_credits_at_once_and_settles_from_what_it_holds(dana: Engine) -> None:
    before = dana.balance("dana", at("2026-11-02T10:00")).available_uc
    small = dana.reserve("dana", 120, at("2026-11-02T10:00"), hold_id="h1")  # 120 µc
    hold = dana.reserve("dana", 120 * CREDIT, at("2026-11-02T10:00"), hold_id="h2")
    assert not isinstance(small, Refused) and not isinstance(hold, Refused)
    # The hold takes packages in burn-down order too: what is left of the trial, then the pack.
    assert [(p.grant_id, p.amount_uc) for p in hold.parts] == [("trial", 100 * CREDIT - 120),
                                                              ("pack", 20 * CREDIT + 120)]
    during = dana.balance("dana", at("2026-11-02T10:00:01"))
    assert during.held_uc == 120 * CREDIT + 120
    assert during.available_uc == before - 120 * CREDIT - 120  # at once
    charge = dana.settle("h2", Usage("one-credit-per-token", 80), at("2026-11-02T10:00:05"))
    assert charge.cost_uc == 80 * CREDIT
    assert [(a.grant_id, a.amount_uc) for a in charge.allocations] == [("trial", 80 * CREDIT)]
    after = dana.balance("dana", at("2026-11-02T10:00:06"))
    assert after.held_uc == 120  # only h1 is still held; the rest of h2 came back
    assert after.available_uc == before - 80 * CREDIT - 120
    # h1 lapses after its ttl (10 minutes by default) without any sweep.
    assert dana.balance("dana", at("2026-11-02T10:10:00")).held_uc == 0
    assert dana.check_invariants() == []


def test_settling_more_than_was_held_charges_the_difference_like_usage(dana: Engine) -> None:
    hold = dana.reserve("dana", 10 * CREDIT, at("2026-11-02T10:00"), hold_id="h")
    assert not isinstance(hold, Refused)
    charge = dana.settle("h", Usage("one-credit-per-token", 150), at("2026-11-02T10:01"))
    assert [(a.grant_id, a.amount_uc // CREDIT) for a in charge.allocations] == [("trial", 100), ("pack", 50)]
    again = dana.settle("h", Usage("one-credit-per-token", 150), at("2026-11-02T10:02"))
    assert again.status == "duplicate" and again.allocations == charge.allocations
    assert packages(dana, "2026-11-02T10:02")["trial"] == (100, 0, 0, "depleted")
    assert dana.check_invariants() == []


def test_voiding_a_package_removes_what_remains_not_what_was_used(dana: Engine) -> None:
    use(dana, "r1", 150, "2026-11-02T10:00")  # trial 100, pack 50
    package = dana.void_grant("pack", at("2026-11-03"))
    assert (package.used_uc, package.voided_uc, package.remaining_uc) == (50 * CREDIT, 150 * CREDIT, 0)
    assert package.status is GrantStatus.VOIDED
    charge = use(dana, "r2", 10, "2026-11-03T01:00")
    assert [a.grant_id for a in charge.allocations] == ["pro"]
    assert dana.check_invariants() == []
