"""The command at its edges: negative amounts, ``--at`` far out, files that start with a byte order
mark, a ``--db`` that is not a database URL. Each refusal exits 2 naming the field and writes
nothing; on each store."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from click.testing import Result

from tests.cli.test_cli import Cli, cli, db_url, invoke, js, priced  # noqa: F401 - fixtures
from tests.conftest import EXAMPLE_CATALOG

AT = ("--at", "2026-03-01T10:00:00Z")


def refused(result: Result, field: str) -> None:
    assert result.exit_code == 2, result.output
    assert f"error: {field}: " in result.output, result.output
    assert "Traceback" not in result.output


def state(run: Cli) -> list[object]:
    """Everything a refused command could have written, as the commands show it."""
    return [js(run("accounts", "list", "--json")), js(run("grants", "list", "alice", "--json", *AT)),
            js(run("grants", "list", "team", "--json", *AT)), js(run("usage", "list", "alice", "--json")),
            js(run("enterprise", "show", "team", "--json", *AT))]


@pytest.fixture
def team(priced: Cli) -> Cli:  # noqa: F811
    priced("grants", "add", "alice", "100", "--kind", "promo", *AT)
    priced("accounts", "create", "team", "--kind", "enterprise", *AT)
    priced("grants", "add", "team", "100", "--kind", "enterprise", *AT)
    priced("enterprise", "add-member", "team", "alice", *AT)
    return priced


@pytest.mark.parametrize("args", [
    ["grants", "add", "alice", "-50", "--kind", "promo"],
    ["grants", "add", "alice", "-0.000001", "--kind", "promo"],
    ["holds", "reserve", "alice", "-5"],
    ["enterprise", "allocate", "team", "alice", "-50"],
], ids=" ".join)
def test_a_negative_amount_reaches_the_amount_check(team: Cli, args: list[str]) -> None:
    before = state(team)
    result = team(*args, *AT, ok=False)
    refused(result, "amount")
    assert "No such option" not in result.output
    assert state(team) == before


@pytest.mark.parametrize("args", [
    ["grants", "add", "alice", "10", "--kind", "promo"],
    ["usage", "record", "alice", "--model", "gpt-4o", "--input", "10"],
    ["holds", "reserve", "alice", "1"],
    ["subscriptions", "create", "alice", "professional-monthly"],
    ["purchases", "create", "alice", "addon-1000"],
    ["tick"],
    ["keys", "create", "alice"],
], ids=" ".join)
@pytest.mark.parametrize("when", ["9999-12-31T12:00:00Z", "9000-01-01", "1969-12-31T23:59:59Z"])
def test_at_outside_its_range_is_refused_naming_it(team: Cli, args: list[str], when: str) -> None:
    before = state(team)
    refused(team(*args, "--at", when, ok=False), "at")
    assert state(team) == before


def test_at_just_inside_its_range_can_run_every_write(team: Cli) -> None:
    """The latest --at leaves room for every time a command derives from it."""
    last = ("--at", "8999-12-31T23:59:59.999999Z")
    team("subscriptions", "create", "alice", "trial", *last)
    team("subscriptions", "create", "alice", "professional-monthly", *last)
    team("purchases", "create", "alice", "package-3000", *last)
    team("holds", "reserve", "alice", "1", "--ttl", str(7 * 86_400), *last)
    team("tick", "--at", "8999-12-31T23:59:59Z")
    assert js(team("reconcile", "--json"))["ok"]


def test_files_starting_with_a_byte_order_mark_are_read(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    bom = codecs.BOM_UTF8
    prices = tmp_path / "prices.yaml"
    prices.write_bytes(bom + EXAMPLE_CATALOG.read_bytes())
    cli("prices", "load", str(prices), "--effective", "2026-01-01", "--at", "2026-01-01")
    litellm = tmp_path / "litellm.json"
    litellm.write_bytes(bom + json.dumps({"m1": {"input_cost_per_token": 0.000001, "output_cost_per_token":
                                                 0.000002, "mode": "chat"}}).encode())
    cli("prices", "import-litellm", str(litellm), "--credits-per-usd", "100", "--at", "2026-01-02")
    plans = tmp_path / "plans.yaml"
    plans.write_bytes(bom + b"plans:\n  - {id: p1, kind: addon, name: P1, credits: 5, valid_days: 3}\n")
    cli("plans", "load", str(plans), *AT)
    cli("accounts", "create", "alice", *AT)
    events = tmp_path / "events.jsonl"
    events.write_bytes(bom + b'{"id": "e1", "account_id": "alice", "model": "m1", "input_tokens": 5}\n'
                       b'{"id": "e2", "account_id": "alice", "model": "m1", "input_tokens": 7}\n')
    summary = js(cli("usage", "import", str(events), "--json", *AT))
    assert (summary["charged"], summary["rejected"]) == (2, 0), summary


@pytest.mark.parametrize("url", ["foo://x", "nonsense", "postgresql+nodriver://a@b/c"])
def test_a_db_that_is_not_a_database_url_is_bad_input(url: str) -> None:
    refused(invoke(["accounts", "list", "--db", url]), "db")
