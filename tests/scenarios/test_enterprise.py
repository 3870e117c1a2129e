"""Enterprise pools and member quota as scenarios (SPEC §4, §8, §10 keys and roles, §11).

An enterprise account holds the pool's packages. An admin adds quota to a member: X credits valid
until T move out of the pool, in burn-down order, from pool packages valid until at least T, into
a new ``enterprise`` package on the member named after the enterprise. The member's usage burns it
down with their other packages by the same order; revoking returns what is unused (and not held)
to the pool. Through the API an enterprise's admins manage its quota; everyone else is told the
enterprise does not exist, and only the operator adds or removes members.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture), with the example price
catalog (``web_search`` costs 2 credits a call); every instant is passed explicitly, and the
ledger's invariants hold after each scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient

from creditmeter.domain import Charge, GrantKind, Package, Refused
from creditmeter.engine import Engine, EnterpriseView, Usage
from creditmeter.enterprise import QuotaAllocation, allocation_grant_id
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound
from creditmeter.money import MAX_UC
from creditmeter.timeutil import format_instant
from tests.api import conftest as api_fixtures
from tests.api.conftest import OPERATOR, Clock, bearer
from tests.conftest import at

CREDIT = 1_000_000  # µc
NOW = at("2026-11-10T12:00:00Z")
HOUR_US = 3_600 * 1_000_000
T = at("2026-12-31T00:00:00Z")  # the quota's expiry in most scenarios
ACME = "Acme Corp"

# The API's fixtures (an in-process client over ``engine``, on both stores, and its clock).
api = api_fixtures.api
clock = api_fixtures.clock


# -- helpers ---------------------------------------------------------------------------------------


def qid(key: str, enterprise: str = "acme") -> str:
    """The member package's (and allocation's) id for an allocation made with ``key``."""
    return allocation_grant_id(enterprise, key)

def _iso(us: int) -> str:
    text = format_instant(us)
    assert text is not None
    return text


def company(engine: Engine, *members: str, enterprise: str = "acme", name: str = ACME) -> None:
    """An enterprise account and user accounts that are its members."""
    engine.create_account(enterprise, NOW, name=name, kind="enterprise")
    for member in members:
        engine.create_account(member, NOW)
        engine.add_member(enterprise, member, NOW)


def pool_grant(engine: Engine, grant_id: str, credits: int, *, expires: int | None,
               priority: int | None = None, enterprise: str = "acme") -> None:
    engine.add_grant(enterprise, credits * CREDIT, "package", NOW, expires_at_us=expires,
                     priority=priority, grant_id=grant_id, name=f"pool {grant_id}")


def use(engine: Engine, event_id: str, account: str, credits: int, when: int) -> Charge:
    """Record ``credits`` credits of usage on ``account`` at ``when``."""
    assert credits % 2 == 0
    event: dict[str, object] = {"id": event_id, "account_id": account, "timestamp": _iso(when),
                                "quantities": {"web_search": credits // 2}}
    return engine.record(event, when)


def searches(credits: int) -> Usage:
    """The usage of a request costing ``credits`` credits."""
    assert credits % 2 == 0
    return Usage(None, quantities=(("web_search", credits // 2),))


def pool_used(view: EnterpriseView) -> dict[str, int]:
    """Pool package id -> used credits."""
    return {p.grant.id: p.used_uc // CREDIT for p in view.pool.packages}


def parts(allocation: QuotaAllocation) -> list[tuple[str, int]]:
    return [(p.grant_id, p.amount_uc // CREDIT) for p in allocation.parts]


def the_allocation(view: EnterpriseView, allocation_id: str) -> QuotaAllocation:
    found = [a for a in view.allocations if a.id == allocation_id]
    assert len(found) == 1, view.allocations
    return found[0]


def package(engine: Engine, account: str, grant_id: str, at_us: int) -> Package:
    found = [p for p in engine.balance(account, at_us).packages if p.grant.id == grant_id]
    assert len(found) == 1, engine.balance(account, at_us).packages
    return found[0]


def figures(p: Package) -> tuple[int, int, int, int, int, str]:
    """(used, held, expired, voided, remaining) in credits, and the status."""
    return (p.used_uc // CREDIT, p.held_uc // CREDIT, p.expired_uc // CREDIT, p.voided_uc // CREDIT,
            p.remaining_uc // CREDIT, p.status.value)


def snapshot(engine: Engine, accounts: list[str], at_us: int, enterprise: str = "acme") -> tuple[Any, ...]:
    """Everything the enterprise and the accounts show at ``at_us``."""
    view = engine.enterprise(enterprise, at_us)
    balances = tuple(engine.balance(a, at_us) for a in accounts)
    return (view.pool, tuple(view.members), tuple(view.allocations),
            tuple(sorted((k, tuple(v)) for k, v in view.quota.items())), balances)


Kinds = type[CreditmeterError] | tuple[type[CreditmeterError], ...]


def refused(call: Callable[[], object], kind: Kinds, field: str) -> CreditmeterError:
    with pytest.raises(kind) as caught:
        call()
    assert getattr(caught.value, "field", None) == field, caught.value
    return caught.value


# -- 1. allocation: burn-down order, only from grants that outlive it -------------------------------

def test_allocation_draws_in_burn_down_order_only_from_pool_grants_that_outlive_it(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p-short", 100, expires=at("2026-12-01"))          # expires before T
    pool_grant(engine, "p-prio", 150, expires=at("2027-03-01"), priority=20)
    pool_grant(engine, "p-exact", 50, expires=T)                           # lasts exactly until T
    pool_grant(engine, "p-soon", 200, expires=at("2027-01-01"))
    pool_grant(engine, "p-never", 1_000, expires=None)
    assert [p.grant.id for p in engine.enterprise("acme", NOW).pool.packages] == [
        "p-prio", "p-short", "p-exact", "p-soon", "p-never"]
    available = engine.balance("acme", NOW).available_uc

    quota = engine.allocate("acme", "mel", 380 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")

    assert quota.grant.id == qid("q1") and quota.grant.account_id == "mel"
    assert quota.grant.kind is GrantKind.ENTERPRISE
    assert quota.grant.amount_uc == 380 * CREDIT
    assert quota.grant.expires_at_us == T and quota.grant.effective_at_us == NOW
    assert ACME in quota.grant.name
    assert figures(quota) == (0, 0, 0, 0, 380, "active")
    view = engine.enterprise("acme", NOW + 1)
    assert parts(the_allocation(view, qid("q1"))) == [("p-prio", 150), ("p-exact", 50), ("p-soon", 180)]
    assert pool_used(view) == {"p-prio": 150, "p-short": 0, "p-exact": 50, "p-soon": 180, "p-never": 0}
    assert the_allocation(view, qid("q1")).member_id == "mel"
    assert engine.balance("acme", NOW + 1).available_uc == available - 380 * CREDIT
    assert [p.grant.id for p in view.quota["mel"]] == [qid("q1")]
    mel = engine.balance("mel", NOW + 1)
    assert mel.available_uc == 380 * CREDIT
    assert [(p.grant.id, p.grant.kind, p.grant.expires_at_us) for p in mel.packages] == [
        (qid("q1"), GrantKind.ENTERPRISE, T)]
    # Until 2027-02-01 only p-prio (spent) and p-never last: p-soon's 20 and p-short are not eligible.
    engine.allocate("acme", "mel", 40 * CREDIT, NOW, expires_at_us=at("2027-02-01"), allocation_id="q0")
    assert parts(engine.allocation(qid("q0"))) == [("p-never", 40)]

    # Without an expiry: from any usable pool grant, lasting as long as the earliest it drew on.
    lasting = engine.allocate("acme", "mel", 120 * CREDIT, NOW + 2, allocation_id="q2")
    view = engine.enterprise("acme", NOW + 3)
    assert parts(the_allocation(view, qid("q2"))) == [("p-short", 100), ("p-soon", 20)]
    assert lasting.grant.expires_at_us == at("2026-12-01")
    assert pool_used(view) == {"p-prio": 150, "p-short": 100, "p-exact": 50, "p-soon": 200, "p-never": 40}

    # Drawn only from a never-expiring grant, it never expires either.
    forever = engine.allocate("acme", "mel", 10 * CREDIT, NOW + 4, allocation_id="q3")
    assert parts(the_allocation(engine.enterprise("acme", NOW + 5), qid("q3"))) == [("p-never", 10)]
    assert forever.grant.expires_at_us is None
    assert engine.balance("mel", NOW + 5).available_uc == 550 * CREDIT
    assert engine.check_invariants() == []


def test_the_same_allocation_id_again_answers_the_same_quota_and_another_body_conflicts(
        engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 100, expires=None)
    first = engine.allocate("acme", "mel", 40 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    before = snapshot(engine, ["mel"], NOW + 1)
    again = engine.allocate("acme", "mel", 40 * CREDIT, NOW + 1, expires_at_us=T, allocation_id="q1")
    assert again.grant == first.grant
    assert snapshot(engine, ["mel"], NOW + 1) == before
    with pytest.raises(Conflict):
        engine.allocate("acme", "mel", 41 * CREDIT, NOW + 1, expires_at_us=T, allocation_id="q1")
    # Allocation packages live in a namespace of their own: no other package id can be taken
    # (or probed) through an allocation id, and no package can take an allocation's id.
    refused(lambda: engine.add_grant("mel", 5 * CREDIT, "promo", NOW, grant_id=qid("promo-1")),
            InputError, "id")
    assert snapshot(engine, ["mel"], NOW + 1)[:4] == before[:4]
    engine.add_grant("mel", 5 * CREDIT, "promo", NOW, grant_id="promo-1")
    other = engine.allocate("acme", "mel", 1 * CREDIT, NOW + 1, expires_at_us=T, allocation_id="promo-1")
    assert other.grant.id == qid("promo-1") != "promo-1"
    assert engine.check_invariants() == []


# -- 2. refused when the pool cannot cover it ---------------------------------------------------------

def test_an_allocation_the_pool_cannot_cover_is_refused_and_writes_nothing(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p-early", 100, expires=at("2026-12-01"))
    pool_grant(engine, "p-late", 50, expires=at("2027-06-01"))
    before = snapshot(engine, ["mel"], NOW + 1)

    # More than the whole pool.
    refused(lambda: engine.allocate("acme", "mel", 200 * CREDIT, NOW, expires_at_us=T), InputError, "amount")
    refused(lambda: engine.allocate("acme", "mel", 151 * CREDIT, NOW), InputError, "amount")
    # Enough credits (150), but only 50 of them last until T.
    refused(lambda: engine.allocate("acme", "mel", 100 * CREDIT, NOW, expires_at_us=T), InputError, "amount")
    refused(lambda: engine.allocate("acme", "mel", 50 * CREDIT + 1, NOW, expires_at_us=T,
                                    allocation_id="q-short"), InputError, "amount")
    assert snapshot(engine, ["mel"], NOW + 1) == before
    with pytest.raises(NotFound):  # the refused id was not taken
        engine.allocation(qid("q-short"))

    # What does last until T can be allocated, to the µc.
    quota = engine.allocate("acme", "mel", 50 * CREDIT, NOW, expires_at_us=T, allocation_id="q-ok")
    assert figures(quota) == (0, 0, 0, 0, 50, "active")
    assert pool_used(engine.enterprise("acme", NOW + 1)) == {"p-early": 0, "p-late": 50}
    # The pool's credits that are left expire before T.
    refused(lambda: engine.allocate("acme", "mel", 1, NOW, expires_at_us=T), InputError, "amount")

    # An empty pool.
    company(engine, enterprise="empty", name="Empty Ltd")
    engine.add_member("empty", "mel", NOW)
    refused(lambda: engine.allocate("empty", "mel", 1 * CREDIT, NOW), InputError, "amount")
    refused(lambda: engine.allocate("empty", "mel", 1 * CREDIT, NOW, expires_at_us=T), InputError, "amount")
    assert engine.enterprise("empty", NOW + 1).allocations == []
    assert engine.check_invariants() == []


def test_credits_held_or_expired_in_the_pool_cannot_be_allocated(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 100, expires=at("2027-06-01"))
    assert not isinstance(engine.reserve("acme", 70 * CREDIT, NOW), Refused)
    refused(lambda: engine.allocate("acme", "mel", 31 * CREDIT, NOW + 1, expires_at_us=T),
            InputError, "amount")
    engine.allocate("acme", "mel", 30 * CREDIT, NOW + 1, expires_at_us=T, allocation_id="q1")
    # After the pool grant's expiry nothing of it can be given out, not even without an expiry.
    company(engine, enterprise="brief", name="Brief Inc")
    engine.add_member("brief", "mel", NOW)
    pool_grant(engine, "b", 100, expires=NOW + HOUR_US, enterprise="brief")
    refused(lambda: engine.allocate("brief", "mel", 1 * CREDIT, NOW + HOUR_US), InputError, "amount")
    assert engine.enterprise("brief", NOW + HOUR_US).allocations == []
    assert engine.check_invariants() == []


def test_concurrent_allocations_never_take_more_than_the_pool(engine: Engine) -> None:
    company(engine, "mel", "max", "ada", "bob")
    pool_grant(engine, "p", 100, expires=None)
    members = ["mel", "max", "ada", "bob"]

    def allocate(member: str) -> bool:
        try:
            engine.allocate("acme", member, 40 * CREDIT, NOW, expires_at_us=T, allocation_id=f"q-{member}")
            return True
        except InputError as exc:
            assert exc.field == "amount"
            return False

    with ThreadPoolExecutor(len(members)) as pool:
        outcomes = list(pool.map(allocate, members))
    assert outcomes.count(True) == 2
    view = engine.enterprise("acme", NOW + 1)
    assert pool_used(view) == {"p": 80}
    assert len(view.allocations) == 2
    assert sum(engine.balance(m, NOW + 1).available_uc for m in members) == 80 * CREDIT
    assert engine.check_invariants() == []


# -- 3. revoke -------------------------------------------------------------------------------------

def test_revoke_voids_the_unused_quota_and_returns_exactly_that_to_the_pool(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p-a", 200, expires=at("2027-01-01"))
    pool_grant(engine, "p-b", 500, expires=at("2027-06-01"))
    engine.add_grant("mel", 100 * CREDIT, "addon", NOW, expires_at_us=at("2027-09-01"), grant_id="addon")
    engine.allocate("acme", "mel", 300 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    assert parts(engine.allocation(qid("q1"))) == [("p-a", 200), ("p-b", 100)]
    use(engine, "e1", "mel", 30, NOW + HOUR_US)
    use(engine, "e2", "mel", 20, NOW + 2 * HOUR_US)
    assert figures(package(engine, "mel", qid("q1"), NOW + 3 * HOUR_US)) == (50, 0, 0, 0, 250, "active")
    pool_before = engine.balance("acme", NOW + 3 * HOUR_US).available_uc

    revoked = engine.revoke_allocation(qid("q1"), NOW + 3 * HOUR_US)

    assert revoked.returned_uc == 250 * CREDIT
    assert revoked.revoked_at_us == NOW + 3 * HOUR_US
    at_us = NOW + 4 * HOUR_US
    assert figures(package(engine, "mel", qid("q1"), at_us)) == (50, 0, 0, 250, 0, "voided")
    assert engine.balance("acme", at_us).available_uc == pool_before + 250 * CREDIT
    assert sum(pool_used(engine.enterprise("acme", at_us)).values()) == 50
    assert engine.balance("mel", at_us).available_uc == 100 * CREDIT  # the add-on only
    view = engine.enterprise("acme", at_us)
    assert the_allocation(view, qid("q1")).revoked_at_us == NOW + 3 * HOUR_US
    assert the_allocation(view, qid("q1")).returned_uc == 250 * CREDIT
    assert [figures(p) for p in view.quota["mel"]] == [(50, 0, 0, 250, 0, "voided")]

    # Revoking again changes nothing and answers the first revoke.
    before = snapshot(engine, ["mel"], at_us)
    again = engine.revoke_allocation(qid("q1"), NOW + 5 * HOUR_US)
    assert again.returned_uc == 250 * CREDIT and again.revoked_at_us == NOW + 3 * HOUR_US
    assert snapshot(engine, ["mel"], at_us) == before

    # The member's next usage no longer touches the quota.
    charge = use(engine, "e3", "mel", 10, NOW + 6 * HOUR_US)
    assert [(p.grant_id, p.amount_uc // CREDIT) for p in charge.allocations] == [("addon", 10)]
    assert engine.balance("acme", NOW + 7 * HOUR_US).available_uc == pool_before + 250 * CREDIT
    with pytest.raises(NotFound):
        engine.revoke_allocation("no-such-quota", NOW)
    assert engine.check_invariants() == []


def test_revoke_returns_the_credits_to_the_longest_lived_pool_grants_first(engine: Engine) -> None:
    """cli.md: the unused part goes back to the pool packages it came from, the longest-lived
    first (each at most what it gave)."""
    company(engine, "mel")
    pool_grant(engine, "p-long", 200, expires=at("2027-06-01"), priority=10)  # drawn first (priority)
    pool_grant(engine, "p-short", 500, expires=at("2027-01-01"))
    engine.allocate("acme", "mel", 300 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    assert parts(engine.allocation(qid("q1"))) == [("p-long", 200), ("p-short", 100)]
    use(engine, "e1", "mel", 50, NOW + 1)
    engine.revoke_allocation(qid("q1"), NOW + 2)
    # 250 come back: 200 to p-long (the longest-lived), then 50 to p-short.
    assert pool_used(engine.enterprise("acme", NOW + 3)) == {"p-long": 0, "p-short": 50}
    assert engine.check_invariants() == []


def test_revoke_keeps_what_open_holds_hold_and_never_overspends(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 1_000, expires=None)
    engine.add_grant("mel", 100 * CREDIT, "addon", NOW, expires_at_us=at("2027-09-01"), grant_id="addon")
    engine.allocate("acme", "mel", 100 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    use(engine, "e1", "mel", 20, NOW + 1)
    for hold_id, credits, ttl in (("h1", 20, 600), ("h2", 10, 600), ("h3", 6, 60)):
        hold = engine.reserve("mel", credits * CREDIT, NOW + 2, ttl_s=ttl, hold_id=hold_id)
        assert not isinstance(hold, Refused)
        assert [(p.grant_id, p.amount_uc // CREDIT) for p in hold.parts] == [(qid("q1"), credits)]
    pool_before = engine.balance("acme", NOW + 2).available_uc
    revoke_at = NOW + 120 * 1_000_000  # h3's ttl has passed: it holds nothing any more

    # While requests in flight hold part of the quota, revoking is refused (their credits would
    # otherwise end up neither the member's nor the pool's); nothing changes.
    before = snapshot(engine, ["mel", "acme"], revoke_at)
    refused(lambda: engine.revoke_allocation(qid("q1"), revoke_at), Conflict, None)
    assert snapshot(engine, ["mel", "acme"], revoke_at) == before
    return_after_holds(engine, pool_before, revoke_at)


def return_after_holds(engine: Engine, pool_before: int, revoke_at: int) -> None:
    """Once the holds have ended, revoking returns everything the member did not use."""
    # h1 settles for more than it held: the rest comes from the quota (first in burn-down order).
    charge = engine.settle("h1", searches(26), revoke_at + 2)
    assert [(p.grant_id, p.amount_uc // CREDIT) for p in charge.allocations] == [(qid("q1"), 26)]
    assert charge.overage_uc == 0
    engine.release("h2", revoke_at + 3)
    revoked = engine.revoke_allocation(qid("q1"), revoke_at + 4)
    assert revoked.returned_uc == 54 * CREDIT  # 100 - 20 (e1) - 26 (h1's settle)
    at_us = revoke_at + 5
    assert figures(package(engine, "mel", qid("q1"), at_us)) == (46, 0, 0, 54, 0, "voided")
    assert package(engine, "mel", "addon", at_us).used_uc == 0
    assert engine.balance("acme", at_us).available_uc == pool_before + 54 * CREDIT
    assert engine.allocation(qid("q1")).returned_uc == 54 * CREDIT
    assert engine.balance("mel", at_us).available_uc == 100 * CREDIT
    assert engine.check_invariants() == []
    engine.tick(at_us + 1)
    assert engine.check_invariants() == []


def test_revoking_quota_that_already_expired_returns_nothing_and_leaves_it_expired(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 100, expires=None)
    engine.allocate("acme", "mel", 10 * CREDIT, NOW, expires_at_us=at("2026-12-01"), allocation_id="q1")
    use(engine, "e1", "mel", 4, NOW + 1)
    later = at("2026-12-05")
    assert figures(package(engine, "mel", qid("q1"), later)) == (4, 0, 6, 0, 0, "expired")
    pool_before = engine.balance("acme", later).available_uc

    revoked = engine.revoke_allocation(qid("q1"), later)

    assert revoked.returned_uc == 0
    assert engine.balance("acme", later + 1).available_uc == pool_before
    # What expired stays expired: it was not returned, so it is not shown as returned (voided).
    assert figures(package(engine, "mel", qid("q1"), later + 1)) == (4, 0, 6, 0, 0, "expired")
    quota = engine.enterprise("acme", later + 1).quota["mel"]
    assert [(p.expired_uc, p.voided_uc) for p in quota] == [(6 * CREDIT, 0)]
    assert engine.check_invariants() == []


# -- 4. the member's burn-down order ---------------------------------------------------------------

def test_member_usage_burns_trial_then_the_soonest_expiring_quota_then_the_addon(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 1_000, expires=None)
    engine.add_grant("mel", 10 * CREDIT, "trial", NOW, expires_at_us=at("2027-02-01"), grant_id="trial")
    engine.add_grant("mel", 100 * CREDIT, "addon", NOW, expires_at_us=at("2027-09-01"), grant_id="addon")
    engine.allocate("acme", "mel", 50 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    assert [p.grant.id for p in engine.balance("mel", NOW).packages] == ["trial", qid("q1"), "addon"]

    def paid(event_id: str, credits: int, when: int) -> list[tuple[str, int]]:
        charge = use(engine, event_id, "mel", credits, when)
        assert charge.overage_uc == 0
        return [(p.grant_id, p.amount_uc // CREDIT) for p in charge.allocations]

    assert paid("e1", 6, NOW + 1) == [("trial", 6)]
    assert paid("e2", 10, NOW + 2) == [("trial", 4), (qid("q1"), 6)]
    assert paid("e3", 50, NOW + 3) == [(qid("q1"), 44), ("addon", 6)]
    at_us = NOW + 4
    assert figures(package(engine, "mel", "trial", at_us)) == (10, 0, 0, 0, 0, "depleted")
    assert figures(package(engine, "mel", qid("q1"), at_us)) == (50, 0, 0, 0, 0, "depleted")
    assert figures(package(engine, "mel", "addon", at_us)) == (6, 0, 0, 0, 94, "active")
    # The enterprise sees its quota used up; the pool is untouched by the member's usage.
    view = engine.enterprise("acme", at_us)
    assert [figures(p) for p in view.quota["mel"]] == [(50, 0, 0, 0, 0, "depleted")]
    assert pool_used(view) == {"p": 50}
    assert engine.check_invariants() == []


def test_quota_expires_at_its_time_and_usage_after_it_goes_to_the_other_packages(engine: Engine) -> None:
    company(engine, "mel")
    pool_grant(engine, "p", 1_000, expires=None)
    engine.add_grant("mel", 100 * CREDIT, "addon", NOW, expires_at_us=at("2027-09-01"), grant_id="addon")
    engine.allocate("acme", "mel", 50 * CREDIT, NOW, expires_at_us=T, allocation_id="q1")
    use(engine, "e1", "mel", 20, NOW + 1)
    assert figures(package(engine, "mel", qid("q1"), T - 1)) == (20, 0, 0, 0, 30, "active")
    assert figures(package(engine, "mel", qid("q1"), T)) == (20, 0, 30, 0, 0, "expired")
    charge = use(engine, "e2", "mel", 4, T)
    assert [(p.grant_id, p.amount_uc // CREDIT) for p in charge.allocations] == [("addon", 4)]
    assert engine.check_invariants() == []


# -- 5. members and roles --------------------------------------------------------------------------

def test_members_and_roles(engine: Engine) -> None:
    company(engine)
    engine.create_account("globex", NOW, name="Globex", kind="enterprise")
    for user in ("mel", "ada", "out"):
        engine.create_account(user, NOW)
    pool_grant(engine, "p", 100, expires=None)

    assert engine.add_member("acme", "mel", NOW).role.value == "member"
    assert engine.add_member("acme", "mel", NOW + 1, role="admin").role.value == "admin"
    assert [(m.account_id, m.role.value) for m in engine.enterprise("acme", NOW + 2).members] == [
        ("mel", "admin")]
    assert engine.add_member("acme", "mel", NOW + 2, role="member").role.value == "member"
    engine.add_member("acme", "ada", NOW + 2, role="admin")
    assert sorted((m.account_id, m.role.value) for m in engine.enterprise("acme", NOW + 3).members) == [
        ("ada", "admin"), ("mel", "member")]
    refused(lambda: engine.add_member("acme", "out", NOW, role="owner"), InputError, "role")

    # Remove: a non-member is not found; the quota already added stays the member's.
    before = snapshot(engine, ["mel", "out"], NOW + 3)
    refused(lambda: engine.remove_member("acme", "out", NOW + 3), NotFound, "account_id")
    refused(lambda: engine.remove_member("acme", "nobody", NOW + 3), NotFound, "account_id")
    assert snapshot(engine, ["mel", "out"], NOW + 3) == before
    engine.allocate("acme", "mel", 30 * CREDIT, NOW + 3, expires_at_us=T, allocation_id="q1")
    engine.remove_member("acme", "mel", NOW + 4)
    refused(lambda: engine.remove_member("acme", "mel", NOW + 5), NotFound, "account_id")
    view = engine.enterprise("acme", NOW + 5)
    assert [m.account_id for m in view.members] == ["ada"]
    assert [p.grant.id for p in view.quota["mel"]] == [qid("q1")]  # still shown to the admin
    assert engine.balance("mel", NOW + 5).available_uc == 30 * CREDIT

    # Allocating to a non-member (a removed one, an outsider, an unknown account) names account_id.
    before = snapshot(engine, ["mel", "out"], NOW + 5)
    for who in ("mel", "out"):
        error = refused(partial(engine.allocate, "acme", who, CREDIT, NOW + 5), InputError, "account_id")
        assert who in str(error)
    # An account that does not exist is not a member either (or simply not found).
    error = refused(lambda: engine.allocate("acme", "nobody", CREDIT, NOW + 5), (InputError, NotFound),
                    "account_id")
    assert "nobody" in str(error)
    assert snapshot(engine, ["mel", "out"], NOW + 5) == before
    # Revoking still works after the member left.
    assert engine.revoke_allocation(qid("q1"), NOW + 6).returned_uc == 30 * CREDIT
    # A member of two enterprises: each sees only the quota it added.
    engine.add_member("globex", "out", NOW + 6)
    engine.add_member("acme", "out", NOW + 6)
    engine.add_grant("globex", 50 * CREDIT, "package", NOW, grant_id="pool-globex")
    engine.allocate("globex", "out", 7 * CREDIT, NOW + 6, allocation_id="q-globex")
    engine.allocate("acme", "out", 3 * CREDIT, NOW + 6, allocation_id="q-acme")
    outs = engine.enterprise("globex", NOW + 7).quota["out"]
    assert [p.grant.id for p in outs] == [qid("q-globex", "globex")]
    assert [p.grant.id for p in engine.enterprise("acme", NOW + 7).quota["out"]] == [qid("q-acme")]
    assert [a.id for a in engine.enterprise("globex", NOW + 7).allocations] == [qid("q-globex", "globex")]
    assert engine.balance("out", NOW + 7).available_uc == 10 * CREDIT
    engine.remove_member("acme", "out", NOW + 7)
    engine.remove_member("globex", "out", NOW + 7)

    # An enterprise id that is a user account is not an enterprise.
    refused(lambda: engine.enterprise("out", NOW), NotFound, "enterprise_id")
    refused(lambda: engine.add_member("out", "mel", NOW), NotFound, "enterprise_id")
    refused(lambda: engine.remove_member("out", "mel", NOW), NotFound, "enterprise_id")
    refused(lambda: engine.allocate("out", "mel", CREDIT, NOW), NotFound, "enterprise_id")
    refused(lambda: engine.enterprise("nowhere", NOW), NotFound, "enterprise_id")
    # A member is a user account, and an existing one.
    refused(lambda: engine.add_member("acme", "globex", NOW), InputError, "account_id")
    refused(lambda: engine.add_member("acme", "acme", NOW), InputError, "account_id")
    refused(lambda: engine.add_member("acme", "nobody", NOW), NotFound, "account_id")
    assert sorted(m.account_id for m in engine.enterprise("acme", NOW + 7).members) == ["ada"]
    assert engine.enterprise("globex", NOW + 7).members == []
    assert engine.check_invariants() == []


# -- 6. through the API ----------------------------------------------------------------------------

def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"type", "message"} <= set(error) <= {"type", "message", "field"}, error
    assert error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error


def _api_world(api: TestClient, clock: Clock) -> dict[str, dict[str, str]]:
    """acme (Acme Corp) with admin ada and members mel and max; globex with admin gus; an outsider
    out. Pool packages on both. Returns each user's key headers."""
    for account_id, kind, name in (("acme", "enterprise", ACME), ("globex", "enterprise", "Globex"),
                                   ("ada", "user", "Ada"), ("mel", "user", "Mel"), ("max", "user", "Max"),
                                   ("gus", "user", "Gus"), ("out", "user", "Out")):
        _ok(api.post("/api/accounts", headers=OPERATOR, json={"id": account_id, "kind": kind, "name": name}),
            201)
    for enterprise in ("acme", "globex"):
        _ok(api.post(f"/api/accounts/{enterprise}/grants", headers=OPERATOR,
                     json={"amount_credits": "1000", "kind": "package", "expires_at": "2027-06-01T00:00:00Z",
                           "id": f"pool-{enterprise}"}), 201)
    keys = {}
    for user in ("ada", "mel", "max", "gus", "out"):
        created = _ok(api.post(f"/api/accounts/{user}/keys", headers=OPERATOR, json={"name": "main"}), 201)
        keys[user] = bearer(created["key"])
    return keys


def test_api_enterprise_admins_manage_their_enterprise_and_nobody_else_sees_it(
        api: TestClient, clock: Clock, engine: Engine) -> None:
    keys = _api_world(api, clock)
    # Before ada is an admin her key sees nothing of acme (and the app caches who she is).
    _error(api.get("/api/enterprises/acme", headers=keys["ada"]), 404, "enterprise_id")
    for enterprise, user, role in (("acme", "ada", "admin"), ("acme", "mel", "member"),
                                   ("acme", "max", "member"), ("globex", "gus", "admin")):
        member = _ok(api.post(f"/api/enterprises/{enterprise}/members", headers=OPERATOR,
                              json={"account_id": user, "role": role}), 201)
        assert member == {"enterprise_id": enterprise, "account_id": user, "role": role,
                          "added_at": _iso(clock.now_us)}
    # Admin rights take effect at once.
    view = _ok(api.get("/api/enterprises/acme", headers=keys["ada"]))
    assert view["enterprise_id"] == "acme" and view["name"] == ACME
    assert view["pool"]["available_credits"] == "1000"
    assert sorted((m["account_id"], m["role"]) for m in view["members"]) == [
        ("ada", "admin"), ("max", "member"), ("mel", "member")]

    # The admin adds quota and revokes it.
    quota = _ok(api.post("/api/enterprises/acme/allocations", headers=keys["ada"],
                         json={"account_id": "mel", "amount_credits": "100",
                               "expires_at": "2026-12-31T00:00:00Z", "id": "q-mel"}), 201)
    assert quota["grant_id"] == qid("q-mel") and quota["kind"] == "enterprise"
    assert quota["granted_credits"] == "100" and quota["remaining_credits"] == "100"
    assert quota["expires_at"] == "2026-12-31T00:00:00Z" and ACME in quota["name"]
    _ok(api.post("/api/enterprises/acme/allocations", headers=keys["ada"],
                 json={"account_id": "max", "amount_credits": "30", "id": "q-max"}), 201)
    _ok(api.post("/api/enterprises/globex/allocations", headers=keys["gus"],
                 json={"account_id": "gus", "amount_credits": "5", "id": "q-gus"}), 201)
    assert _ok(api.get("/api/enterprises/globex", headers=keys["gus"]))["enterprise_id"] == "globex"
    results = _ok(api.post("/api/usage", headers=OPERATOR, json={"events": [
        {"id": "e-mel", "account_id": "mel", "quantities": {"web_search": 5}}]}))
    assert results["charged"] == 1
    view = _ok(api.get("/api/enterprises/acme", headers=keys["ada"]))
    mel = next(m for m in view["members"] if m["account_id"] == "mel")
    assert (mel["quota_credits"], mel["used_credits"], mel["remaining_credits"]) == ("100", "10", "90")
    assert view["pool"]["available_credits"] == "870"
    assert {a["allocation_id"] for a in view["allocations"]} == {qid("q-mel"), qid("q-max")}
    # ... sees member usage ...
    page = _ok(api.get("/api/accounts/acme/usage", headers=keys["ada"], params={"member": "mel"}))
    assert [e["event_id"] for e in page["events"]] == ["e-mel"]
    # ... and revokes.
    revoked = _ok(api.post(f"/api/enterprises/acme/allocations/{qid('q-max')}/revoke",
                           headers=keys["ada"]))
    assert revoked["allocation_id"] == qid("q-max") and revoked["returned_credits"] == "30"
    assert revoked["revoked_at"] == _iso(clock.now_us)
    assert _ok(api.get("/api/enterprises/acme", headers=keys["ada"]))["pool"]["available_credits"] == "900"
    # Another enterprise's allocation is not found through this one's path.
    # globex's allocation named under acme: not found (another enterprise's object)
    _error(api.post(f"/api/enterprises/acme/allocations/{qid('q-gus', 'globex')}/revoke",
                    headers=keys["ada"]), 404)

    # The member sees the quota among their packages, and nothing of other members or the pool.
    balance = _ok(api.get("/api/accounts/mel/balance", headers=keys["mel"]))
    assert [(p["grant_id"], p["kind"], p["granted_credits"], p["used_credits"], p["remaining_credits"])
            for p in balance["packages"]] == [(qid("q-mel"), "enterprise", "100", "10", "90")]
    assert balance["available_credits"] == "90"
    for path in ("/api/accounts/max/balance", "/api/accounts/max/usage", "/api/accounts/max/grants",
                 "/api/accounts/max/usage/summary", "/api/accounts/max/usage.csv", "/api/accounts/max",
                 "/api/accounts/acme/balance", "/api/accounts/acme/usage"):
        _error(api.get(path, headers=keys["mel"]), 404, "account_id")
    _error(api.get("/api/accounts/mel/usage", headers=keys["max"]), 404, "account_id")
    _error(api.get("/api/accounts/mel/balance", headers=keys["max"]), 404, "account_id")

    # Everyone else is told acme does not exist, on every enterprise path, exactly as for an
    # enterprise that does not exist; nothing is written.
    before = _ok(api.get("/api/enterprises/acme", headers=OPERATOR))
    before_mel = _ok(api.get("/api/accounts/mel/balance", headers=OPERATOR))

    def paths(enterprise: str) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [("GET", f"/api/enterprises/{enterprise}", None),
                ("GET", f"/api/enterprises/{enterprise}?at=2026-11-10T00:00:00Z", None),
                ("POST", f"/api/enterprises/{enterprise}/allocations",
                 {"account_id": "mel", "amount_credits": "1", "id": f"sneak-{enterprise}"}),
                ("POST", f"/api/enterprises/{enterprise}/allocations/{qid('q-mel', enterprise)}/revoke",
                 None)]

    for user in ("out", "mel", "max", "gus"):
        for (method, path, body), (_, nowhere, other) in zip(paths("acme"), paths("nope"), strict=True):
            hidden = api.request(method, path, headers=keys[user], json=body)
            missing = api.request(method, nowhere, headers=keys[user], json=other)
            assert hidden.status_code == missing.status_code == 404, (user, path, hidden.text)
            assert hidden.json() == _replaced(missing.json(), "nope", "acme"), (user, path)
            _error(hidden, 404, "enterprise_id")
    # The operator gets the same body for an enterprise that does not exist.
    assert _status_body(api.get("/api/enterprises/nope", headers=OPERATOR)) == _status_body(
        api.get("/api/enterprises/nope", headers=keys["out"]))
    # No user, not even an admin, adds or removes members.
    for user in ("ada", "mel", "out", "gus"):
        for enterprise in ("acme", "nope"):
            _error(api.post(f"/api/enterprises/{enterprise}/members", headers=keys[user],
                            json={"account_id": user, "role": "admin"}), 403)
            _error(api.post(f"/api/enterprises/{enterprise}/members/mel/remove", headers=keys[user]), 403)
    assert _ok(api.get("/api/enterprises/acme", headers=OPERATOR)) == before
    assert _ok(api.get("/api/accounts/mel/balance", headers=OPERATOR)) == before_mel

    # Demoting the admin takes her rights away at once; her own account stays hers.
    _ok(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                 json={"account_id": "ada", "role": "member"}), 201)
    _error(api.get("/api/enterprises/acme", headers=keys["ada"]), 404, "enterprise_id")
    _error(api.post(f"/api/enterprises/acme/allocations/{qid('q-mel')}/revoke", headers=keys["ada"]),
           404)
    _ok(api.get("/api/accounts/ada/balance", headers=keys["ada"]))
    # Promoted again, then removed: in, then out, at once.
    _ok(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                 json={"account_id": "ada", "role": "admin"}), 201)
    _ok(api.get("/api/enterprises/acme", headers=keys["ada"]))
    assert _ok_status(api.post("/api/enterprises/acme/members/ada/remove", headers=OPERATOR)) == 204
    _error(api.get("/api/enterprises/acme", headers=keys["ada"]), 404, "enterprise_id")
    _error(api.post("/api/enterprises/acme/members/nobody/remove", headers=OPERATOR), 404, "account_id")
    assert engine.check_invariants() == []


def _replaced(body: Any, old: str, new: str) -> Any:
    """``body`` with every string's ``old`` replaced by ``new``."""
    if isinstance(body, dict):
        return {k: _replaced(v, old, new) for k, v in body.items()}
    if isinstance(body, list):
        return [_replaced(v, old, new) for v in body]
    return body.replace(old, new) if isinstance(body, str) else body


def _status_body(response: Any) -> tuple[int, Any]:
    return response.status_code, response.json()


def _ok_status(response: Any) -> int:
    assert response.status_code < 300, response.text
    return int(response.status_code)


# -- 7. bad input writes nothing -------------------------------------------------------------------

def test_bad_allocations_are_refused_naming_the_field_and_write_nothing(engine: Engine) -> None:
    company(engine, "mel")
    engine.create_account("out", NOW)
    pool_grant(engine, "p", 1_000, expires=None)
    before = snapshot(engine, ["mel", "out"], NOW + 1)
    cases: list[tuple[Callable[[], object], Kinds, str]] = [
        (lambda: engine.allocate("acme", "mel", -CREDIT, NOW), InputError, "amount"),
        (lambda: engine.allocate("acme", "mel", 0, NOW), InputError, "amount"),
        (lambda: engine.allocate("acme", "mel", MAX_UC + 1, NOW), InputError, "amount"),
        (lambda: engine.allocate("acme", "mel", 1.5, NOW), InputError, "amount"),  # type: ignore[arg-type]
        (lambda: engine.allocate("acme", "mel", CREDIT, NOW, expires_at_us=NOW - 1), InputError, "expires"),
        (lambda: engine.allocate("acme", "mel", CREDIT, NOW, expires_at_us=NOW), InputError, "expires"),
        (lambda: engine.allocate("acme", "mel", CREDIT, NOW, expires_at_us="2026-12-31"),  # type: ignore[arg-type]
         InputError, "expires"),
        (lambda: engine.allocate("acme", "ghost", CREDIT, NOW), (InputError, NotFound), "account_id"),
        (lambda: engine.allocate("acme", "out", CREDIT, NOW), InputError, "account_id"),
        (lambda: engine.allocate("nope", "mel", CREDIT, NOW), NotFound, "enterprise_id"),
        (lambda: engine.allocate("acme", "mel", CREDIT, NOW, allocation_id=""), InputError, "id"),
        (lambda: engine.allocate("acme", "mel", CREDIT, NOW, allocation_id="x" * 256), InputError, "id"),
        (lambda: engine.revoke_allocation("nope", NOW), NotFound, "grant_id"),
        (lambda: engine.add_member("acme", "out", NOW, role="boss"), InputError, "role"),
        (lambda: engine.add_member("nope", "out", NOW), NotFound, "enterprise_id"),
    ]
    for call, kind, field in cases:
        refused(call, kind, field)
    assert snapshot(engine, ["mel", "out"], NOW + 1) == before
    assert engine.check_invariants() == []


def test_api_bad_allocations_are_4xx_naming_the_field_and_write_nothing(
        api: TestClient, clock: Clock, engine: Engine) -> None:
    keys = _api_world(api, clock)
    for user, role in (("ada", "admin"), ("mel", "member")):
        _ok(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                     json={"account_id": user, "role": role}), 201)
    _ok(api.post("/api/enterprises/acme/allocations", headers=OPERATOR,
                 json={"account_id": "mel", "amount_credits": "10", "id": "q-mel"}), 201)
    before = _ok(api.get("/api/enterprises/acme", headers=OPERATOR))
    before_mel = _ok(api.get("/api/accounts/mel/balance", headers=OPERATOR))

    good = {"account_id": "mel", "amount_credits": "5", "expires_at": "2026-12-31T00:00:00Z"}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("acme", {**good, "amount_credits": "-5"}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": -5}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": "0"}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": 0}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": "1.0000001"}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": 1.0000001}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": "1000000000001"}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": "lots"}, 400, "amount_credits"),
        ("acme", {**good, "amount_credits": "2000"}, 400, "amount_credits"),  # more than the pool
        ("acme", {**good, "expires_at": "2026-01-01T00:00:00Z"}, 400, "expires_at"),
        ("acme", {**good, "expires_at": _iso(clock.now_us)}, 400, "expires_at"),
        ("acme", {**good, "expires_at": "next tuesday"}, 400, "expires_at"),
        ("acme", {**good, "account_id": "out"}, 400, "account_id"),
        ("acme", {**good, "id": "q-mel"}, 409, ""),  # the id of another allocation
        ("acme", {**good, "colour": "red"}, 422, "colour"),
        ("acme", {"account_id": "mel"}, 422, "amount_credits"),
        ("nope", good, 404, "enterprise_id"),
        ("out", good, 404, "enterprise_id"),
    ]
    for who in (OPERATOR, keys["ada"]):
        for enterprise, body, status, field in cases:
            if who is not OPERATOR and status == 404:
                continue  # an admin is told the same for any enterprise it does not administer
            response = api.post(f"/api/enterprises/{enterprise}/allocations", headers=who, json=body)
            _error(response, status, field or None)
    for who in (OPERATOR, keys["ada"]):
        _error(api.post("/api/enterprises/acme/allocations/nope/revoke", headers=who), 404, "allocation_id")
    _error(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                    json={"account_id": "out", "role": "boss"}), 422, "role")
    _error(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                    json={"account_id": "ghost"}), 404, "account_id")
    _error(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                    json={"account_id": "globex"}), 400, "account_id")
    _error(api.post("/api/enterprises/out/members", headers=OPERATOR,
                    json={"account_id": "mel"}), 404, "enterprise_id")
    _error(api.get("/api/enterprises/acme", headers=OPERATOR, params={"at": "yesterday"}), 400, "at")
    assert _ok(api.get("/api/enterprises/acme", headers=OPERATOR)) == before
    assert _ok(api.get("/api/accounts/mel/balance", headers=OPERATOR)) == before_mel
    assert engine.check_invariants() == []


def test_api_an_admin_cannot_tell_an_unknown_account_from_an_outsiders(
        api: TestClient, clock: Clock, engine: Engine) -> None:
    keys = _api_world(api, clock)
    _ok(api.post("/api/enterprises/acme/members", headers=OPERATOR,
                 json={"account_id": "ada", "role": "admin"}), 201)
    before = _ok(api.get("/api/enterprises/acme", headers=OPERATOR))
    good = {"account_id": "mel", "amount_credits": "5", "expires_at": "2026-12-31T00:00:00Z"}
    # An unknown account is refused like an account that is not a member (400, or 404 for the
    # operator). An admin gets the same answer for an unknown account as for an outsider's: whether
    # an account exists outside the enterprise is not the admin's to learn (SPEC §10).
    unknown = api.post("/api/enterprises/acme/allocations", headers=OPERATOR,
                       json={**good, "account_id": "ghost"})
    assert unknown.status_code in (400, 404)
    _error(unknown, unknown.status_code, "account_id")
    ghost = api.post("/api/enterprises/acme/allocations", headers=keys["ada"],
                     json={**good, "account_id": "ghost"})
    outsider = api.post("/api/enterprises/acme/allocations", headers=keys["ada"],
                        json={**good, "account_id": "out"})
    _error(outsider, 400, "account_id")
    assert (ghost.status_code, ghost.json()) == (
        outsider.status_code, _replaced(outsider.json(), "'out'", "'ghost'"))
    assert _ok(api.get("/api/enterprises/acme", headers=OPERATOR)) == before
    assert engine.check_invariants() == []
