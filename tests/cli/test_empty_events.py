"""An event that records no usage (no token, no unit, no per-request price) is refused by the
engine, so alike by ``usage record``, ``usage import`` and the API; a settle is not an event
someone sends, and a request that used nothing still settles its hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import Cli, cli, db_url, js, priced  # noqa: F401 - fixtures
from tests.cli.test_edges import AT, refused, state, team  # noqa: F401 - fixtures


def test_an_event_that_records_no_usage_is_refused(team: Cli, tmp_path: Path) -> None:  # noqa: F811
    before = state(team)
    for extra in ([], ["--quantity", "web_search=0"], ["--input", "0", "--output", "0"]):
        result = team("usage", "record", "alice", "--model", "gpt-4o", *extra, *AT, ok=False)
        refused(result, "event")
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                     "quantities"):
            assert name in result.output
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps({"id": "e-empty", "account_id": "alice", "model": "gpt-4o"}) + "\n")
    imported = team("usage", "import", str(lines), "--json", *AT, ok=False)
    assert imported.exit_code == 1
    assert [(r["event_id"], r["field"]) for r in js(imported)["rejections"]] == [("e-empty", "event")]
    assert state(team) == before


def test_a_settle_of_a_request_that_used_nothing_still_settles(team: Cli) -> None:  # noqa: F811
    """What the gateway does when the upstream answered with no tokens: the hold is settled."""
    hold = js(team("holds", "reserve", "alice", "5", "--json", *AT))["hold_id"]
    settled = js(team("holds", "settle", hold, "--model", "gpt-4o", "--json", *AT))
    assert (settled["status"], settled["cost_credits"]) == ("charged", "0")


def test_a_model_priced_per_request_is_charged_with_no_tokens(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    catalog = tmp_path / "prices.yaml"
    catalog.write_text("models:\n  image-gen: {input: 0, output: 0, request: 0.04}\n")
    cli("prices", "load", str(catalog), "--effective", "2026-01-01", "--at", "2026-01-01")
    cli("accounts", "create", "alice", *AT)
    charged = js(cli("usage", "record", "alice", "--model", "image-gen", "--json", *AT))
    assert (charged["status"], charged["cost_credits"]) == ("charged", "0.04")
