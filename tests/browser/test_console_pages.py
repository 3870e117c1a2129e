"""The console in a real browser against a real server: every figure it shows is the API's.

Each test signs in through the form like a person would, reads what the page shows (the exact
credits are in each figure's ``value``; the rounded text must be those rounded for people), and
compares it with what the API answers the same key. Screenshots of each page, at a laptop's and a
phone's width, are saved under the run's temporary directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.conftest import LAPTOP, PHONE, World

SOON = timedelta(days=7)

# What the page shows, read in one go (the exact amount is each <data>'s value).
PACKAGES_JS = """rows => rows.map(r => {
  const cell = c => r.querySelector('.' + c);
  const amount = c => ({exact: cell(c).querySelector('data').value, text: cell(c).textContent.trim()});
  const expires = cell('expires').querySelector('time');
  return {grant_id: r.dataset.grant, soon: r.classList.contains('soon'),
          kind: cell('kind').textContent.trim(),
          granted: amount('granted'), used: amount('used'), held: amount('held'),
          remaining: amount('remaining'), expires_at: expires ? expires.getAttribute('datetime') : null,
          status: cell('status').textContent.trim(), name: cell('pname').textContent.trim()};
})"""
EVENTS_JS = """rows => rows.map(r => {
  const cell = c => r.querySelector('.' + c);
  return {event_id: r.dataset.event, timestamp: cell('time').querySelector('time').getAttribute('datetime'),
          model: cell('model').firstChild.textContent.trim(),
          input_tokens: cell('in').textContent.trim(), output_tokens: cell('out').textContent.trim(),
          cached_input_tokens: cell('cached').textContent.trim(),
          cost: cell('cost').querySelector('data').value,
          payers: [...cell('payers').querySelectorAll('li')].map(
            li => ({grant_id: li.dataset.grant, amount_credits: li.querySelector('data').value}))};
})"""


def people_credits(exact: str) -> str:
    """The console's rounding, worked out independently: 2 places, half up, thousands separated;
    a nonzero amount under 0.01 exactly."""
    value = Decimal(exact)
    if value and abs(value) < Decimal("0.01"):
        return exact
    return format(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), ",.2f")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def today(world: World) -> datetime:
    moment = datetime.fromtimestamp(world.now_us / 1e6, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def shoot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 1_000, path
    return path


@pytest.fixture
def context(browser: Any, world: World) -> Iterator[Any]:
    context = browser.new_context(base_url=world.url, viewport=LAPTOP, accept_downloads=True)
    yield context
    context.close()


def signed_in(browser: Any, world: World, who: str, viewport: dict[str, int] = LAPTOP) -> Any:
    """A new browser context with ``who`` signed in through the form; returns its page."""
    context = browser.new_context(base_url=world.url, viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.goto("/console/sign-in")
    page.fill("#key", world.keys[who])
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/console(/accounts/[^/]+)?$"))
    return page


def check_overview(page: Any, world: World, who: str, account: str) -> list[dict[str, Any]]:
    """Open ``account``'s overview and compare all of it with the API's balance."""
    response = page.goto(f"/console/accounts/{account}")
    assert response.status == 200
    api = world.get(who, f"/api/accounts/{account}/balance")
    shown: list[dict[str, Any]] = page.eval_on_selector_all("table.packages tbody tr", PACKAGES_JS)
    assert [row["grant_id"] for row in shown] == [p["grant_id"] for p in api["packages"]]  # burn-down order
    now = datetime.fromtimestamp(world.now_us / 1e6, UTC)
    for row, package in zip(shown, api["packages"], strict=True):
        for name in ("granted", "used", "held", "remaining"):
            exact = package[f"{name}_credits"]
            assert row[name] == {"exact": exact, "text": people_credits(exact)}, (package["grant_id"], name)
        assert (row["kind"], row["status"], row["expires_at"], row["name"]) == (
            package["kind"], package["status"], package["expires_at"], package["name"])
        expiring = (package["expires_at"] is not None and package["status"] == "active"
                    and Decimal(package["remaining_credits"]) > 0
                    and instant(package["expires_at"]) - now <= SOON)
        assert row["soon"] == expiring, package["grant_id"]
    for element, field in (("available", "available_credits"), ("held", "held_credits"),
                           ("overage", "overage_credits"), ("period-used", "period_used_credits")):
        figure = page.locator(f"#{element} data")
        assert figure.get_attribute("value") == api[field], field
        assert figure.inner_text() == people_credits(api[field]), field
    subscription = api["subscription"]
    if subscription is None:
        assert page.inner_text("#subscription") == "No subscription."
    else:
        assert page.inner_text("#plan") == subscription["plan_name"]
        assert page.inner_text("#sub-status") == subscription["status"]
        if subscription["renews_at"]:
            assert page.get_attribute("#renews time", "datetime") == subscription["renews_at"]
    return shown


def usage_rows(page: Any) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all("table.usage tbody tr", EVENTS_JS))


def api_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's events as the page shows them (tokens with thousands separators)."""
    return [{"event_id": e["event_id"], "timestamp": e["timestamp"], "model": e["model"] or "—",
             "input_tokens": f"{e['input_tokens']:,}", "output_tokens": f"{e['output_tokens']:,}",
             "cached_input_tokens": f"{e['cached_input_tokens']:,}", "cost": e["cost_credits"],
             "payers": e["allocations"]} for e in events]


def api_usage(world: World, who: str, account: str, **params: Any) -> list[dict[str, Any]]:
    """Every event the API lists for these filters, following its cursors."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = world.get(who, f"/api/accounts/{account}/usage", cursor=cursor, **params)
        events += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            return events


def api_range(first: datetime, last: datetime) -> dict[str, str]:
    """The API's from/to for the console's dates (``to`` is the day after the last one)."""
    return {"from": first.strftime("%Y-%m-%dT00:00:00Z"),
            "to": (last + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")}


def check_chart(page: Any, world: World, who: str, account: str, first: datetime, last: datetime,
                **params: Any) -> None:
    """Each day's bar and each model's share equal the API's summaries for those days."""
    days = page.eval_on_selector_all(
        "svg.chart g.day", "gs => gs.map(g => [g.dataset.day, g.dataset.credits, "
                           "[...g.querySelectorAll('rect')].map(r => [r.dataset.model, r.dataset.uc])])")
    expected_days = [(first + timedelta(days=i)).strftime("%Y-%m-%d") for i in range((last - first).days + 1)]
    assert [d[0] for d in days] == expected_days
    span = api_range(first, last)
    by_day = {g["day"]: g["used_credits"]
              for g in world.get(who, f"/api/accounts/{account}/usage/summary", group_by="day",
                                 **span, **params)["groups"]}
    assert {d[0]: d[1] for d in days} == {day: by_day.get(day, "0") for day in expected_days}
    by_model = {g["model"] or "no model (features)": Decimal(g["used_credits"])
                for g in world.get(who, f"/api/accounts/{account}/usage/summary", group_by="model",
                                   **span, **params)["groups"] if Decimal(g["used_credits"])}
    drawn: dict[str, Decimal] = {}
    for _, _, rects in days:
        for model, uc in rects:
            drawn[model] = drawn.get(model, Decimal(0)) + Decimal(int(uc)) / 1_000_000
    assert drawn == by_model


# -- sign-in ------------------------------------------------------------------------------------


def test_a_visitor_is_sent_to_sign_in_and_a_bad_key_is_shown_at_the_field(
        context: Any, world: World, screenshots: Path) -> None:
    page = context.new_page()
    page.goto("/console/accounts/alice/usage?model=gpt-4o")
    assert urlparse(page.url).path == "/console/sign-in"
    assert parse_qs(urlparse(page.url).query)["next"] == ["/console/accounts/alice/usage?model=gpt-4o"]
    assert page.get_attribute("label[for=key]", "for") == "key"
    shoot(page, screenshots, "sign-in")

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.fill("#key", "cm_not-a-key-of-anyone")
        page.click("main form button[type=submit]")
    assert posted.value.status == 401
    assert page.inner_text("#key-err") == "This key is unknown or has been revoked."
    assert page.get_attribute("#key", "aria-invalid") == "true"
    assert page.get_attribute("#key", "aria-describedby") == "key-err"
    assert not [c for c in context.cookies() if c["name"] == "creditmeter_console"]
    shoot(page, screenshots, "sign-in-error")

    page.fill("#key", world.keys["alice"])
    page.click("main form button[type=submit]")
    page.wait_for_url("**/console/accounts/alice/usage?model=gpt-4o")  # back where the visitor was going
    cookie = next(c for c in context.cookies() if c["name"] == "creditmeter_console")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Lax", "/console")

    page.click("text=Sign out")
    page.wait_for_url("**/console/sign-in")
    assert not [c for c in context.cookies() if c["name"] == "creditmeter_console"]
    page.goto("/console/accounts/alice")
    assert urlparse(page.url).path == "/console/sign-in"


# -- overview -----------------------------------------------------------------------------------


def test_the_overview_shows_the_apis_figures(browser: Any, world: World, screenshots: Path) -> None:
    page = signed_in(browser, world, "alice")
    assert urlparse(page.url).path == "/console/accounts/alice"
    shown = check_overview(page, world, "alice", "alice")
    assert {row["kind"] for row in shown} == {"trial", "package", "subscription", "addon", "promo"}
    assert [row["soon"] for row in shown] == [True, False, False, False, False]  # the trial, this week
    assert page.inner_text("tr.soon .badge").startswith("Expires in ")
    shoot(page, screenshots, "overview-laptop")
    page.context.close()

    phone = signed_in(browser, world, "bob", PHONE)
    check_overview(phone, world, "bob", "bob")  # an account in overage
    assert phone.locator("#overage data").get_attribute("value") == "8"
    phone.close()
    phone = signed_in(browser, world, "alice", PHONE)
    check_overview(phone, world, "alice", "alice")
    shoot(phone, screenshots, "overview-phone")
    phone.context.close()


# -- usage --------------------------------------------------------------------------------------


def test_usage_pages_through_the_apis_events(browser: Any, world: World, screenshots: Path) -> None:
    page = signed_in(browser, world, "alice")
    page.goto("/console/accounts/alice/usage?range=all&limit=10")
    shoot(page, screenshots, "usage-laptop")
    summary = world.get("alice", "/api/accounts/alice/usage/summary", group_by="model")
    assert page.locator("#selection-credits data").get_attribute("value") == summary["total_credits"]
    assert page.inner_text("#selection-requests") == str(sum(g["requests"] for g in summary["groups"]))
    end = today(world)
    check_chart(page, world, "alice", "alice", end - timedelta(days=29), end)

    shown, pages = usage_rows(page), 1
    while page.locator("#next-page").count():
        page.click("#next-page")
        shown += usage_rows(page)
        pages += 1
    events = api_usage(world, "alice", "alice", limit=10)
    assert pages == 5 and len(events) == 47
    assert shown == api_rows(events)
    assert any(row["model"] == "—" for row in shown) and any(len(row["payers"]) > 1 for row in shown)
    page.context.close()

    phone = signed_in(browser, world, "alice", PHONE)
    phone.goto("/console/accounts/alice/usage?range=all")
    assert usage_rows(phone) == api_rows(world.get("alice", "/api/accounts/alice/usage", limit=50)["events"])
    shoot(phone, screenshots, "usage-phone")
    phone.context.close()


def test_usage_filters_by_model_and_dates(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "alice")
    page.goto("/console/accounts/alice/usage")
    first, last = today(world) - timedelta(days=15), today(world) - timedelta(days=3)
    page.select_option("#f-model", "gpt-4o")
    page.fill("#f-from", first.strftime("%Y-%m-%d"))
    page.fill("#f-to", last.strftime("%Y-%m-%d"))
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/usage?*")
    assert parse_qs(urlparse(page.url).query) == {"from": [first.strftime("%Y-%m-%d")],
                                                  "to": [last.strftime("%Y-%m-%d")], "model": ["gpt-4o"]}
    expected = api_usage(world, "alice", "alice", model="gpt-4o", **api_range(first, last))
    assert usage_rows(page) == api_rows(expected)
    assert expected and all(e["model"] == "gpt-4o" for e in expected)
    assert len(expected) < len(api_usage(world, "alice", "alice"))
    check_chart(page, world, "alice", "alice", first, last, model="gpt-4o")
    assert page.locator("ul.legend li").count() == 1

    page.goto("/console/accounts/alice/usage?to=2020-01-01&from=2020-02-01")  # the wrong way round
    assert page.inner_text("#f-to-err") == "must be on or after the from date"
    page.context.close()


def test_the_csv_download_is_the_apis_csv(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "alice")
    first, last = today(world) - timedelta(days=20), today(world)
    for query, params in (("?range=all", {}),
                          (f"?from={first:%Y-%m-%d}&to={last:%Y-%m-%d}&model=claude-sonnet-4",
                           {"model": "claude-sonnet-4", **api_range(first, last)})):
        page.goto(f"/console/accounts/alice/usage{query}")
        with page.expect_download() as download:
            page.click("#csv")
        assert download.value.suggested_filename == "usage-alice.csv"
        body = Path(download.value.path()).read_bytes()
        assert body == world.get("alice", "/api/accounts/alice/usage.csv", **params)
        assert body.count(b"\n") > 2
    page.context.close()


# -- enterprise ---------------------------------------------------------------------------------


def enterprise_figures(page: Any) -> dict[str, dict[str, str]]:
    return dict(page.eval_on_selector_all(
        "table.members tbody tr",
        "rows => rows.map(r => [r.dataset.member, Object.fromEntries(['quota', 'used', 'held', 'remaining']"
        ".map(c => [c, r.querySelector('.' + c + ' data').value]))])"))


def test_an_admin_adds_quota_a_member_sees_it_and_the_admin_revokes_it(
        browser: Any, world: World, screenshots: Path) -> None:
    admin = signed_in(browser, world, "carol")
    admin.click("text=Enterprise: acme")
    admin.wait_for_url("**/console/enterprises/acme")
    api = world.get("carol", "/api/enterprises/acme")
    assert enterprise_figures(admin) == {
        m["account_id"]: {"quota": m["quota_credits"], "used": m["used_credits"], "held": m["held_credits"],
                          "remaining": m["remaining_credits"]} for m in api["members"]}
    pool = admin.eval_on_selector_all("table.packages tbody tr", PACKAGES_JS)
    assert [(p["grant_id"], p["remaining"]["exact"]) for p in pool] == [
        (p["grant_id"], p["remaining_credits"]) for p in api["pool"]["packages"]]
    shoot(admin, screenshots, "enterprise-laptop")
    dave_before = world.get("dave", "/api/accounts/dave/balance")["packages"]
    until = today(world) + timedelta(days=30)

    # Bad input: each error is shown next to its field, and nothing is written.
    for amount, valid_through, field, message in (
            ("12.3456789", f"{until:%Y-%m-%d}", "amount", "12.3456789 has more than 6 decimal places"),
            ("999999", f"{until:%Y-%m-%d}", "amount", "the pool of 'acme' has only"),
            ("10", "2020-01-01", "valid_through", "is in the past")):
        admin.select_option("#q-member", "dave")
        admin.fill("#q-amount", amount)
        admin.fill("#q-until", valid_through)
        with admin.expect_response(lambda r: r.url.endswith("/quota")) as posted:
            admin.click("form.quota-form button[type=submit]")
        assert posted.value.status == 400
        input_id = {"amount": "q-amount", "valid_through": "q-until"}[field]
        assert admin.inner_text(f"#{input_id}-err").startswith(message)
        assert admin.get_attribute(f"#{input_id}", "aria-invalid") == "true"
        assert admin.input_value("#q-amount") == amount  # what was typed stays
        if field == "amount" and "decimal" in message:
            shoot(admin, screenshots, "enterprise-form-error")
    assert world.get("carol", "/api/enterprises/acme")["allocations"] == api["allocations"]
    assert world.get("dave", "/api/accounts/dave/balance")["packages"] == dave_before

    admin.select_option("#q-member", "dave")
    admin.fill("#q-amount", "150.5")
    admin.fill("#q-until", f"{until:%Y-%m-%d}")
    admin.click("form.quota-form button[type=submit]")
    admin.wait_for_url("**/console/enterprises/acme?done=added")
    assert admin.inner_text("p.flash") == "Quota added."
    after = world.get("carol", "/api/enterprises/acme")
    (added,) = [a for a in after["allocations"] if a not in api["allocations"]]
    assert (added["account_id"], added["amount_credits"], added["revoked_at"]) == ("dave", "150.5", None)
    quota_before = next(m["quota_credits"] for m in api["members"] if m["account_id"] == "dave")
    assert enterprise_figures(admin)["dave"]["quota"] == str(Decimal(quota_before) + Decimal("150.5"))

    member = signed_in(browser, world, "dave", PHONE)
    shown = check_overview(member, world, "dave", "dave")
    (quota,) = [row for row in shown if row["grant_id"] == added["allocation_id"]]
    assert (quota["kind"], quota["granted"]["exact"]) == ("enterprise", "150.5")
    assert quota["name"] == "Acme Corp quota"
    assert quota["expires_at"] == (until + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    admin.click(f"tr[data-allocation='{added['allocation_id']}'] button")
    admin.wait_for_url("**/console/enterprises/acme?done=revoked")
    revoked = next(a for a in world.get("carol", "/api/enterprises/acme")["allocations"]
                   if a["allocation_id"] == added["allocation_id"])
    assert revoked["revoked_at"] is not None and revoked["returned_credits"] == "150.5"
    assert not admin.locator(f"tr[data-allocation='{added['allocation_id']}'] button").count()
    shown = check_overview(member, world, "dave", "dave")
    (quota,) = [row for row in shown if row["grant_id"] == added["allocation_id"]]
    assert (quota["status"], quota["remaining"]["exact"]) == ("voided", "0")
    member.context.close()

    phone = signed_in(browser, world, "carol", PHONE)
    phone.goto("/console/enterprises/acme")
    shoot(phone, screenshots, "enterprise-phone")
    phone.context.close()
    admin.context.close()


def test_an_admin_sees_a_members_usage_and_its_csv(browser: Any, world: World) -> None:
    admin = signed_in(browser, world, "carol")
    admin.goto("/console/enterprises/acme")
    admin.click("tr[data-member='dave'] a")
    admin.wait_for_url("**/console/accounts/acme/usage?member=dave")
    admin.click("#all-time")  # the member's usage of any period, not only the current one
    admin.wait_for_url("**/console/accounts/acme/usage?member=dave&range=all")
    expected = api_usage(world, "carol", "acme", member="dave")
    assert len(expected) == 5 and usage_rows(admin) == api_rows(expected)
    assert admin.input_value("#f-member") == "dave"
    with admin.expect_download() as download:
        admin.click("#csv")
    assert Path(download.value.path()).read_bytes() == world.get("carol", "/api/accounts/acme/usage.csv",
                                                                 member="dave")
    admin.context.close()


# -- who sees what ------------------------------------------------------------------------------


def test_nobody_sees_another_accounts_or_enterprises_pages(browser: Any, world: World) -> None:
    for who, theirs, hidden in (
            ("alice", "/console/accounts/alice",
             ["/console/accounts/bob", "/console/accounts/bob/usage", "/console/enterprises/acme",
              "/console/accounts/acme"]),
            ("carol", "/console/enterprises/acme",
             ["/console/enterprises/globex", "/console/accounts/dave", "/console/accounts/globex/usage"])):
        page = signed_in(browser, world, who)
        assert page.goto(theirs).status == 200
        missing = page.goto("/console/accounts/no-such-account")
        assert missing.status == 404
        not_found = page.content()
        for path in hidden:
            response = page.goto(path)
            assert (response.status, page.content()) == (404, not_found), path
        assert page.goto("/console/enterprises/no-such-enterprise").status == 404
        assert page.content() == not_found
        page.context.close()


def test_the_operator_sees_every_account(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "operator")
    listed = page.eval_on_selector_all("main tbody th a", "links => links.map(a => a.textContent.trim())")
    assert listed == [a["id"] for a in world.get("operator", "/api/accounts")]
    page.click("main tbody th a >> text=bob")
    page.wait_for_url("**/console/accounts/bob")
    check_overview(page, world, "operator", "bob")
    assert page.goto("/console/enterprises/globex").status == 200
    page.context.close()
