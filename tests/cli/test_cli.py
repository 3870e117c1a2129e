"""Every ``creditmeter`` command in the exact forms of the issue (SPEC §10), through click's runner.

Each test gets its own database on each store (a copy of the migrated template, or a fresh one
where ``db upgrade`` itself is tested). The demo runs the real installed command in a subprocess.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from creditmeter.cli import main
from creditmeter.store.sql import SCHEMA_REVISION
from tests.conftest import EXAMPLE_CATALOG, EngineFactory, Postgres

CREDITMETER = Path(sys.executable).parent / "creditmeter"
T = "2026-03-01T12:00:00Z"

CHARGE_KEYS = {"event_id", "status", "cost_credits", "allocations", "overage_credits", "price_version"}
BALANCE_KEYS = {"account_id", "available_credits", "held_credits", "overage_credits", "packages"}
PACKAGE_KEYS = {"grant_id", "kind", "name", "priority", "granted_credits", "used_credits", "held_credits",
                "expired_credits", "voided_credits", "remaining_credits", "effective_at", "expires_at",
                "status"}
HOLD_KEYS = {"hold_id", "amount_credits", "expires_at"}

Cli = Callable[..., Result]


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


@pytest.fixture
def db_url(make_engine: EngineFactory) -> str:
    """This test's own migrated database, on each store (SQLite and PostgreSQL)."""
    return make_engine().store.url


@pytest.fixture
def cli(db_url: str) -> Cli:
    """Run a command on this test's database; ``ok=True`` (default) asserts exit 0."""
    def run(*args: str, ok: bool = True) -> Result:
        result = invoke([*args, "--db", db_url])
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result
    return run


def js(result: Result) -> Any:
    return json.loads(result.stdout)


@pytest.fixture
def priced(cli: Cli) -> Cli:
    """The example catalog effective 2026-01-01 and an account 'alice'."""
    cli("prices", "load", str(EXAMPLE_CATALOG), "--effective", "2026-01-01", "--at", "2026-01-01")
    cli("accounts", "create", "alice", "--at", "2026-03-01")
    return cli


# -- db, prices, accounts ------------------------------------------------------------------------

@pytest.fixture
def empty_db_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema at all, on each store."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path}/sub/fresh.db"
        return
    server = request.getfixturevalue("postgres")
    if isinstance(server, str):
        pytest.skip(server)
    assert isinstance(server, Postgres)
    name = f"cm_empty_{uuid.uuid4().hex[:12]}"
    server._run(f'CREATE DATABASE "{name}"')
    yield server.url(name)
    server.drop(name)


def test_db_upgrade_creates_and_is_idempotent(empty_db_url: str) -> None:
    url = empty_db_url
    before = invoke(["accounts", "list", "--db", url])
    if not url.startswith("sqlite"):  # only SQLite creates its schema on first use
        assert before.exit_code == 5 and "creditmeter db upgrade" in before.output
    first = invoke(["db", "upgrade", "--db", url])
    assert first.exit_code == 0, first.output
    assert SCHEMA_REVISION in first.stdout
    again = invoke(["db", "upgrade", "--db", url])
    assert again.exit_code == 0, again.output
    listed = invoke(["accounts", "list", "--json", "--db", url])
    assert listed.exit_code == 0
    assert js(listed) == []


def test_prices_load_and_list(cli: Cli, tmp_path: Path) -> None:
    loaded = js(cli("prices", "load", str(EXAMPLE_CATALOG), "--effective", "2026-01-01", "--at",
                    "2026-02-15", "--json"))
    assert loaded == {"version": 1, "effective_at": "2026-01-01T00:00:00Z", "models": 6, "features": 2}
    second = tmp_path / "v2.yaml"
    second.write_text("models:\n  gpt-4o:\n    input: 0.1\n    output: 0.2\nfeatures:\n  web_search: 2.5\n",
                      encoding="utf-8")
    # without --effective the new prices take effect at --at
    out = cli("prices", "load", str(second), "--at", "2026-03-01T10:00:00Z")
    assert "2026-03-01T10:00:00Z" in out.stdout
    before = js(cli("prices", "list", "--json", "--at", "2026-03-01T09:59:59Z"))
    assert before["current_version"] == 1
    assert before["catalog"]["models"]["gpt-4o-mini"]["cached_input"] == "7.5"
    assert before["catalog"]["models"]["gpt-4o"] == {"input": "250", "output": "1000", "cached_input": "125",
                                                     "cache_write": "250", "request": "0"}
    assert before["catalog"]["features"] == {"kb_retrieval": "0.5", "web_search": "2"}
    after = js(cli("prices", "list", "--json", "--at", "2026-03-01T10:00:00Z"))
    assert after["current_version"] == 2
    assert after["catalog"]["models"] == {"gpt-4o": {"input": "0.1", "output": "0.2", "cached_input": "0.1",
                                                     "cache_write": "0.1", "request": "0"}}
    assert after["catalog"]["features"] == {"web_search": "2.5"}
    assert [(v["version"], v["effective_at"]) for v in after["versions"]] == [
        (1, "2026-01-01T00:00:00Z"), (2, "2026-03-01T10:00:00Z")]
    none_yet = js(cli("prices", "list", "--json", "--at", "2025-12-31"))
    assert none_yet["current_version"] is None
    assert cli("prices", "list", "--at", "2026-03-02").stdout.strip()  # the table form prints something


def test_prices_load_effective_is_taken_as_given_even_at_the_epoch(cli: Cli) -> None:
    # 1970-01-01T00:00:00Z is a legal instant (µs 0): it must not be mistaken for "no --effective"
    loaded = js(cli("prices", "load", str(EXAMPLE_CATALOG), "--effective", "1970-01-01", "--at",
                    "2026-03-01", "--json"))
    assert loaded["effective_at"] == "1970-01-01T00:00:00Z"
    assert js(cli("prices", "list", "--json", "--at", "2000-01-01"))["current_version"] == 1


def test_the_first_catalog_is_effective_from_the_start_of_time_later_ones_from_now(
        cli: Cli, tmp_path: Path) -> None:
    """Without --effective the first catalog ever loaded prices usage from before it was loaded
    (as the README's steps do); a later catalog changes prices only from --at on."""
    first = js(cli("prices", "load", str(EXAMPLE_CATALOG), "--at", "2026-03-01T10:00:00Z", "--json"))
    assert first["version"] == 1 and first["effective_at"] == "1970-01-01T00:00:00Z"
    cli("accounts", "create", "alice", "--at", "2026-02-01")
    cli("grants", "add", "alice", "100", "--kind", "trial", "--effective", "2026-02-01", "--at", "2026-02-01")
    early = js(cli("usage", "record", "alice", "--model", "gpt-4o", "--input", "1000", "--id", "early",
                   "--timestamp", "2026-02-27T00:00:00Z", "--at", "2026-03-01T11:00:00Z", "--json"))
    # gpt-4o: 250 credits per 1M input tokens → 1000 tokens = 0.25 credits, at version 1
    assert early["status"] == "charged" and early["price_version"] == 1
    assert early["cost_credits"] == "0.25"
    second_file = tmp_path / "v2.yaml"
    second_file.write_text("models:\n  gpt-4o:\n    input: 500\n    output: 1000\n", encoding="utf-8")
    second = js(cli("prices", "load", str(second_file), "--at", "2026-03-10T10:00:00Z", "--json"))
    assert second["version"] == 2 and second["effective_at"] == "2026-03-10T10:00:00Z"
    versions = js(cli("prices", "list", "--json", "--at", "2026-03-10T10:00:00Z"))["versions"]
    assert [(v["version"], v["effective_at"]) for v in versions] == [
        (1, "1970-01-01T00:00:00Z"), (2, "2026-03-10T10:00:00Z")]
    assert js(cli("prices", "list", "--json", "--at", "2026-03-10T09:59:59Z"))["current_version"] == 1


def test_accounts_create_and_list(cli: Cli) -> None:
    cli("accounts", "create", "alice", "--at", "2026-03-01")
    created = js(cli("accounts", "create", "acme", "--name", "Acme Corp", "--kind", "enterprise",
                     "--at", "2026-03-02T08:30:00Z", "--json"))
    assert created["id"] == "acme" and created["kind"] == "enterprise" and created["name"] == "Acme Corp"
    listed = {a["id"]: a for a in js(cli("accounts", "list", "--json"))}
    assert set(listed) == {"alice", "acme"}
    assert listed["alice"]["name"] == "alice"  # the name defaults to the id
    assert listed["alice"]["kind"] == "user"
    assert listed["alice"]["created_at"] == "2026-03-01T00:00:00Z"  # a bare date is 00:00 UTC
    assert listed["acme"]["created_at"] == "2026-03-02T08:30:00Z"
    assert listed["alice"]["overage_credits"] == "0"
    # the same create again is fine; the same id with other details conflicts (exit 4)
    cli("accounts", "create", "alice", "--at", "2026-03-05")
    conflict = cli("accounts", "create", "alice", "--name", "Someone Else", ok=False)
    assert conflict.exit_code == 4
    bad_kind = cli("accounts", "create", "x", "--kind", "robot", ok=False)
    assert bad_kind.exit_code != 0
    assert len(js(cli("accounts", "list", "--json"))) == 2


# -- grants and balance --------------------------------------------------------------------------

def _add_grants(cli: Cli) -> None:
    cli("grants", "add", "alice", "50", "--kind", "addon", "--id", "g-never", "--at", "2026-03-01")
    cli("grants", "add", "alice", "30", "--kind", "subscription", "--expires", "2026-04-01",
        "--name", "Professional Edition — Mar 2026", "--id", "g-sub", "--at", "2026-03-01")
    cli("grants", "add", "alice", "20", "--kind", "package", "--expires", "2026-03-15", "--id", "g-pack",
        "--at", "2026-03-01")
    cli("grants", "add", "alice", "5", "--kind", "trial", "--expires", "2026-03-10", "--id", "g-trial",
        "--at", "2026-03-01")
    cli("grants", "add", "alice", "10", "--kind", "promo", "--priority", "80", "--expires", "2026-03-05",
        "--id", "g-promo", "--at", "2026-03-01")
    cli("grants", "add", "alice", "7.000001", "--kind", "adjustment", "--effective", "2026-03-02",
        "--expires", "2026-03-20", "--id", "g-later", "--at", "2026-03-01")


def test_grants_add_list_and_balance_in_burn_down_order(priced: Cli) -> None:
    cli = priced
    added = js(cli("grants", "add", "alice", "12.5", "--kind", "addon", "--id", "g-first", "--name", "Pack",
                   "--priority", "10", "--expires", "2026-12-31T23:59:59Z", "--effective", "2026-03-01",
                   "--at", "2026-03-01", "--json"))
    assert set(added) >= PACKAGE_KEYS
    assert added["grant_id"] == "g-first" and added["granted_credits"] == "12.5"
    assert added["priority"] == 10 and added["name"] == "Pack" and added["status"] == "active"
    assert added["expires_at"] == "2026-12-31T23:59:59Z" and added["effective_at"] == "2026-03-01T00:00:00Z"
    cli("grants", "void", "g-first", "--at", "2026-03-01")
    _add_grants(cli)
    balance = js(cli("balance", "alice", "--at", "2026-03-01T12:00:00Z", "--json"))
    assert set(balance) >= BALANCE_KEYS
    assert balance["account_id"] == "alice"
    # trial (priority 0) first; priority 50 by expiry (never last); the priority-80 promo last
    order = [p["grant_id"] for p in balance["packages"]]
    assert order == ["g-trial", "g-first", "g-pack", "g-later", "g-sub", "g-never", "g-promo"]
    for package in balance["packages"]:
        assert set(package) == PACKAGE_KEYS
    by_id = {p["grant_id"]: p for p in balance["packages"]}
    assert by_id["g-later"]["status"] == "scheduled"
    assert by_id["g-later"]["granted_credits"] == "7.000001"
    assert by_id["g-first"]["status"] == "voided" and by_id["g-first"]["voided_credits"] == "12.5"
    assert by_id["g-sub"]["name"] == "Professional Edition — Mar 2026"
    assert by_id["g-sub"]["priority"] == 50 and by_id["g-trial"]["priority"] == 0
    assert by_id["g-never"]["expires_at"] is None
    assert by_id["g-pack"]["expires_at"] == "2026-03-15T00:00:00Z"
    # available: 5 + 20 + 30 + 50 + 10 (the scheduled 7.000001 and the voided 12.5 do not count)
    assert balance["available_credits"] == "115"
    assert balance["held_credits"] == "0" and balance["overage_credits"] == "0"
    # grants list: the same packages, same order
    listed = js(cli("grants", "list", "alice", "--at", "2026-03-01T12:00:00Z", "--json"))
    assert [p["grant_id"] for p in listed] == order
    assert listed == balance["packages"]
    # 8 credits of usage: the trial's 5, then 3 from the package that expires soonest
    charged = js(cli("usage", "record", "alice", "--quantity", "web_search=4", "--id", "e-8",
                     "--at", "2026-03-01T12:00:00Z", "--json"))
    assert charged["cost_credits"] == "8"
    assert charged["allocations"] == [{"grant_id": "g-trial", "amount_credits": "5"},
                                      {"grant_id": "g-pack", "amount_credits": "3"}]
    # later: the scheduled grant is active, the promo expired with its 10 credits
    later = js(cli("balance", "alice", "--at", "2026-03-06", "--json"))
    by_id = {p["grant_id"]: p for p in later["packages"]}
    assert by_id["g-later"]["status"] == "active"
    assert by_id["g-promo"]["status"] == "expired" and by_id["g-promo"]["expired_credits"] == "10"
    assert by_id["g-promo"]["remaining_credits"] == "0"
    assert by_id["g-trial"]["status"] == "depleted" and by_id["g-trial"]["used_credits"] == "5"
    assert by_id["g-pack"]["used_credits"] == "3" and by_id["g-pack"]["remaining_credits"] == "17"
    # 17 + 30 + 50 + 7.000001
    assert later["available_credits"] == "104.000001"
    # void the subscription: what remains is removed
    voided = js(cli("grants", "void", "g-sub", "--at", "2026-03-06", "--json"))
    assert voided["status"] == "voided" and voided["voided_credits"] == "30"
    assert voided["remaining_credits"] == "0"
    assert js(cli("balance", "alice", "--at", "2026-03-06", "--json"))["available_credits"] == "74.000001"
    for package in js(cli("grants", "list", "alice", "--at", "2026-03-06", "--json")):
        granted = Decimal(package["granted_credits"])
        parts = sum(Decimal(package[k]) for k in ("used_credits", "held_credits", "expired_credits",
                                                  "voided_credits", "remaining_credits"))
        assert granted == parts, package
    assert cli("balance", "alice", "--at", "2026-03-06").stdout.strip()
    assert cli("grants", "list", "alice").stdout.strip()
    assert cli("reconcile").exit_code == 0


def test_grants_add_with_id_is_idempotent(priced: Cli) -> None:
    cli = priced
    args = ("grants", "add", "alice", "10", "--kind", "addon", "--id", "order-1", "--at", "2026-03-01")
    cli(*args)
    cli(*args)
    packages = js(cli("grants", "list", "alice", "--at", "2026-03-01", "--json"))
    assert [p["grant_id"] for p in packages] == ["order-1"]
    assert js(cli("balance", "alice", "--at", "2026-03-01", "--json"))["available_credits"] == "10"


# -- usage ---------------------------------------------------------------------------------------

def test_usage_record_prints_the_charge(priced: Cli) -> None:
    cli = priced
    cli("grants", "add", "alice", "2", "--kind", "trial", "--id", "g-trial", "--at", "2026-03-01")
    cli("grants", "add", "alice", "100", "--kind", "addon", "--id", "g-addon", "--at", "2026-03-01")
    args = ("usage", "record", "alice", "--model", "gpt-4o", "--input", "1000", "--output", "500",
            "--cached-input", "2000", "--cache-write", "400", "--quantity", "web_search=2", "--id", "e1",
            "--at", T, "--timestamp", "2026-03-01T11:59:00Z", "--json")
    out = js(cli(*args))
    assert set(out) >= CHARGE_KEYS
    # 1000 × 250 + 500 × 1000 + 2000 × 125 + 400 × 250 (cache_write defaults to input) = 1_100_000 µc
    # + 2 × 2 credits web_search = 5.1 credits; the trial's 2 first, then 3.1 from the add-on
    assert out["event_id"] == "e1"
    assert out["status"] == "charged"
    assert out["cost_credits"] == "5.1"
    assert out["allocations"] == [{"grant_id": "g-trial", "amount_credits": "2"},
                                  {"grant_id": "g-addon", "amount_credits": "3.1"}]
    for allocation in out["allocations"]:
        assert set(allocation) >= {"grant_id", "amount_credits"}
    assert out["overage_credits"] == "0"
    assert out["price_version"] == 1
    assert out.get("timestamp", "2026-03-01T11:59:00Z") == "2026-03-01T11:59:00Z"
    # the same again: the original result, marked duplicate, nothing charged twice
    again = js(cli(*args))
    assert again["status"] == "duplicate"
    assert {k: again[k] for k in CHARGE_KEYS - {"status"}} == {k: out[k] for k in CHARGE_KEYS - {"status"}}
    assert js(cli("balance", "alice", "--at", T, "--json"))["available_credits"] == "96.9"
    # the table form
    text = cli("usage", "record", "alice", "--model", "gpt-4o-mini", "--input", "100", "--id", "e2",
               "--at", T).stdout
    assert "e2" in text and "charged" in text


def test_usage_record_overage(priced: Cli) -> None:
    cli = priced
    cli("grants", "add", "alice", "1", "--kind", "addon", "--id", "g-small", "--at", "2026-03-01")
    out = js(cli("usage", "record", "alice", "--model", "demo-large", "--output", "1000", "--id", "big",
                 "--at", T, "--json"))
    # 1000 × 1500 µc = 1.5 credits: 1 from the grant, 0.5 overage
    assert out["cost_credits"] == "1.5"
    assert out["allocations"] == [{"grant_id": "g-small", "amount_credits": "1"}]
    assert out["overage_credits"] == "0.5"
    balance = js(cli("balance", "alice", "--at", T, "--json"))
    assert balance["overage_credits"] == "0.5" and balance["available_credits"] == "0"
    assert js(cli("accounts", "list", "--json"))[0]["overage_credits"] == "0.5"


def _events_file(path: Path) -> Path:
    lines = []
    for i in range(12):
        model = "gpt-4o" if i % 2 == 0 else "demo-small"
        stamp = f"2026-03-01T1{i // 6}:0{i % 6}:00Z"  # 10:00 .. 10:05, 11:00 .. 11:05
        lines.append({"id": f"imp-{i}", "account_id": "alice", "timestamp": stamp, "model": model,
                      "input_tokens": 1000, "output_tokens": 100,
                      "metadata": {"conversation": f"c{i % 3}"}})
    lines.append({"id": "imp-search", "account_id": "alice", "timestamp": "2026-03-01T11:30:00Z",
                  "quantities": {"web_search": 1}})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_usage_import_and_rerun(priced: Cli, tmp_path: Path) -> None:
    cli = priced
    cli("grants", "add", "alice", "100", "--kind", "addon", "--id", "g", "--at", "2026-03-01")
    path = _events_file(tmp_path / "events.jsonl")
    first = js(cli("usage", "import", str(path), "--json", "--at", T))
    assert (first["charged"], first["duplicate"], first["rejected"]) == (13, 0, 0)
    # gpt-4o: 1000 × 250 + 100 × 1000 = 350_000 µc; demo-small: 1000 × 50 + 100 × 200 = 70_000 µc
    # 6 × 0.35 + 6 × 0.07 + 2 (web_search) = 4.52
    assert first["charged_credits"] == "4.52"
    balance = js(cli("balance", "alice", "--at", T, "--json"))
    assert balance["available_credits"] == "95.48"
    again = js(cli("usage", "import", str(path), "--json", "--at", T))
    assert (again["charged"], again["duplicate"], again["rejected"]) == (0, 13, 0)
    assert js(cli("balance", "alice", "--at", T, "--json")) == balance
    assert len(js(cli("usage", "list", "alice", "--json"))) == 13
    text = cli("usage", "import", str(path), "--at", T).stdout
    assert "13 duplicate" in text
    assert cli("reconcile").exit_code == 0


def test_usage_list_filters_and_export(priced: Cli, tmp_path: Path) -> None:
    cli = priced
    cli("grants", "add", "alice", "100", "--kind", "addon", "--id", "g", "--at", "2026-03-01")
    cli("usage", "import", str(_events_file(tmp_path / "events.jsonl")), "--at", T)
    rows = js(cli("usage", "list", "alice", "--json"))
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert [r["event_id"] for r in rows[:2]] == ["imp-search", "imp-11"]  # 11:30, 11:05
    first = rows[-1]
    assert first["event_id"] == "imp-0" and first["model"] == "gpt-4o" and first["cost_credits"] == "0.35"
    assert first["input_tokens"] == 1000 and first["output_tokens"] == 100
    assert first["allocations"] == [{"grant_id": "g", "amount_credits": "0.35"}]
    assert first["metadata"] == {"conversation": "c0"}
    only_small = js(cli("usage", "list", "alice", "--model", "demo-small", "--json"))
    assert {r["event_id"] for r in only_small} == {f"imp-{i}" for i in range(1, 12, 2)}
    window = js(cli("usage", "list", "alice", "--from", "2026-03-01T10:02:00Z",
                    "--to", "2026-03-01T11:01:00Z", "--json"))
    # from inclusive, to exclusive: 10:02 .. 10:05 and 11:00, and the search at 11:30 is outside
    assert {r["event_id"] for r in window} == {"imp-2", "imp-3", "imp-4", "imp-5", "imp-6"}
    both = js(cli("usage", "list", "alice", "--from", "2026-03-01T10:02:00Z",
                  "--to", "2026-03-01T11:01:00Z", "--model", "gpt-4o", "--json"))
    assert {r["event_id"] for r in both} == {"imp-2", "imp-4", "imp-6"}
    assert js(cli("usage", "list", "alice", "--from", "2026-03-02", "--json")) == []
    assert cli("usage", "list", "alice").stdout.strip()
    # CSV export
    out = tmp_path / "usage.csv"
    cli("usage", "export", "alice", "--csv", str(out))
    with out.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 13
    assert {"event_id", "model", "cost_credits"} <= set(table[0])
    by_id = {r["event_id"]: r for r in table}
    assert by_id["imp-1"]["cost_credits"] == "0.07" and by_id["imp-1"]["model"] == "demo-small"
    assert by_id["imp-search"]["cost_credits"] == "2"
    total = sum(Decimal(r["cost_credits"]) for r in table)
    assert total == Decimal("4.52")
    filtered = tmp_path / "small.csv"
    cli("usage", "export", "alice", "--csv", str(filtered), "--model", "demo-small")
    with filtered.open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 6


# -- holds, tick, reconcile ----------------------------------------------------------------------

def test_holds_reserve_settle_release_and_tick(priced: Cli) -> None:
    cli = priced
    cli("grants", "add", "alice", "10", "--kind", "addon", "--id", "g", "--at", "2026-03-01")
    hold = js(cli("holds", "reserve", "alice", "4", "--ttl", "120", "--id", "h1", "--at", T, "--json"))
    assert set(hold) >= HOLD_KEYS
    assert hold["hold_id"] == "h1" and hold["amount_credits"] == "4"
    assert hold["expires_at"] == "2026-03-01T12:02:00Z"
    balance = js(cli("balance", "alice", "--at", T, "--json"))
    assert (balance["available_credits"], balance["held_credits"]) == ("6", "4")
    assert balance["packages"][0]["held_credits"] == "4"
    # the same reserve again answers the same hold
    assert js(cli("holds", "reserve", "alice", "4", "--ttl", "120", "--id", "h1", "--at", T, "--json"))[
        "hold_id"] == "h1"
    assert js(cli("balance", "alice", "--at", T, "--json"))["held_credits"] == "4"
    # refused: more than available; non-zero exit, nothing held
    refused = cli("holds", "reserve", "alice", "6.000001", "--id", "h-big", "--at", T, ok=False)
    assert refused.exit_code != 0
    assert js(cli("balance", "alice", "--at", T, "--json"))["available_credits"] == "6"
    # settle: 1000 in + 1000 out of gpt-4o = 1.25 credits from the hold, the rest released
    settled = js(cli("holds", "settle", "h1", "--model", "gpt-4o", "--input", "1000", "--output", "1000",
                     "--at", "2026-03-01T12:01:00Z", "--json"))
    assert set(settled) >= CHARGE_KEYS
    assert settled["status"] == "charged" and settled["cost_credits"] == "1.25"
    assert settled["allocations"] == [{"grant_id": "g", "amount_credits": "1.25"}]
    assert settled["overage_credits"] == "0" and settled["price_version"] == 1
    assert settled.get("hold_id", "h1") == "h1"
    balance = js(cli("balance", "alice", "--at", "2026-03-01T12:01:00Z", "--json"))
    assert (balance["available_credits"], balance["held_credits"]) == ("8.75", "0")
    # settle again with the same usage: the same charge, marked duplicate
    dup = js(cli("holds", "settle", "h1", "--model", "gpt-4o", "--input", "1000", "--output", "1000",
                 "--at", "2026-03-01T12:01:30Z", "--json"))
    assert dup["status"] == "duplicate" and dup["cost_credits"] == "1.25"
    # release
    cli("holds", "reserve", "alice", "3", "--id", "h2", "--at", T)
    assert js(cli("balance", "alice", "--at", T, "--json"))["available_credits"] == "5.75"
    released = cli("holds", "release", "h2", "--at", T)
    assert "released" in released.stdout
    assert js(cli("holds", "release", "h2", "--at", T, "--json"))["status"] == "released"  # idempotent
    assert js(cli("balance", "alice", "--at", T, "--json"))["available_credits"] == "8.75"
    # a hold not settled within its ttl: available is right at once, and tick records it
    cli("holds", "reserve", "alice", "2", "--ttl", "60", "--id", "h3", "--at", T)
    assert js(cli("balance", "alice", "--at", "2026-03-01T12:00:59Z", "--json"))["held_credits"] == "2"
    after_ttl = js(cli("balance", "alice", "--at", "2026-03-01T12:01:00Z", "--json"))
    assert (after_ttl["available_credits"], after_ttl["held_credits"]) == ("8.75", "0")
    tick = js(cli("tick", "--at", "2026-03-01T12:05:00Z", "--json"))
    assert tick["holds_expired"] >= 1
    assert tick["at"] == "2026-03-01T12:05:00Z"
    assert "tick at" in cli("tick", "--at", "2026-03-01T12:05:00Z").stdout  # again: nothing twice
    later = js(cli("balance", "alice", "--at", "2026-03-01T12:05:00Z", "--json"))
    assert later["available_credits"] == "8.75"
    # the settled hold cannot be released
    assert cli("holds", "release", "h1", "--at", T, ok=False).exit_code == 4
    recon = cli("reconcile")
    assert recon.exit_code == 0
    assert js(cli("reconcile", "--json")) == {"ok": True, "violations": []}


def test_holds_refused_with_overage_and_overage_paid_by_a_new_grant(priced: Cli) -> None:
    cli = priced
    cli("usage", "record", "alice", "--model", "gpt-4o", "--input", "1000", "--id", "debt", "--at", T)
    assert js(cli("balance", "alice", "--at", T, "--json"))["overage_credits"] == "0.25"
    in_debt = cli("holds", "reserve", "alice", "0.01", "--at", T, ok=False)
    assert in_debt.exit_code != 0
    assert "refused" in in_debt.stderr
    cli("grants", "add", "alice", "10", "--kind", "addon", "--id", "g", "--at", T)
    # the new grant first paid off the 0.25 overage
    balance = js(cli("balance", "alice", "--at", T, "--json"))
    assert (balance["available_credits"], balance["overage_credits"]) == ("9.75", "0")
    assert balance["packages"][0]["used_credits"] == "0.25"
    too_much = cli("holds", "reserve", "alice", "10", "--at", T, "--json", ok=False)
    assert too_much.exit_code != 0
    assert "refused" in too_much.stderr
    assert js(cli("balance", "alice", "--at", T, "--json"))["held_credits"] == "0"
    ok = js(cli("holds", "reserve", "alice", "9.75", "--at", T, "--json"))
    assert ok["amount_credits"] == "9.75"


def test_tick_expires_grants(priced: Cli) -> None:
    cli = priced
    cli("grants", "add", "alice", "3", "--kind", "promo", "--expires", "2026-03-02", "--id", "g",
        "--at", "2026-03-01")
    out = js(cli("tick", "--at", "2026-03-10", "--json"))
    assert set(out) >= {"accounts", "holds_expired", "entries"}
    package = js(cli("grants", "list", "alice", "--at", "2026-03-10", "--json"))[0]
    assert package["status"] == "expired" and package["expired_credits"] == "3"
    assert cli("reconcile").exit_code == 0


# -- environment and time ------------------------------------------------------------------------

def test_creditmeter_db_env_var_is_honoured(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    env = {"CREDITMETER_DB": url}
    assert invoke(["db", "upgrade"], env=env).exit_code == 0
    assert invoke(["accounts", "create", "envy", "--at", "2026-03-01"], env=env).exit_code == 0
    listed = invoke(["accounts", "list", "--json"], env=env)
    assert [a["id"] for a in js(listed)] == ["envy"]
    assert (tmp_path / "env.db").exists()
    # --db wins over the variable
    other = f"sqlite:///{tmp_path}/other.db"
    assert invoke(["db", "upgrade", "--db", other], env=env).exit_code == 0
    assert js(invoke(["accounts", "list", "--json", "--db", other], env=env)) == []


def test_at_with_a_bare_date_is_midnight_utc(priced: Cli) -> None:
    cli = priced
    added = js(cli("grants", "add", "alice", "1", "--kind", "addon", "--id", "g", "--expires", "2026-03-08",
                   "--at", "2026-03-02", "--json"))
    assert added["effective_at"] == "2026-03-02T00:00:00Z"
    assert added["expires_at"] == "2026-03-08T00:00:00Z"
    hold = js(cli("holds", "reserve", "alice", "0.5", "--ttl", "60", "--id", "h", "--at", "2026-03-03",
                  "--json"))
    assert hold["expires_at"] == "2026-03-03T00:01:00Z"
    charged = js(cli("usage", "record", "alice", "--model", "gpt-4o", "--input", "4", "--id", "e",
                     "--at", "2026-03-04", "--json"))
    assert charged.get("timestamp", "2026-03-04T00:00:00Z") == "2026-03-04T00:00:00Z"
    listed = js(cli("usage", "list", "alice", "--json"))
    assert listed[0]["timestamp"] == "2026-03-04T00:00:00Z"
    # just before midnight of the expiry date the grant is active, at midnight it has expired
    before = js(cli("balance", "alice", "--at", "2026-03-07T23:59:59Z", "--json"))
    assert before["packages"][0]["status"] == "active"
    at_midnight = js(cli("balance", "alice", "--at", "2026-03-08", "--json"))
    assert at_midnight["packages"][0]["status"] == "expired"


# -- the demo, with the real installed command ---------------------------------------------------

def test_demo_then_reconcile(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    demo = subprocess.run([str(CREDITMETER), "demo", "--db", url, "--days", "10", "--no-serve"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "demo.db").exists()
    assert re.search(r"demo-user's key .*: cm_\S{40,}", demo.stdout), demo.stdout[-500:]
    recon = subprocess.run([str(CREDITMETER), "reconcile", "--db", url], capture_output=True, text=True,
                           timeout=60, check=False)
    assert recon.returncode == 0, recon.stdout + recon.stderr
    listed = subprocess.run([str(CREDITMETER), "usage", "list", "demo-user", "--json", "--db", url],
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0
    assert len(json.loads(listed.stdout)) > 10


def test_demo_serves_the_gateway_and_the_console_with_the_key_it_prints(tmp_path: Path) -> None:
    """``creditmeter demo`` as a newcomer runs it: the printed key calls the gateway with the
    ``openai`` client (charged exactly what the balance then shows) and opens the console."""
    import httpx2
    import openai

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = (tmp_path / "demo.out").open("w+")
    process = subprocess.Popen([str(CREDITMETER), "demo", "--port", str(port)], stdout=out,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "demo.out").read_text()
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.2)
        printed = (tmp_path / "demo.out").read_text()
        key = re.search(r"^  demo key  (cm_\S+)$", printed, re.M)
        assert key, printed
        assert f"{base}/console" in printed and "from openai import OpenAI" in printed
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key.group(1), max_retries=0)
        models = {m.id: m.owned_by for m in client.models.list()}
        assert models == {"demo-small": "creditmeter-demo", "demo-large": "creditmeter-demo"}
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        before = httpx2.get(f"{base}/api/accounts/demo-user/balance", headers=headers).json()
        raw = client.chat.completions.with_raw_response.create(
            model="demo-small", messages=[{"role": "user", "content": "Hello, what does this cost?"}])
        reply = raw.parse()
        assert reply.choices[0].message.content.startswith("[demo upstream")
        after = httpx2.get(f"{base}/api/accounts/demo-user/balance", headers=headers).json()
        charged = Decimal(raw.headers["x-credits-charged"])
        # example.yaml: demo-small costs 50 credits per 1M input tokens and 200 per 1M output tokens
        usage = reply.usage
        assert usage is not None
        expected = Decimal(usage.prompt_tokens) * 50 + Decimal(usage.completion_tokens) * 200
        assert charged == expected / 1_000_000
        assert Decimal(before["available_credits"]) - Decimal(after["available_credits"]) == charged
        assert Decimal(raw.headers["x-credits-remaining"]) == Decimal(after["available_credits"])
        # The console: a signed-out visit is sent to sign in; the printed key signs in, and the
        # pages show the demo's month of usage.
        console = httpx2.get(f"{base}/console", follow_redirects=False)
        assert console.status_code in (302, 303, 307) and "sign" in console.headers["location"]
        days = httpx2.get(f"{base}/api/accounts/demo-user/usage/summary", headers=headers,
                          params={"group_by": "day"}).json()["groups"]
        first, last = sorted(date.fromisoformat(day["day"]) for day in days)[::len(days) - 1]
        assert len(days) >= 20 and (last - first).days >= 25, days
        requests = sum(day["requests"] for day in days)
        with httpx2.Client(base_url=base, follow_redirects=True) as browser:
            overview = browser.post("/console/sign-in", data={"key": key.group(1)})
            assert overview.status_code == 200 and "Dana Demo" in overview.text
            assert "Personal Trial Edition" in overview.text and "Personal Add-on Pack" in overview.text
            # the Subscription card: the running Professional subscription, not "No subscription"
            assert re.search(r'id="plan">Personal Professional Edition<', overview.text), overview.text
            assert 'id="sub-status">active<' in overview.text and "No subscription" not in overview.text
            usage_page = browser.get("/console/accounts/demo-user/usage", params={
                "from": first.isoformat(), "to": last.isoformat()})
            assert usage_page.status_code == 200
            shown = re.search(r'id="selection-requests">([\d,]+)<', usage_page.text)
            assert shown and int(shown.group(1).replace(",", "")) == requests, shown
            team = browser.get("/console/enterprises/demo-team")
            assert team.status_code == 200 and "demo-teammate" in team.text
    finally:
        process.terminate()
        process.wait(20)
        out.close()


# -- keys ----------------------------------------------------------------------------------------

def test_keys_create_list_revoke(priced: Cli) -> None:
    cli = priced
    created = js(cli("keys", "create", "alice", "--name", "laptop", "--json", "--at", T))
    key = created["key"]
    assert key.startswith("cm_") and len(key) >= 40
    assert created["account_id"] == "alice" and created["role"] == "account"
    plain = cli("keys", "create", "alice", "--at", T)
    assert plain.stdout.strip().startswith("cm_") and plain.stdout.count("\n") == 1  # the key alone
    operator = js(cli("keys", "create", "--operator", "--json", "--at", T))
    assert operator["role"] == "operator" and operator["account_id"] is None
    listed = cli("keys", "list", "alice", "--json")
    assert key not in listed.stdout and plain.stdout.strip() not in listed.stdout
    rows = js(listed)
    assert sorted(r["name"] for r in rows) == ["", "laptop"]
    assert len(js(cli("keys", "list", "--json"))) == 3
    revoked = js(cli("keys", "revoke", created["key_id"], "--json", "--at", "2026-03-02"))
    assert revoked["revoked_at"] == "2026-03-02T00:00:00Z"
    # Revoking again changes nothing.
    again = js(cli("keys", "revoke", created["key_id"], "--json", "--at", "2026-03-05"))
    assert again["revoked_at"] == "2026-03-02T00:00:00Z"


@pytest.mark.parametrize(("args", "code", "field"), [
    (["keys", "create"], 2, "account"),
    (["keys", "create", "alice", "--operator"], 2, "account"),
    (["keys", "create", "nobody"], 3, "account_id"),
    (["keys", "revoke", "key_nope"], 3, "key_id"),
    (["keys", "list", "nobody"], 3, "account_id"),
    (["keys", "create", "alice", "--name", "n" * 256], 2, "name"),
])
def test_keys_bad_input(priced: Cli, args: list[str], code: int, field: str) -> None:
    before = priced("keys", "list", "--json").stdout
    result = priced(*args, ok=False)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(f"error: {field}"), result.stderr
    assert priced("keys", "list", "--json").stdout == before
