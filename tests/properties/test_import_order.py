"""An import regroups each window of lines by account (see ``creditmeter.ingest``): whatever the
lines, batch size and window, every line gets the result it gets when the lines are recorded one
by one in the file's order, and the accounts end with the same packages, overage and events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditmeter.domain import Rejected
from creditmeter.engine import Engine
from creditmeter.ingest import ImportSummary, by_account, import_jsonl
from creditmeter.plans import parse_plans
from creditmeter.timeutil import US_PER_S
from tests.conftest import EngineFactory, at

NOW = at("2026-03-10T12:00:00Z")
ACCOUNTS = ["a", "b", "c"]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"]


PACK = {"plans": [{"id": "pack", "kind": "addon", "name": "Pack", "credits": 2, "valid_days": 30}]}


def _setup(engine: Engine, catalog: Any) -> Engine:
    """Three accounts with a trial and a package; the last also tops up 2 credits at once when
    its credits go below 3 (at most 3 times a month)."""
    engine.load_prices(catalog, at("2026-01-01"), at("2026-01-01"))
    engine.load_plans(parse_plans(PACK), at("2026-03-01"))
    for i, account in enumerate(ACCOUNTS):
        engine.create_account(account, at("2026-03-01"))
        engine.add_grant(account, (2 + i) * US_PER_S, "trial", at("2026-03-01"), grant_id=f"{account}-t",
                         expires_at_us=at("2026-03-09T18:00:00Z"))
        engine.add_grant(account, 3 * US_PER_S, "package", at("2026-03-01"), grant_id=f"{account}-p")
    engine.set_auto_topup(ACCOUNTS[-1], {"below": 3, "pack": "pack", "max_per_month": 3, "grant_now": True},
                          at("2026-03-01"))
    return engine


@st.composite
def lines(draw: st.DrawFn) -> list[Any]:
    """Events of a few accounts, some ids used again (by the same account or another), an
    account that does not exist, lines that are not events."""
    out: list[Any] = []
    for _ in range(draw(st.integers(1, 24))):
        kind = draw(st.sampled_from(["event"] * 6 + ["again", "unknown", "junk"]))
        if kind == "junk":
            out.append(draw(st.sampled_from([[1, 2], "text", {"id": "j", "account_id": 5}])))
            continue
        used = [e["id"] for e in out if isinstance(e, dict) and isinstance(e.get("id"), str)]
        event_id = draw(st.sampled_from(used)) if kind == "again" and used else f"e{len(out)}"
        account = "ghost" if kind == "unknown" else draw(st.sampled_from(ACCOUNTS))
        out.append({"id": event_id, "account_id": account, "model": draw(st.sampled_from(MODELS)),
                    "timestamp": f"2026-03-09T{draw(st.integers(10, 23)):02d}:00:00Z",
                    "input_tokens": draw(st.integers(0, 300_000)),
                    "output_tokens": draw(st.integers(1, 40_000))})
    return out


def _state(engine: Engine) -> dict[str, Any]:
    return {a: (engine.balance(a, NOW),
                sorted((s.event.id, s.charge.cost_uc, s.charge.overage_uc, s.charge.allocations)
                       for s in engine.usage(a)))
            for a in ACCOUNTS}


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=lines(), batch_size=st.integers(1, 4))
def test_an_import_gives_each_line_what_the_file_order_gives(
        make_engine: EngineFactory, example_catalog: Any, tmp_path: Path,
        events: list[Any], batch_size: int) -> None:
    try:
        path = tmp_path / "events.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        imported = _setup(make_engine(), example_catalog)
        summary = import_jsonl(imported, path, NOW, batch_size=batch_size)
        one_by_one = _setup(make_engine(), example_catalog)
        expected = ImportSummary()
        for line, event in enumerate(events, start=1):
            result = one_by_one.record_batch([event], NOW)[0]
            if isinstance(result, Rejected):
                expected.rejected.append((line, result.event_id, result.field, result.reason))
            else:
                expected.charged += result.status == "charged"
                expected.duplicate += result.status == "duplicate"
                expected.cost_uc += result.cost_uc if result.status == "charged" else 0
        assert (summary.charged, summary.duplicate, summary.cost_uc, summary.rejected) == (
            expected.charged, expected.duplicate, expected.cost_uc, expected.rejected)
        assert _state(imported) == _state(one_by_one)
        assert imported.check_invariants() == []
    finally:
        make_engine.close()


def test_each_account_goes_together_in_the_order_of_the_file() -> None:
    window = [(1, {"id": "1", "account_id": "a"}), (2, {"id": "2", "account_id": "b"}), (3, "junk"),
              (4, {"id": "4", "account_id": "a"}), (5, {"id": "5", "account_id": "b"})]
    assert [[n for n, _ in batch] for batch in by_account(window, 3)] == [[1, 4, 2], [5, 3]]


def test_an_id_given_to_two_accounts_keeps_the_order_of_the_file() -> None:
    window = [(1, {"id": "1", "account_id": "a"}), (2, {"id": "x", "account_id": "b"}),
              (3, {"id": "x", "account_id": "a"})]
    assert [[n for n, _ in batch] for batch in by_account(window, 2)] == [[1, 2], [3]]
