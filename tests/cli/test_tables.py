"""The tables people read: every id and amount whole on one line and exact, at any width.

Each listing command is run on a terminal of 60, 80 and 200 columns (through click's runner its
output is not a terminal, as when piped), and checked against the same command's ``--json``: each
id and amount there must appear in the table as a whole word, never cut, folded or rounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from creditmeter.cli import main

ACCOUNT = "acct_7f3c2a9e-enterprise-customer-0001"
MEMBER = "user_2b1e9c6f0d4a4e8f9a7c3d5e1f0a2b4c"
TEAM = "team_4d8e0f1a-research-division"
PROMO = "promo:spring-campaign-2026-for-loyal-customers"
MODEL = "anthropic-claude-sonnet-4-20250514-extended"
PLAN = "professional-monthly-with-priority-support"
DAILY_PLAN = "professional-plus-with-daily-credits"
SUBSCRIBER = "user_9d0c4b7a2e1f4c3b8a6d5e4f3a2b1c0d"

PRICES = f"""
models:
  {MODEL}: {{input: 3.000001, output: 15.5, cached_input: 0.000001}}
  small: {{input: 0.15, output: 0.6}}
features:
  web_search_with_citations: 0.000001
"""

PLANS = f"""
plans:
  - {{id: trial, kind: trial, name: Trial, credits: 0.000001, valid_days: 14}}
  - id: {PLAN}
    kind: subscription
    name: Personal Professional Edition with priority support and a very long name
    credits: 1649.091427
    period: month
  - {{id: addon-pack-of-four-hundred-and-ninety-nine, kind: addon, name: Add-on, credits: 499.55,
     valid_days: 365}}
  - id: {DAILY_PLAN}
    kind: subscription
    name: Professional Plus with daily credits and a name long enough to wrap
    credits: 1649.091427
    period: month
    allowances:
      - {{id: daily-credits-2026, every: 1d, credits: 0.000001, calendar: Asia/Kolkata,
         name: "Daily credits on the Kolkata calendar, with a long name"}}
    limits:
      - {{window: rolling 5h, credits: 499.55}}
"""

WORD = r"(?<![\w.:@-]){}(?![\w.:@-])"


def run(db: str, *args: str, columns: int = 80) -> Result:
    result = CliRunner().invoke(main, [*args, "--db", db], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, (args, result.output)
    return result


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Accounts, packages (exact odd amounts, one expired), usage, keys, an enterprise, on SQLite."""
    tmp = tmp_path_factory.mktemp("tables")
    url = f"sqlite:///{tmp / 'tables.db'}"
    (tmp / "prices.yaml").write_text(PRICES)
    (tmp / "plans.yaml").write_text(PLANS)
    run(url, "prices", "load", str(tmp / "prices.yaml"), "--effective", "2026-01-01", "--at", "2026-01-01")
    run(url, "plans", "load", str(tmp / "plans.yaml"), "--at", "2026-01-01")
    for account, kind in ((ACCOUNT, "user"), (MEMBER, "user"), (TEAM, "enterprise")):
        run(url, "accounts", "create", account, "--kind", kind, "--at", "2026-01-01",
            "--name", f"A customer with a long display name ({kind}) that has to wrap somewhere")
    at = ("--at", "2026-03-01T10:00:00Z")
    run(url, "grants", "add", ACCOUNT, "1649.091427", "--kind", "promo", "--id", PROMO, *at)
    run(url, "grants", "add", ACCOUNT, "499.55", "--kind", "addon", "--expires", "2026-03-02",
        "--priority", "90", *at)
    run(url, "grants", "add", ACCOUNT, "0.000001", "--kind", "adjustment", *at)
    run(url, "usage", "record", ACCOUNT, "--model", MODEL, "--input", "123457", "--output", "9871",
        "--cached-input", "7", "--quantity", "web_search_with_citations=3", *at)
    run(url, "usage", "record", ACCOUNT, "--model", "small", "--input", "1", *at)
    run(url, "keys", "create", ACCOUNT, "--name", "production key for the billing backend", *at)
    run(url, "keys", "create", "--operator", *at)
    run(url, "grants", "add", TEAM, "1649.091427", "--kind", "enterprise", *at)
    run(url, "enterprise", "add-member", TEAM, MEMBER, *at)
    run(url, "enterprise", "allocate", TEAM, MEMBER, "499.55", "--id", "q2-research-quota", *at)
    run(url, "limits", "set", ACCOUNT, "--window", "7d", "--calendar", "America/Argentina/Buenos_Aires",
        "--credits", "1649.091427", "--id", "weekly-limit-of-the-enterprise-customer", *at)
    run(url, "accounts", "create", SUBSCRIBER, "--at", "2026-01-01")
    run(url, "subscriptions", "create", SUBSCRIBER, DAILY_PLAN, "--at", "2026-03-01T09:00:00.250001Z")
    run(url, "usage", "record", SUBSCRIBER, "--model", "small", "--input", "1", *at)
    yield url


def _values(data: Any, keep: Callable[[str], bool]) -> Iterator[str]:
    """Every string value in a JSON document whose key ``keep`` accepts."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, str) and keep(key):
                yield value
            else:
                yield from _values(value, keep)
    elif isinstance(data, list):
        for item in data:
            yield from _values(item, keep)


def _always_shown(key: str) -> bool:
    """Ids, and the amounts every table keeps at any width."""
    return key in {"id", "grant_id", "key_id", "allocation_id", "model", "credits", "input", "output",
                   "granted_credits", "used_credits", "remaining_credits", "available_credits",
                   "cost_credits", "amount_credits", "quota_credits", "account_id"}


LISTINGS = [
    ("plans", "list"), ("accounts", "list"), ("keys", "list"), ("keys", "list", ACCOUNT),
    ("balance", ACCOUNT, "--at", "2026-03-03"), ("grants", "list", ACCOUNT, "--at", "2026-03-03"),
    ("balance", SUBSCRIBER, "--at", "2026-03-01T11:00:00Z"),
    ("limits", "list", ACCOUNT, "--at", "2026-03-03"),
    ("limits", "list", SUBSCRIBER, "--at", "2026-03-01T11:00:00Z"),
    ("usage", "list", ACCOUNT), ("enterprise", "show", TEAM, "--at", "2026-03-01T11:00:00Z"),
    ("prices", "list", "--at", "2026-03-01"),
]


@pytest.mark.parametrize("columns", [60, 80, 200])
@pytest.mark.parametrize("command", LISTINGS, ids=" ".join)
def test_tables_show_every_id_and_amount_whole_and_exact(db: str, command: tuple[str, ...],
                                                          columns: int) -> None:
    data = json.loads(run(db, *command, "--json").stdout)
    if command[0] == "prices":
        data = data["catalog"]["models"]
        data = [{"model": name, **prices} for name, prices in data.items()]
    expected = set(_values(data, _always_shown))
    if command[0] == "usage":  # each event's account is the one asked for, not repeated
        expected.discard(ACCOUNT)
    assert expected, command
    shown = run(db, *command, columns=columns).stdout
    for value in expected:
        assert re.search(WORD.format(re.escape(value)), shown), (value, columns, shown)
    assert "None" not in shown
    assert "…" not in shown


def test_the_odd_amounts_are_shown_exactly(db: str) -> None:
    """1649.091427, 499.55 (expired) and 0.000001 as they are, not rounded."""
    balance = run(db, "balance", ACCOUNT, "--at", "2026-03-03", columns=200).stdout
    packages = [line for line in balance.splitlines() if "│" in line]
    promo = next(line for line in packages if PROMO in line)
    assert re.search(WORD.format(re.escape("1649.091427")), promo)
    expired = next(line for line in packages if " expired " in line)
    assert expired.count("499.55") == 2  # granted, and expired
    assert any(re.search(WORD.format(re.escape("0.000001")), line) for line in packages)
    plans = run(db, "plans", "list").stdout
    for amount in ("1649.091427", "499.55", "0.000001"):
        assert re.search(WORD.format(re.escape(amount)), plans), amount


def test_an_empty_cell_shows_nothing(db: str, tmp_path: Path) -> None:
    keys = run(db, "keys", "list", columns=200).stdout
    operator = next(line for line in keys.splitlines() if " operator " in line)
    assert "None" not in operator
    plans = run(db, "plans", "list", columns=200).stdout
    assert "None" not in plans
