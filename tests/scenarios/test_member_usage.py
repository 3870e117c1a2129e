"""An enterprise's view of a member's usage: only what the enterprise's quota paid.

mel has a personal pack of her own, used before she joined acme; acme then adds quota to her.
One event is paid by the quota alone, one partly by the quota and partly by her pack, one by her
pack alone after joining. acme's admin (through the API's page, summary and CSV, and through the
console) sees the first two only, each with only the quota's part of its credits, and never her
pack's id; mel and the operator still see all of her usage as it was charged.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fastapi.testclient import TestClient

from creditmeter.engine import Engine
from creditmeter.enterprise import allocation_grant_id
from tests.api import conftest as api_fixtures
from tests.api.conftest import OPERATOR, bearer
from tests.conftest import EXAMPLE_CATALOG, at

api = api_fixtures.api
clock = api_fixtures.clock

CREDIT = 1_000_000
NOW = at(api_fixtures.NOW)
HOUR_US = 3_600 * 1_000_000
DAY_US = 24 * HOUR_US
PACK = "mel-own-pack"  # mel's personal package: acme's admin must never see it
QUOTA = allocation_grant_id("acme", "q-mel")
PERIOD = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}


def _world(engine: Engine) -> dict[str, dict[str, str]]:
    """acme (admin ada, member mel) and mel's usage of every kind; each person's key headers.

    demo-small costs 50 credits per 1M input tokens (20,000 tokens = 1 credit); gpt-4o 250.
    """
    from creditmeter.pricing import load_yaml, parse_catalog

    start = NOW - 4 * DAY_US
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), start, start)
    engine.create_account("acme", start, name="Acme Corp", kind="enterprise")
    engine.add_grant("acme", 1_000 * CREDIT, "package", start, grant_id="acme-pool")
    for user in ("ada", "mel"):
        engine.create_account(user, start)
    engine.add_member("acme", "ada", start, role="admin")
    engine.add_grant("mel", 10 * CREDIT, "package", start, name="Mel's own pack", grant_id=PACK)

    def use(event_id: str, ts: int, model: str, tokens: int) -> None:
        engine.record({"id": event_id, "account_id": "mel", "model": model, "input_tokens": tokens,
                       "output_tokens": 0, "metadata": {"task": event_id}}, ts)

    use("e-before", NOW - 3 * DAY_US, "demo-small", 40_000)  # 2 credits, her pack, before joining
    engine.add_member("acme", "mel", NOW - 2 * DAY_US)
    engine.allocate("acme", "mel", 5 * CREDIT, NOW - 2 * DAY_US, expires_at_us=at("2026-12-31"),
                    allocation_id="q-mel")
    use("e-quota", NOW - 2 * DAY_US + HOUR_US, "gpt-4o", 8_000)  # 2 credits, all quota
    use("e-split", NOW - DAY_US, "demo-small", 80_000)  # 4 credits: 3 quota, then 1 her pack
    use("e-after", NOW - HOUR_US, "demo-small", 20_000)  # 1 credit, her pack alone
    keys = {"operator": OPERATOR}
    for user in ("ada", "mel"):
        keys[user] = bearer(engine.create_key(user, NOW, name="main")[1])
    assert not engine.check_invariants()
    return keys


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json() if "json" in response.headers["content-type"] else response.text


def _pages(api: TestClient, headers: dict[str, str], path: str, **params: Any) -> tuple[list[Any], str]:
    """Every event listed, following the cursors; and the responses' text, all of it."""
    events: list[Any] = []
    texts = []
    cursor = None
    while True:
        response = api.get(path, headers=headers,
                           params={**params, **({"cursor": cursor} if cursor else {})})
        page = _ok(response)
        texts.append(response.text)
        events += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            return events, "".join(texts)


def test_the_admin_sees_only_what_the_enterprise_paid(api: TestClient, engine: Engine) -> None:
    keys = _world(engine)
    path = "/api/accounts/acme/usage"
    for limit in (1, 2, 100):  # page by page or at once, the same events
        events, text = _pages(api, keys["ada"], path, member="mel", limit=limit, **PERIOD)
        assert [(e["event_id"], e["cost_credits"], e["overage_credits"], e["allocations"])
                for e in events] == [
            ("e-split", "3", "0", [{"grant_id": QUOTA, "amount_credits": "3"}]),
            ("e-quota", "2", "0", [{"grant_id": QUOTA, "amount_credits": "2"}])], limit
        assert PACK not in text and "e-before" not in text and "e-after" not in text
    # The event's body is shown: the enterprise paid for part of it.
    split = events[0]
    assert (split["model"], split["input_tokens"], split["metadata"]) == ("demo-small", 80_000,
                                                                         {"task": "e-split"})

    summaries = []
    for group_by in ("day", "model"):
        response = api.get(f"{path}/summary", headers=keys["ada"],
                           params={"member": "mel", "group_by": group_by, **PERIOD})
        summary = _ok(response)
        assert PACK not in response.text
        summaries.append(summary)
        assert summary["total_credits"] == "5"
        assert sum(g["requests"] for g in summary["groups"]) == 2
        assert sum(g["input_tokens"] for g in summary["groups"]) == 88_000
    by_day, by_model = summaries
    assert [(g["day"], g["requests"], g["used_credits"]) for g in by_day["groups"]] == [
        ("2026-11-08", 1, "2"), ("2026-11-09", 1, "3")]
    assert [(g["model"], g["requests"], g["used_credits"]) for g in by_model["groups"]] == [
        ("demo-small", 1, "3"), ("gpt-4o", 1, "2")]

    exported = _ok(api.get("/api/accounts/acme/usage.csv", headers=keys["ada"],
                           params={"member": "mel"}))
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert PACK not in exported
    assert [(r["event_id"], r["cost_credits"], r["overage_credits"], r["paid_by"]) for r in rows] == [
        ("e-split", "3", "0", f"{QUOTA}=3"), ("e-quota", "2", "0", f"{QUOTA}=2")]


def test_the_member_and_the_operator_still_see_all_of_it(api: TestClient, engine: Engine) -> None:
    keys = _world(engine)
    everything = [("e-after", "1", [(PACK, "1")]), ("e-split", "4", [(QUOTA, "3"), (PACK, "1")]),
                  ("e-quota", "2", [(QUOTA, "2")]), ("e-before", "2", [(PACK, "2")])]
    for who in ("mel", "operator"):
        events, _ = _pages(api, keys[who], "/api/accounts/mel/usage", limit=1)
        assert [(e["event_id"], e["cost_credits"],
                 [(p["grant_id"], p["amount_credits"]) for p in e["allocations"]])
                for e in events] == everything, who
        summary = _ok(api.get("/api/accounts/mel/usage/summary", headers=keys[who]))
        assert summary["total_credits"] == "9"
        exported = _ok(api.get("/api/accounts/mel/usage.csv", headers=keys[who]))
        assert [r["event_id"] for r in csv.DictReader(io.StringIO(exported))] == [
            "e-after", "e-split", "e-quota", "e-before"]
    # The operator's view of acme by member follows the same rule as the admin's.
    events, _ = _pages(api, OPERATOR, "/api/accounts/acme/usage", member="mel")
    assert [(e["event_id"], e["cost_credits"]) for e in events] == [("e-split", "3"), ("e-quota", "2")]


def test_a_member_without_quota_from_the_enterprise_shows_nothing(api: TestClient, engine: Engine) -> None:
    keys = _world(engine)
    engine.create_account("max", NOW)
    engine.add_member("acme", "max", NOW)
    engine.add_grant("max", CREDIT, "package", NOW, grant_id="max-pack")
    engine.record({"id": "e-max", "account_id": "max", "model": "demo-small", "input_tokens": 20_000}, NOW)
    page = _ok(api.get("/api/accounts/acme/usage", headers=keys["ada"], params={"member": "max"}))
    assert page == {"events": [], "next_cursor": None}
    summary = _ok(api.get("/api/accounts/acme/usage/summary", headers=keys["ada"], params={"member": "max"}))
    assert (summary["groups"], summary["total_credits"]) == ([], "0")
    exported = _ok(api.get("/api/accounts/acme/usage.csv", headers=keys["ada"], params={"member": "max"}))
    assert len(exported.strip().splitlines()) == 1  # the header alone


def test_the_console_shows_the_admin_only_what_the_enterprise_paid(api: TestClient, engine: Engine) -> None:
    _world(engine)
    ada = engine.create_key("ada", NOW, name="console")[1]
    signed = api.post("/console/sign-in", data={"key": ada}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    query = "?member=mel&from=2026-11-01&to=2026-11-30"
    page = api.get(f"/console/accounts/acme/usage{query}")
    assert page.status_code == 200, page.text
    assert re.findall(r'<tr data-event="([^"]+)"', page.text) == ["e-split", "e-quota"]
    assert PACK not in page.text and "Mel&#39;s own pack" not in page.text
    assert re.search(r'id="selection-credits"><data class="cr" value="5"', page.text)
    assert re.search(r'id="selection-requests">2<', page.text)
    exported = api.get(f"/console/accounts/acme/usage.csv{query}")
    assert exported.status_code == 200 and PACK not in exported.text
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(exported.text))] == ["e-split", "e-quota"]
    # mel, signed in, sees all of her own usage and her pack.
    mel = engine.create_key("mel", NOW, name="console")[1]
    assert api.post("/console/sign-in", data={"key": mel}, follow_redirects=False).status_code == 303
    own = api.get("/console/accounts/mel/usage?from=2026-11-01&to=2026-11-30")
    assert re.findall(r'<tr data-event="([^"]+)"', own.text) == ["e-after", "e-split", "e-quota", "e-before"]
    assert f'data-grant="{PACK}"' in own.text


def test_each_enterprise_sees_only_its_own_quotas_part(api: TestClient, engine: Engine) -> None:
    keys = _world(engine)
    engine.create_account("globex", NOW - DAY_US, name="Globex", kind="enterprise")
    engine.add_grant("globex", 100 * CREDIT, "package", NOW - DAY_US, grant_id="globex-pool")
    engine.create_account("gus", NOW - DAY_US)
    engine.add_member("globex", "gus", NOW - DAY_US, role="admin")
    engine.add_member("globex", "mel", NOW - DAY_US)
    # acme's second quota ends first, so it pays first; globex's pays the rest.
    engine.allocate("acme", "mel", 2 * CREDIT, NOW - DAY_US, expires_at_us=at("2026-12-01"),
                    allocation_id="q-mel-2")
    engine.allocate("globex", "mel", 5 * CREDIT, NOW - DAY_US, expires_at_us=at("2026-12-31"),
                    allocation_id="q-mel")
    engine.record({"id": "e-both", "account_id": "mel", "model": "demo-small", "input_tokens": 80_000},
                  NOW - 30 * 60 * 1_000_000)
    acme_2, globex = allocation_grant_id("acme", "q-mel-2"), allocation_grant_id("globex", "q-mel")
    charged = _ok(api.get("/api/accounts/mel/usage", headers=keys["mel"], params={"limit": 1}))["events"][0]
    assert [(p["grant_id"], p["amount_credits"]) for p in charged["allocations"]] == [
        (acme_2, "2"), (globex, "2")]
    gus = bearer(engine.create_key("gus", NOW, name="main")[1])
    for admin, enterprise, mine, theirs in ((keys["ada"], "acme", acme_2, globex),
                                            (gus, "globex", globex, acme_2)):
        response = api.get(f"/api/accounts/{enterprise}/usage", headers=admin,
                           params={"member": "mel", "limit": 1})
        event = _ok(response)["events"][0]
        assert (event["event_id"], event["cost_credits"], event["allocations"]) == (
            "e-both", "2", [{"grant_id": mine, "amount_credits": "2"}]), enterprise
        assert theirs not in response.text and PACK not in response.text
    summary = _ok(api.get("/api/accounts/globex/usage/summary", headers=gus, params={"member": "mel"}))
    assert (summary["total_credits"], [g["requests"] for g in summary["groups"]]) == ("2", [1])


def test_a_member_with_more_allocations_than_a_query_can_list_is_still_shown(engine: Engine) -> None:
    """Quota topped up daily for years: 1,001 allocations to one member; the admin's view of the
    member still lists what the quota paid (the parts are matched in the database, whatever the
    number of allocations)."""
    _world(engine)
    for n in range(1_001):
        engine.allocate("acme", "mel", 1_000, NOW - HOUR_US, expires_at_us=at("2026-12-15"),
                        allocation_id=f"top-up-{n}")
    engine.record({"id": "e-late", "account_id": "mel", "model": "demo-small",
                   "input_tokens": 20_000}, NOW - HOUR_US + 1)
    page, _ = engine.usage_page("acme", member="mel", limit=10)
    assert [s.event.id for s in page] == ["e-late", "e-split", "e-quota"]
    assert sum(p.amount_uc for p in page[0].charge.allocations) == page[0].charge.cost_uc == CREDIT
    assert PACK not in {p.grant_id for s in page for p in s.charge.allocations}
    rows = engine.usage_summary("acme", "model", member="mel")
    assert sum(r.cost_uc for r in rows) == CREDIT + 2 * CREDIT + 3 * CREDIT
