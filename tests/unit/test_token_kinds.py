"""Usage events state reasoning tokens, 1-hour cache writes and the service tier: how an event's
JSON states them, how they join its idempotency fingerprint (an event without them keeps the
digest it always had, so one stored before them is still known when sent again), and how a
database made by the previous schema revision is upgraded to record them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from creditmeter.domain import Hold, HoldStatus, Rejected, UsageEvent
from creditmeter.engine import Engine, Usage
from creditmeter.engine.holds import _settle_event
from creditmeter.errors import Conflict, InputError
from creditmeter.events import MAX_TOKENS, check_something_used, parse_event
from creditmeter.store.sql import SCHEMA_REVISION, SqlStore
from tests.conftest import Postgres, at

# An event with every field the JSON form had before the new ones, and its digest as computed by
# the code before them (main at 6befd51): the fingerprint stored with such an event.
OLD_EVENT: dict[str, Any] = {
    "id": "evt-1", "account_id": "alice", "timestamp": "2026-11-20T10:00:00Z", "model": "gpt-4o",
    "input_tokens": 1200, "output_tokens": 300, "cached_input_tokens": 800, "cache_write_tokens": 50,
    "quantities": {"web_search": 2}, "metadata": {"conversation": "c1", "n": 3}}
OLD_EVENT_DIGEST = "cab6e90c002b1a5f28c123ff710dc6d2"
BARE_EVENT = {"id": "evt-2", "account_id": "bob", "model": "gpt-4o", "input_tokens": 10}
BARE_EVENT_DIGEST = "1b52c7ea57df23e3cad9fbb4a67c8c2a"
# A hold's settle: Usage("gpt-4o", 100, 20, 5, 1, (("web_search", 1),), {"k": "v"}) on hold hld_1.
OLD_SETTLE_DIGEST = "d914e8b77b7ee6a669c255003275b535"
HOLD = Hold("hld_1", "alice", 5, (), 0, 10, HoldStatus.OPEN)  # type: ignore[arg-type]
SETTLE_USAGE = Usage("gpt-4o", 100, 20, 5, 1, (("web_search", 1),), {"k": "v"})


def _event(**fields: object) -> UsageEvent:
    return parse_event({"id": "e", "account_id": "a", "model": "m", **fields})


# -- reading them ----------------------------------------------------------------------------------

def test_the_new_counts_and_the_tier_are_read() -> None:
    event = _event(output_tokens=10, reasoning_tokens=700, cache_write_1h_tokens=60.0,
                   service_tier="priority")
    assert (event.output_tokens, event.reasoning_tokens, event.cache_write_1h_tokens) == (10, 700, 60)
    assert type(event.cache_write_1h_tokens) is int
    assert event.service_tier == "priority"
    assert _event(service_tier="flex").service_tier == "flex"
    absent = _event(input_tokens=1)
    assert (absent.reasoning_tokens, absent.cache_write_1h_tokens, absent.service_tier) == (0, 0, None)


@pytest.mark.parametrize("stated", [None, "default", "standard", "auto"])
def test_every_name_of_the_standard_tier_is_the_standard_tier(stated: str | None) -> None:
    assert _event(input_tokens=1, service_tier=stated).service_tier is None


@pytest.mark.parametrize(("field", "value"), [
    ("reasoning_tokens", -1), ("reasoning_tokens", 1.5), ("reasoning_tokens", "3"),
    ("reasoning_tokens", True), ("reasoning_tokens", MAX_TOKENS + 1), ("reasoning_tokens", [1]),
    ("cache_write_1h_tokens", -5), ("cache_write_1h_tokens", 2.25), ("cache_write_1h_tokens", "x"),
    ("cache_write_1h_tokens", False), ("cache_write_1h_tokens", MAX_TOKENS + 1),
    ("service_tier", "premium"), ("service_tier", "Priority"), ("service_tier", ""),
    ("service_tier", 1), ("service_tier", True), ("service_tier", ["flex"]), ("service_tier", {}),
])
def test_a_bad_value_is_refused_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(InputError) as caught:
        _event(input_tokens=1, **{field: value})
    assert caught.value.field == field


def test_a_settle_checks_the_new_fields_like_an_event() -> None:
    for field, value in (("reasoning_tokens", -1), ("cache_write_1h_tokens", 0.5),
                         ("service_tier", "premium")):
        usage = Usage("gpt-4o", 1, **{field: value})  # type: ignore[arg-type]
        with pytest.raises(InputError) as caught:
            _settle_event("hold:hld_1", HOLD, usage)
        assert caught.value.field == field
    settled = _settle_event("hold:hld_1", HOLD, Usage("gpt-4o", 1, reasoning_tokens=3,
                                                      cache_write_1h_tokens=4, service_tier="auto"))
    assert (settled.reasoning_tokens, settled.cache_write_1h_tokens, settled.service_tier) == (3, 4, None)


def test_reasoning_or_an_hour_of_cache_writes_is_usage() -> None:
    check_something_used(_event(reasoning_tokens=1))
    check_something_used(_event(cache_write_1h_tokens=1))
    with pytest.raises(InputError) as caught:
        check_something_used(_event(service_tier="priority"))
    assert caught.value.field == "event"


# -- the fingerprint -------------------------------------------------------------------------------

def test_an_event_without_the_new_fields_keeps_the_digest_it_always_had() -> None:
    assert parse_event(OLD_EVENT).fingerprint == OLD_EVENT_DIGEST
    assert parse_event(BARE_EVENT).fingerprint == BARE_EVENT_DIGEST
    assert _settle_event("hold:hld_1", HOLD, SETTLE_USAGE).fingerprint == OLD_SETTLE_DIGEST
    # Stating them at their defaults is the same body.
    for same in ({"reasoning_tokens": 0}, {"cache_write_1h_tokens": 0}, {"service_tier": None},
                 {"service_tier": "default"}, {"service_tier": "standard"}, {"service_tier": "auto"}):
        assert parse_event({**OLD_EVENT, **same}).fingerprint == OLD_EVENT_DIGEST, same


def test_each_new_field_is_part_of_the_body() -> None:
    digests = {parse_event({**OLD_EVENT, **change}).fingerprint
               for change in ({}, {"reasoning_tokens": 1}, {"cache_write_1h_tokens": 1},
                              {"service_tier": "priority"}, {"service_tier": "flex"},
                              {"reasoning_tokens": 1, "cache_write_1h_tokens": 1})}
    assert len(digests) == 6
    # Moving tokens from one kind to another is another body, not the same total.
    moved = parse_event({**OLD_EVENT, "output_tokens": 200, "reasoning_tokens": 100})
    assert moved.fingerprint != OLD_EVENT_DIGEST
    settled = {_settle_event("hold:hld_1", HOLD, replace(SETTLE_USAGE, **change)).fingerprint
               for change in ({}, {"reasoning_tokens": 1}, {"cache_write_1h_tokens": 1},
                              {"service_tier": "flex"})}
    assert len(settled) == 4


# -- storing them ----------------------------------------------------------------------------------

def test_a_large_batch_and_a_single_event_store_them_alike(engine: Engine) -> None:
    """Enough events in one batch to be appended in bulk (COPY on PostgreSQL), and one alone."""
    now = at("2026-11-10T12:00:00Z")
    engine.create_account("carol", now - 10)
    engine.add_grant("carol", 10**9, "addon", now - 10)
    tiers = ("priority", "flex", None, "auto")
    batch = [{"id": f"b{i}", "account_id": "carol", "model": "gpt-4o", "input_tokens": i + 1,
              "reasoning_tokens": 3 * i, "cache_write_1h_tokens": i % 7, "service_tier": tiers[i % 4]}
             for i in range(60)]
    single = {"id": "s1", "account_id": "carol", "model": "gpt-4o", "reasoning_tokens": 5,
              "service_tier": "flex"}
    assert {r.status for r in engine.record_batch(batch, now)} == {"charged"}
    assert engine.record(single, now).status == "charged"
    stored = {s.event.id: s.event for s in engine.usage("carol")}
    assert len(stored) == 61
    for body in (*batch, single):
        event = stored[body["id"]]
        tier = body["service_tier"] if body["service_tier"] in ("priority", "flex") else None
        assert (event.reasoning_tokens, event.cache_write_1h_tokens, event.service_tier) == (
            body["reasoning_tokens"], body.get("cache_write_1h_tokens", 0), tier), body
        assert event.fingerprint == parse_event(body).fingerprint
    assert engine.check_invariants() == []


# -- the migration ---------------------------------------------------------------------------------

@pytest.fixture
def empty_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema, on each store."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip(server)
    assert isinstance(server, Postgres)
    name = f"cm_old_{uuid.uuid4().hex[:12]}"
    server._run(f'CREATE DATABASE "{name}"')
    yield server.url(name)
    server.drop(name)


def _migrate_to(url: str, revision: str) -> None:
    store = SqlStore(url)
    config = Config()
    config.set_main_option("script_location", "creditmeter.store:migrations")
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    store.close()


def test_a_database_of_the_previous_revision_is_upgraded(empty_url: str) -> None:
    """An event stored by the previous revision reads back with no reasoning, no 1-hour cache
    writes and the standard tier; sent again, it is a duplicate (its digest is unchanged)."""
    _migrate_to(empty_url, "0003")
    ts, cost_uc = at(OLD_EVENT["timestamp"]), 1_234_567
    old = SqlStore(empty_url)
    with old.engine.begin() as conn:  # what that revision's writer stored: an event paid as overage
        conn.execute(sa.text("INSERT INTO accounts (id, name, kind, created_at_us, overage_uc) "
                             "VALUES ('alice', 'alice', 'user', 0, :cost)"), {"cost": cost_uc})
        conn.execute(sa.text(
            "INSERT INTO events (id, account_id, ts_us, model, input_tokens, output_tokens, "
            "cached_input_tokens, cache_write_tokens, quantities, metadata, cost_uc, overage_uc, "
            "allocations, price_version, hold_id, fingerprint, recorded_at_us) VALUES ('evt-1', "
            "'alice', :ts, 'gpt-4o', 1200, 300, 800, 50, :quantities, :metadata, :cost, :cost, "
            "'[]', 1, NULL, :fp, :ts)"),
            {"ts": ts, "cost": cost_uc, "fp": OLD_EVENT_DIGEST, "quantities": '[["web_search",2]]',
             "metadata": '{"conversation":"c1","n":3}'})
        conn.execute(sa.text("INSERT INTO usage_days (account_id, day_us, cost_uc, events) "
                             "VALUES ('alice', :day, :cost, 1)"),
                     {"day": ts - ts % 86_400_000_000, "cost": cost_uc})
    old.close()

    store = SqlStore(empty_url)
    store.upgrade()
    assert store.revision() == SCHEMA_REVISION
    engine = Engine(store)
    try:
        [stored] = list(engine.usage("alice"))
        event = stored.event
        assert (event.input_tokens, event.output_tokens, event.cached_input_tokens,
                event.cache_write_tokens) == (1200, 300, 800, 50)
        assert (event.reasoning_tokens, event.cache_write_1h_tokens, event.service_tier) == (0, 0, None)
        assert stored.charge.cost_uc == cost_uc
        now = ts + 60_000_000
        again = engine.record_batch([OLD_EVENT, {**OLD_EVENT, "service_tier": "standard"}], now)
        assert [r.status for r in again] == ["duplicate", "duplicate"]
        [changed] = engine.record_batch([{**OLD_EVENT, "reasoning_tokens": 10}], now)
        assert isinstance(changed, Rejected) and isinstance(changed.error, Conflict)
        assert len(list(engine.usage("alice"))) == 1
        assert engine.check_invariants() == []
        day = ts - ts % 86_400_000_000  # the upgrade filled the day's token sums from its event
        [summary] = engine.usage_summary("alice", "day", from_us=day, to_us=day + 86_400_000_000)
        assert summary[1:] == (1, 1200, 300, 800, 50, 0, 0, cost_uc)
    finally:
        store.close()


def test_an_event_made_in_python_gets_the_same_checks_as_one_read_from_json(engine: Engine) -> None:
    """``Engine.record`` of a ``UsageEvent``: the tier's other names read as standard, and a
    count out of range is refused naming its field (not an assertion deep in the ledger)."""
    now = at("2026-11-10T12:00:00Z")
    engine.create_account("lib", now - 10)
    engine.add_grant("lib", 10**9, "addon", now - 10)
    auto = UsageEvent("e1", "lib", now, "gpt-4o", 10, service_tier="auto")
    assert engine.record(auto, now).status == "charged"
    assert [s.event.service_tier for s in engine.usage("lib")] == [None]
    for field, event in (("reasoning_tokens", UsageEvent("e2", "lib", now, "gpt-4o", 1, reasoning_tokens=-5)),
                         ("input_tokens", UsageEvent("e3", "lib", now, "gpt-4o", MAX_TOKENS + 1)),
                         ("service_tier", UsageEvent("e4", "lib", now, "gpt-4o", 1, service_tier="scale"))):
        with pytest.raises(InputError) as caught:
            engine.record(event, now)
        assert caught.value.field == field
    assert len(list(engine.usage("lib"))) == 1
