"""A plan with a daily allowance, a 5-hour limit and rollover, as its subscriber lives it — told
through the ``creditmeter`` command, each step replayed at its own instant with ``--at``
(SPEC §12, §10).

Mei subscribes to Professional Plus on 2026-03-01 00:00 UTC: 1,500 credits a month (from her
start), and 50 more each calendar day in Shanghai (UTC+8, so her days turn at 16:00 UTC). She
may not consume more than 300 credits in any 5 hours, whatever pays. What her month leaves
unused carries over: 40% of the 1,500 at most, and never more than 200 credits, for one month.

One token of the ``simple`` model costs exactly one credit, so every amount reads straight off
the story. Every test runs on SQLite and on PostgreSQL; no ``tick`` runs unless the story says so.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from creditmeter.cli import main
from tests.conftest import EngineFactory

PRICES = """
models:
  simple: {input: 1000000, output: 1000000}   # one credit a token
"""

PLANS = """
plans:
  - id: pro-plus
    kind: subscription
    name: Professional Plus
    credits: 1500
    period: month
    rollover: {max_percent: 40, max_credits: 200, lasts: 1}
    allowances:
      - {id: daily, every: 1d, credits: 50, calendar: Asia/Shanghai, name: Daily credits}
    limits:
      - {window: rolling 5h, credits: 300}
"""

SHANGHAI = ZoneInfo("Asia/Shanghai")
MARCH = "sub:mei-plus@2026-03-01T00:00:00Z"  # the month's 1,500 credits
APRIL = "sub:mei-plus@2026-04-01T00:00:00Z"
MARCH_ROLLOVER = "rol:mei-plus@2026-03-01T00:00:00Z"
EXIT_REFUSED = 6


def shanghai(text: str) -> str:
    """A Shanghai wall-clock time as the UTC instant the commands take: ``2026-03-03 00:00`` →
    ``2026-03-02T16:00:00Z``."""
    local = datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)
    return local.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")


def daily(local_day: str) -> str:
    """The id of the daily allowance's package for a Shanghai calendar day: it starts at that
    day's local midnight."""
    start = shanghai(f"{local_day} 00:00").replace(".000000", "")
    return f"sub:mei-plus@{start}:daily"


class Mei:
    """The ``creditmeter`` command on this test's database, for Mei's account."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def run(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, [*args, "--db", self.db_url], env={"COLUMNS": "200"})
        assert result.exit_code == code, (args, result.output)
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run(*args, "--json", code=code).stdout)

    def uses(self, event_id: str, credits: int, at: str, *,
             happened: str | None = None) -> list[tuple[str, str]]:
        """Record ``credits`` of usage at ``at`` (or, late, at ``happened``): which packages paid."""
        late = ["--timestamp", happened] if happened else []
        charge = self.json("usage", "record", "mei", "--model", "simple", "--input", str(credits),
                           "--id", event_id, *late, "--at", at)
        assert charge["status"] == "charged" and charge["overage_credits"] == "0", charge
        return [(a["grant_id"], a["amount_credits"]) for a in charge["allocations"]]

    def balance(self, at: str) -> Any:
        return self.json("balance", "mei", "--at", at)

    def package(self, at: str, grant_id: str) -> dict[str, Any]:
        found = [p for p in self.balance(at)["packages"] if p["grant_id"] == grant_id]
        assert len(found) == 1, (grant_id, found)
        return found[0]

    def allowance(self, at: str, allowance_id: str) -> dict[str, Any]:
        [found] = [a for a in self.balance(at)["allowances"] if a["id"] == allowance_id]
        return found

    def reserve(self, credits: int, at: str, *, code: int = 0) -> Any:
        return self.json("holds", "reserve", "mei", str(credits), "--at", at, code=code)


@pytest.fixture
def mei(make_engine: EngineFactory, tmp_path: Path) -> Mei:
    """Mei on Professional Plus from 2026-03-01 00:00 UTC (08:00 in Shanghai)."""
    account = Mei(make_engine().store.url)
    (tmp_path / "prices.yaml").write_text(PRICES, encoding="utf-8")
    (tmp_path / "plans.yaml").write_text(PLANS, encoding="utf-8")
    account.run("prices", "load", str(tmp_path / "prices.yaml"), "--effective", "2026-01-01",
                "--at", "2026-01-01")
    account.run("plans", "load", str(tmp_path / "plans.yaml"), "--at", "2026-02-20")
    account.run("accounts", "create", "mei", "--at", "2026-03-01")
    account.run("subscriptions", "create", "mei", "pro-plus", "--id", "mei-plus", "--at", "2026-03-01")
    return account


def test_the_last_microsecond_of_a_local_day_and_the_first_of_the_next_are_paid_by_their_own_days(
        mei: Mei) -> None:
    last_us = shanghai("2026-03-02 23:59:59.999999")
    midnight = shanghai("2026-03-03 00:00")
    assert (last_us, midnight) == ("2026-03-02T15:59:59.999999Z", "2026-03-02T16:00:00Z")

    # No tick runs: each day's package is there at its first microsecond all the same.
    assert mei.uses("late-night", 10, last_us) == [(daily("2026-03-02"), "10")]
    assert mei.uses("midnight", 10, midnight) == [(daily("2026-03-03"), "10")]

    before = mei.allowance(last_us, "daily")
    assert (before["grant_id"], before["period_start"], before["resets_at"]) == (
        daily("2026-03-02"), "2026-03-01T16:00:00Z", "2026-03-02T16:00:00Z")
    assert (before["used_credits"], before["granted_credits"], before["remaining_credits"]) == (
        "10", "50", "40")
    after = mei.allowance(midnight, "daily")
    assert (after["grant_id"], after["period_start"], after["resets_at"]) == (
        daily("2026-03-03"), "2026-03-02T16:00:00Z", "2026-03-03T16:00:00Z")
    assert (after["used_credits"], after["remaining_credits"]) == ("10", "40")
    # Yesterday's leftover is gone at midnight; the month's credits were not touched.
    yesterday = mei.package(midnight, daily("2026-03-02"))
    assert (yesterday["status"], yesterday["expired_credits"]) == ("expired", "40")
    month = mei.allowance(midnight, "plan")
    assert (month["grant_id"], month["used_credits"], month["remaining_credits"]) == (MARCH, "0", "1500")
    assert mei.balance(midnight)["available_credits"] == "1540"

    # The table says the same: each allowance with its period and what is left of it.
    table = mei.run("balance", "mei", "--at", midnight).stdout
    assert "Daily credits" in table and "2026-03-02 16:00 → 2026-03-03 16:00" in table
    assert "10 / 50" in table and "0 / 1500" in table
    mei.run("reconcile")


def test_the_month_is_touched_only_once_the_day_is_spent(mei: Mei) -> None:
    morning, noon, evening = (shanghai(f"2026-03-05 {t}") for t in ("09:00", "12:00", "20:00"))
    assert mei.uses("breakfast", 30, morning) == [(daily("2026-03-05"), "30")]
    # 45 credits when 20 are left of the day: the day's 20 first, the other 25 from the month.
    assert mei.uses("lunch", 45, noon) == [(daily("2026-03-05"), "20"), (MARCH, "25")]
    assert mei.uses("dinner", 5, evening) == [(MARCH, "5")]
    day = mei.allowance(evening, "daily")
    assert (day["used_credits"], day["remaining_credits"]) == ("50", "0")
    month = mei.allowance(evening, "plan")
    assert (month["used_credits"], month["remaining_credits"]) == ("30", "1470")
    # The next local day brings 50 fresh credits, used before the month's again.
    assert mei.uses("next-breakfast", 30, shanghai("2026-03-06 09:00")) == [(daily("2026-03-06"), "30")]
    mei.run("reconcile")


def test_the_five_hour_limit_refuses_a_hold_until_the_oldest_usage_leaves_the_window(mei: Mei) -> None:
    oldest = "2026-03-10T01:00:00.123456Z"
    mei.uses("draft", 100, oldest)
    mei.uses("review", 120, "2026-03-10T02:30:00Z")
    mei.uses("rewrite", 70, "2026-03-10T04:00:00Z")
    now = "2026-03-10T05:00:00Z"  # 290 of 300 used in the last 5 hours; 1,260 credits left
    [limit] = mei.json("limits", "list", "mei", "--at", now)
    assert (limit["id"], limit["source"], limit["window"]) == ("plan-1", "plan", "rolling 5h")
    assert (limit["used_credits"], limit["remaining_credits"], limit["resets_at"]) == (
        "290", "10", "2026-03-10T06:00:00.123456Z")

    # 20 credits would take the window to 310: refused, though the credits are there.
    frees_at = "2026-03-10T06:00:00.123456Z"  # the oldest usage's time + 5 hours, to the µs
    refused = mei.reserve(20, now, code=EXIT_REFUSED)
    assert (refused["code"], refused["available_credits"]) == ("limit_reached", "1260")
    assert (refused["limit"]["id"], refused["limit"]["used_credits"], refused["limit"]["frees_at"]) == (
        "plan-1", "290", frees_at)
    said = mei.run("holds", "reserve", "mei", "20", "--at", now, code=EXIT_REFUSED).stderr
    assert "limit plan-1 reached: 300 credits in any 5 hours: used 290" in said
    assert f"enough frees up at {frees_at}" in said
    # What is left of the window may still be held (and given back).
    hold = mei.reserve(10, now)
    mei.run("holds", "release", hold["hold_id"], "--at", now)

    # One microsecond before the oldest usage leaves the window: still refused, with the same answer.
    just_before = "2026-03-10T06:00:00.123455Z"
    again = mei.reserve(20, just_before, code=EXIT_REFUSED)
    assert (again["code"], again["limit"]["used_credits"], again["limit"]["frees_at"]) == (
        "limit_reached", "290", frees_at)
    # At frees-at exactly the 100 credits have left the window: 190 + 20 fit.
    passed = mei.reserve(20, frees_at)
    assert passed["amount_credits"] == "20"
    [limit] = mei.json("limits", "list", "mei", "--at", frees_at)
    assert (limit["used_credits"], limit["held_credits"], limit["remaining_credits"]) == ("190", "20", "90")
    mei.run("reconcile")


def test_unused_monthly_credits_roll_over_once_and_a_late_event_is_charged_to_its_own_day(mei: Mei) -> None:
    # March: the day's credits first, so the month pays 400 of 450 credits used on 2026-03-20.
    assert mei.uses("report", 450, "2026-03-20T02:00:00Z") == [(daily("2026-03-20"), "50"), (MARCH, "400")]
    # Unused: 1,100 of the month's 1,500. 40% of 1,500 is 600; 200 at most: 200 roll over.
    month_end = "2026-04-01T00:00:00Z"
    for tick_at in (month_end, month_end, "2026-04-04T00:00:00Z"):  # twice, then days late
        mei.run("tick", "--at", tick_at)
        rollovers = [p for p in mei.balance(tick_at)["packages"] if p["kind"] == "rollover"]
        assert [(p["grant_id"], p["granted_credits"], p["effective_at"], p["expires_at"])
                for p in rollovers] == [(MARCH_ROLLOVER, "200", month_end, "2026-05-01T00:00:00Z")]
    now = "2026-04-04T03:00:00Z"
    balance = mei.balance(now)
    assert balance["available_credits"] == "1750"  # April's 1,500, the rollover, the day's 50
    march = mei.package(now, MARCH)
    assert (march["used_credits"], march["expired_credits"]) == ("600", "900")  # 400 used, 200 carried

    # Usage of 2026-03-31 23:30 in Shanghai arrives four days late, inside the lateness window:
    # it is paid by that day's allowance (made now, for its day), then by March's credits.
    late = shanghai("2026-03-31 23:30")
    assert mei.uses("late-report", 70, now, happened=late) == [(daily("2026-03-31"), "50"), (MARCH, "20")]
    march = mei.package(now, MARCH)
    assert (march["used_credits"], march["expired_credits"]) == ("620", "880")
    rollover = mei.package(now, MARCH_ROLLOVER)
    assert (rollover["granted_credits"], rollover["remaining_credits"]) == ("200", "200")
    april = mei.package(now, APRIL)
    assert april["used_credits"] == "0"
    assert mei.balance(now)["available_credits"] == "1750"
    assert mei.json("reconcile") == {"ok": True, "violations": []}
