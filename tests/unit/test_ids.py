"""One rule for the ids of stored objects (``creditmeter.ids``): what it accepts, that every way of
making an object refuses the same ids naming the field and writing nothing, that every id the
product makes itself follows it, and that objects made before the rule stay readable."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditmeter.domain import Account, AccountId, AccountKind, Grant, GrantId, GrantKind
from creditmeter.engine import Engine
from creditmeter.errors import Conflict, InputError
from creditmeter.ids import ID_PATTERN, MAX_ID_LENGTH, check_id, check_new_id
from creditmeter.plans import Plan, PlanCatalog, default_plans
from creditmeter.subscriptions import trial_grant_id
from tests import forked
from tests.conftest import EngineFactory, at
from tests.unit.test_bad_input import dump_tables

T = at("2026-03-01T12:00:00Z")
DAY = 86_400_000_000
SAFE = re.compile(r"[A-Za-z0-9._:@-]")
BAD_IDS = ["a/b", "a b", "a?b", "a#b", "a%2Fb", "café", "-lead", ".hidden", "a\tb", "a,b", 'a"b', "a\\b",
           "a+b", "ä", "x" * 256, ""]


@given(st.from_regex(ID_PATTERN, fullmatch=True))
def test_every_id_the_rule_describes_is_accepted(value: str) -> None:
    assert check_new_id(value, "id") == value
    assert 1 <= len(value) <= MAX_ID_LENGTH


@given(st.text(min_size=1, max_size=MAX_ID_LENGTH).filter(
    lambda s: not SAFE.fullmatch(s[0]) or s[0] in "._:@-" or any(not SAFE.fullmatch(c) for c in s)))
def test_every_id_outside_the_rule_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InputError) as info:
        check_new_id(value, "account_id")
    assert info.value.field == "account_id"
    assert str(info.value).startswith("account_id: ")


@pytest.mark.parametrize("value", BAD_IDS)
def test_ids_that_break_a_path_a_file_name_or_a_csv_cell_are_refused(value: str) -> None:
    with pytest.raises(InputError) as info:
        check_new_id(value, "id")
    assert info.value.field == "id"


@pytest.mark.parametrize("value", ["a/b", "a b", "café", "a%b"])
def test_lookups_and_event_ids_keep_the_looser_rule(value: str) -> None:
    assert check_id(value, "id") == value


def test_the_refusal_says_which_character() -> None:
    with pytest.raises(InputError, match=r"^id: must be made of .*'/' is not allowed"):
        check_new_id("team/alice", "id")
    with pytest.raises(InputError, match=r"^id: must start with a letter or digit"):
        check_new_id("_alice", "id")


@pytest.fixture
def world(make_engine: EngineFactory) -> Engine:
    engine = make_engine()
    engine.create_account("alice", T)
    engine.create_account("acme", T, kind="enterprise")
    engine.add_member("acme", "alice", T)
    engine.add_grant("acme", 1_000_000_000, "enterprise", T, grant_id="pool")
    engine.add_grant("alice", 1_000_000_000, "addon", T, grant_id="pack")
    return engine


def _with_id(plan: Plan, plan_id: str) -> Plan:
    return replace(plan, id=plan_id)


MAKERS: dict[str, tuple[Callable[[Engine, str], object], str]] = {
    "account": (lambda e, i: e.create_account(i, T), "id"),
    "enterprise": (lambda e, i: e.create_account(i, T, kind="enterprise"), "id"),
    "grant": (lambda e, i: e.add_grant("alice", 1_000_000, "addon", T, grant_id=i), "id"),
    "hold": (lambda e, i: e.reserve("alice", 1_000_000, T, hold_id=i), "id"),
    "subscription": (lambda e, i: e.subscribe("alice", "professional-monthly", T, subscription_id=i), "id"),
    "order": (lambda e, i: e.purchase("alice", "addon-1000", T, order_id=i), "id"),
    "allocation": (lambda e, i: e.allocate("acme", "alice", 1_000_000, T, allocation_id=i), "id"),
    "plan": (lambda e, i: e.load_plans(PlanCatalog((_with_id(default_plans().get("trial"), i),)), T),
             "plans[0].id"),
}


@pytest.mark.parametrize("bad", ["a/b", "a b", "a#b", "-a", "café"])
@pytest.mark.parametrize("what", list(MAKERS))
def test_every_maker_refuses_an_id_outside_the_rule_and_writes_nothing(world: Engine, what: str,
                                                                       bad: str) -> None:
    make, field = MAKERS[what]
    before = dump_tables(world.store.url)
    with pytest.raises(InputError) as info:
        make(world, bad)
    assert info.value.field == field, info.value
    assert dump_tables(world.store.url) == before


@pytest.mark.parametrize("what", list(MAKERS))
def test_every_maker_takes_an_id_of_the_rule(world: Engine, what: str) -> None:
    make, _ = MAKERS[what]
    make(world, "Z9.user_1:team@example.com-x")


def test_every_id_the_product_makes_follows_the_rule(make_engine: EngineFactory) -> None:
    """Ids made by the engine itself, including the trial package of the longest account id."""
    engine = make_engine()
    longest = "u" * MAX_ID_LENGTH
    engine.create_account(longest, T)
    engine.create_account("acme", T, kind="enterprise")
    engine.add_member("acme", longest, T)
    made = [engine.subscribe(longest, "trial", T).id,
            engine.add_grant(longest, 5_000_000, "addon", T).grant.id,
            engine.add_grant("acme", 5_000_000, "enterprise", T).grant.id,
            engine.allocate("acme", longest, 1_000_000, T).grant.id,
            engine.purchase(longest, "addon-1000", T).grant.id,
            engine.create_key(longest, T)[0].id]
    hold = engine.reserve(longest, 1_000_000, T)
    made.append(hold.id)  # type: ignore[union-attr]
    engine.create_account("bob", T)
    sub = engine.subscribe("bob", "professional-monthly", T)
    made += [sub.id, *(p.grant.id for p in engine.balance("bob", T).packages)]
    made += [p.grant.id for p in engine.balance(longest, T).packages]
    assert trial_grant_id(longest) in made
    for ident in made:
        check_new_id(ident, "id")


def test_an_account_made_before_the_rule_stays_readable_and_usable(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with engine.store.transaction(write=True) as tx:
        tx.insert_account(Account(AccountId("team/alice"), "team/alice", AccountKind.USER, T))
    assert engine.account("team/alice") is not None
    engine.add_grant("team/alice", 5_000_000, "addon", T, grant_id="g1")
    hold = engine.reserve("team/alice", 1_000_000, T)
    engine.release(hold.id, T)  # type: ignore[union-attr]
    assert engine.balance("team/alice", T).available_uc == 5_000_000


def test_a_long_account_with_a_trial_of_the_older_form_gets_no_second(make_engine: EngineFactory) -> None:
    engine = make_engine()
    longest = "u" * MAX_ID_LENGTH
    engine.create_account(longest, T)
    older = GrantId("trial:#" + trial_grant_id(longest).removeprefix("trial:-"))
    with engine.store.transaction(write=True) as tx:
        book = tx.load_books([longest])[AccountId(longest)]
        book.add_grant(Grant(older, AccountId(longest), GrantKind.TRIAL, 1_000_000, 0, T, T + 14 * DAY,
                             "Trial", "subscription:old", tx.next_grant_seq(), T), T)
        tx.persist([book], T)
    with pytest.raises(Conflict, match="already had its trial"):
        engine.subscribe(longest, "trial", T)


# -- the command line ----------------------------------------------------------------------------

def cli(url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own (forked: tests/forked.py)."""
    return forked.run([*args, "--db", url], folder)


@pytest.mark.parametrize("bad", ["a/b", "a b", "a?b"])
def test_cli_accounts_create_refuses_an_id_outside_the_rule(make_engine: EngineFactory, bad: str,
                                                            tmp_path: Path) -> None:
    url = make_engine().store.url
    done = cli(url, tmp_path, "accounts", "create", bad, "--at", "2026-03-01")
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: id: "), done.stderr
    assert json.loads(cli(url, tmp_path, "accounts", "list", "--json").stdout) == []
