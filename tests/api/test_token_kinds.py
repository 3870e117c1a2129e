"""Reasoning tokens, 1-hour cache writes and the service tier, end to end on each store: recorded
through the API and the CLI, charged what rating them costs, and shown again by every listing
(JSON, CSV, summaries, tables); holds settled with them likewise."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from creditmeter.cli import main
from creditmeter.engine import Engine
from creditmeter.money import format_credits
from creditmeter.pricing import Catalog, rate
from tests.api.conftest import NOW, OPERATOR, Clock
from tests.conftest import at

MODEL = "claude-sonnet-4"  # input 300, output 1500, cached_input 30, cache_write 375 (example catalog)
EVENT: dict[str, Any] = {
    "id": "r1", "account_id": "alice", "timestamp": "2026-11-10T11:00:00Z", "model": MODEL,
    "input_tokens": 1200, "output_tokens": 300, "cached_input_tokens": 4000, "cache_write_tokens": 700,
    "reasoning_tokens": 900, "cache_write_1h_tokens": 1500, "service_tier": "priority",
    "quantities": {"web_search": 1}, "metadata": {"conversation": "c1"}}
NEW_FIELDS = ("reasoning_tokens", "cache_write_1h_tokens", "service_tier")


def _cost(catalog: Catalog, body: dict[str, Any], at_us: int) -> int:
    """What rating the body costs, and a check that its new fields are part of that cost."""
    counts = [body.get(k, 0) for k in ("input_tokens", "output_tokens", "cached_input_tokens",
                                       "cache_write_tokens")]
    quantities = tuple(sorted(body.get("quantities", {}).items()))
    cost = rate(catalog, body["model"], *counts, quantities, reasoning_tokens=body["reasoning_tokens"],
                cache_write_1h_tokens=body["cache_write_1h_tokens"], service_tier=body["service_tier"],
                at_us=at_us)
    assert cost != rate(catalog, body["model"], *counts, quantities)  # the test can tell them apart
    return cost


def _same(row: dict[str, Any], body: dict[str, Any]) -> None:
    for key in (*NEW_FIELDS, "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens"):
        assert row[key] == body[key], (key, row, body)


def _csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {row["event_id"]: row for row in csv.DictReader(io.StringIO(text))}


def test_the_api_records_rates_and_shows_them(alice: TestClient, example_catalog: Catalog,
                                              clock: Clock) -> None:
    api = alice
    cost = _cost(example_catalog, EVENT, at(EVENT["timestamp"]))
    [result] = api.post("/api/usage", json={"events": [EVENT]}, headers=OPERATOR).json()["results"]
    assert (result["status"], result["cost_credits"]) == ("charged", format_credits(cost))
    # The same body (the standard tier's names aside, none here) is a duplicate; a changed new field
    # is another body under the same id: a conflict.
    again = api.post("/api/usage", json={"events": [EVENT, {**EVENT, "service_tier": "flex"},
                                                    {**EVENT, "reasoning_tokens": 901}]},
                     headers=OPERATOR).json()["results"]
    assert [r["status"] for r in again] == ["duplicate", "rejected", "rejected"]
    assert {r["error"]["type"] for r in again[1:]} == {"conflict"}
    [bad] = api.post("/api/usage", json={"events": [{**EVENT, "id": "r2", "service_tier": "premium"}]},
                     headers=OPERATOR).json()["results"]
    assert (bad["status"], bad["error"]["field"]) == ("rejected", "service_tier")

    # A hold settled with them, priced at the settle's time.
    hold = api.post("/api/accounts/alice/holds", json={"amount_credits": "5"}, headers=OPERATOR).json()
    settle = {"model": MODEL, "input_tokens": 50, "output_tokens": 5, "reasoning_tokens": 400,
              "cache_write_1h_tokens": 80, "service_tier": "flex"}
    settled = api.post(f"/api/holds/{hold['hold_id']}/settle", json=settle, headers=OPERATOR).json()
    assert settled["cost_credits"] == format_credits(_cost(example_catalog, settle, clock()))
    refused = api.post(f"/api/holds/{hold['hold_id']}/settle", json={**settle, "service_tier": "gold"},
                       headers=OPERATOR)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "service_tier"

    page = api.get("/api/accounts/alice/usage", headers=OPERATOR).json()
    listed = {e["event_id"]: e for e in page["events"]}
    _same(listed["r1"], EVENT)
    _same(listed[settled["event_id"]], {"input_tokens": 50, "output_tokens": 5, "cached_input_tokens": 0,
                                        "cache_write_tokens": 0, **settle})
    rows = _csv_rows(api.get("/api/accounts/alice/usage.csv", headers=OPERATOR).text)
    assert {k: rows["r1"][k] for k in NEW_FIELDS} == {"reasoning_tokens": "900",
                                                       "cache_write_1h_tokens": "1500",
                                                       "service_tier": "priority"}
    assert rows[settled["event_id"]]["service_tier"] == "flex"
    summary = api.get("/api/accounts/alice/usage/summary?group_by=model", headers=OPERATOR).json()
    [group] = summary["groups"]
    assert (group["reasoning_tokens"], group["cache_write_1h_tokens"]) == (900 + 400, 1500 + 80)

    # The console's history: the reasoning tokens in their column, the tier beside the model.
    key = api.post("/api/accounts/alice/keys", json={}, headers=OPERATOR).json()["key"]
    assert api.post("/console/sign-in", data={"key": key}).status_code == 200
    page = api.get("/console/accounts/alice/usage").text
    row = re.search(r'<tr data-event="r1">(.*?)</tr>', page, re.S)
    assert row, page
    assert re.search(r'class="num reasoning">900<', row.group(1)) and "priority tier" in row.group(1)


def _cli(engine: Engine, *args: str, at_now: bool = True) -> Result:
    """A command on the engine's database (at NOW, for the commands where time matters)."""
    return CliRunner().invoke(main, [*args, "--db", engine.store.url, *(("--at", NOW) if at_now else ())],
                              env={"COLUMNS": "200"})


def test_the_cli_records_rates_and_shows_them(engine: Engine, example_catalog: Catalog) -> None:
    assert _cli(engine, "accounts", "create", "bob").exit_code == 0
    assert _cli(engine, "grants", "add", "bob", "100", "--kind", "addon").exit_code == 0
    flags = ("--model", MODEL, "--input", "10", "--output", "20", "--reasoning", "3000",
             "--cache-write", "40", "--cache-write-1h", "500")
    recorded = _cli(engine, "usage", "record", "bob", *flags, "--service-tier", "priority", "--id", "c1",
                    "--json")
    assert recorded.exit_code == 0, recorded.output
    body = {"model": MODEL, "input_tokens": 10, "output_tokens": 20, "cached_input_tokens": 0,
            "cache_write_tokens": 40, "reasoning_tokens": 3000, "cache_write_1h_tokens": 500,
            "service_tier": "priority"}
    cost = _cost(example_catalog, body, at(NOW))
    assert json.loads(recorded.stdout)["cost_credits"] == format_credits(cost)
    wrong = _cli(engine, "usage", "record", "bob", *flags, "--service-tier", "gold", "--id", "c2")
    assert wrong.exit_code == 2 and "service_tier" in wrong.output

    hold = json.loads(_cli(engine, "holds", "reserve", "bob", "5", "--id", "h1", "--json").stdout)
    settled = _cli(engine, "holds", "settle", hold["hold_id"], *flags, "--service-tier", "default", "--json")
    assert settled.exit_code == 0, settled.output
    standard = {**body, "service_tier": None}
    assert json.loads(settled.stdout)["cost_credits"] == format_credits(
        _cost(example_catalog, standard, at(NOW)))

    listing = json.loads(_cli(engine, "usage", "list", "bob", "--json", at_now=False).stdout)
    listed = {e["event_id"]: e for e in listing}
    _same(listed["c1"], body)
    _same(listed["hold:h1"], {**body, "service_tier": "standard"})
    table = _cli(engine, "usage", "list", "bob", at_now=False).stdout
    assert f"{MODEL} (priority)" in table and "3,000" in table
    rows = _csv_rows(_cli(engine, "usage", "export", "bob", "--csv", "-", at_now=False).stdout)
    assert [rows[e][k] for e in ("c1", "hold:h1") for k in NEW_FIELDS] == [
        "3000", "500", "priority", "3000", "500", "standard"]
