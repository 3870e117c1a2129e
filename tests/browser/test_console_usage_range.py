"""The usage page in a real browser against a real server: which range its figures cover.

Without dates the page (and its CSV) covers the current billing period, and the headline, the
chart and the history all say which range they cover, in ISO dates or times, UTC; with dates
they all follow the dates. The dates are typed and shown as ``YYYY-MM-DD`` whatever the browser's
locale, and on a phone the chart fits the screen.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.browser.conftest import World
from tests.browser.test_console_pages import api_rows, api_usage, instant, signed_in, today, usage_rows

SMALL_PHONE = {"width": 375, "height": 667}
RANGE_IDS = ("range", "selection-range", "chart-range", "history-range")


def label(start: datetime, end: datetime) -> str:
    """The range [start, end) as the page should write it: whole days as ISO dates (the last one
    included), else ISO date and time to the second."""
    if start == start.replace(hour=0, minute=0, second=0, microsecond=0) and \
            end == end.replace(hour=0, minute=0, second=0, microsecond=0):
        return f"{start:%Y-%m-%d} – {end - timedelta(days=1):%Y-%m-%d} (UTC)"

    def moment(at: datetime) -> str:
        return f"{at:%Y-%m-%d %H:%M}" + (f":{at:%S}" if at.second or at.microsecond else "")

    return f"{moment(start)} – {moment(end)} (UTC)"


def figures(page: Any) -> dict[str, Any]:
    """The headline's credits and requests, and the chart's total (the sum of its days)."""
    days = page.eval_on_selector_all("svg.chart g.day", "gs => gs.map(g => g.dataset.credits)")
    return {"credits": page.locator("#selection-credits data").get_attribute("value"),
            "requests": int(page.inner_text("#selection-requests").replace(",", "")),
            "chart": sum((Decimal(d) for d in days), Decimal(0))}


def api_figures(world: World, who: str, account: str, start: str, end: str) -> dict[str, Any]:
    summary = world.get(who, f"/api/accounts/{account}/usage/summary", group_by="model", **{"from": start},
                        to=end)
    return {"credits": summary["total_credits"], "requests": sum(g["requests"] for g in summary["groups"]),
            "chart": Decimal(summary["total_credits"])}


def ranges_shown(page: Any) -> set[str]:
    return {page.inner_text(f"#{name}").strip() for name in RANGE_IDS}


def test_the_usage_page_defaults_to_the_current_period_and_says_which_range_each_figure_covers(
        browser: Any, world: World) -> None:
    for who, basis in (("alice", "subscription"), ("bob", "calendar_month")):
        period = world.get(who, f"/api/accounts/{who}/balance")["period"]
        assert period["basis"] == basis
        start, end = period["start"], period["end"]
        page = signed_in(browser, world, who)
        page.goto(f"/console/accounts/{who}/usage")
        assert figures(page) == api_figures(world, who, who, start, end)
        assert ranges_shown(page) == {label(instant(start), instant(end))}
        whole_days = start.endswith("T00:00:00Z") and end.endswith("T00:00:00Z")
        assert page.locator("#range time").first.get_attribute("datetime") == (
            start[:10] if whole_days else start)
        words = {"subscription": "billing period of the subscription",
                 "calendar_month": "calendar month (UTC; no subscription)"}[basis]
        assert words in page.inner_text("#range-basis")
        assert usage_rows(page) == api_rows(api_usage(world, who, who, **{"from": start}, to=end))
        with page.expect_download() as download:
            page.click("#csv")
        assert Path(download.value.path()).read_bytes() == world.get(
            who, f"/api/accounts/{who}/usage.csv", **{"from": start}, to=end)
        if who == "alice":  # usage before the period exists, and is left out
            before = world.get(who, f"/api/accounts/{who}/usage/summary", group_by="model", to=start)
            assert Decimal(before["total_credits"]) > 0
            assert figures(page)["credits"] != world.get(
                who, f"/api/accounts/{who}/usage/summary", group_by="model")["total_credits"]
        page.context.close()


def test_explicit_dates_and_all_time_move_every_figure(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "alice")
    first, last = today(world) - timedelta(days=26), today(world) - timedelta(days=4)
    page.goto(f"/console/accounts/alice/usage?from={first:%Y-%m-%d}&to={last:%Y-%m-%d}")
    start, end = f"{first:%Y-%m-%dT%H:%M:%SZ}", f"{last + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
    assert figures(page) == api_figures(world, "alice", "alice", start, end)
    assert ranges_shown(page) == {f"{first:%Y-%m-%d} – {last:%Y-%m-%d} (UTC)"}
    assert not page.locator("#range-basis").count()

    page.click("#all-time")
    page.wait_for_url("**/usage?range=all")
    summary = world.get("alice", "/api/accounts/alice/usage/summary", group_by="model")
    assert page.locator("#selection-credits data").get_attribute("value") == summary["total_credits"]
    assert page.inner_text("#selection-range") == "all time"
    chart_first = today(world) - timedelta(days=29)
    assert page.inner_text("#chart-range") == label(chart_first, today(world) + timedelta(days=1))
    page.context.close()


def test_dates_are_iso_and_utc_whatever_the_browsers_locale(browser: Any, world: World) -> None:
    first, last = today(world) - timedelta(days=15), today(world) - timedelta(days=3)
    for locale, zone in (("de-DE", "Europe/Berlin"), ("en-US", "America/Los_Angeles")):
        context = browser.new_context(base_url=world.url, locale=locale, timezone_id=zone)
        page = context.new_page()
        page.goto("/console/sign-in")
        page.fill("#key", world.keys["alice"])
        page.click("main form button[type=submit]")
        page.wait_for_url("**/console/accounts/alice")
        page.goto("/console/accounts/alice/usage")
        for field in ("#f-from", "#f-to"):  # what is shown is what is typed: no locale format
            assert page.eval_on_selector(field, "el => el.type") == "text"
            assert page.get_attribute(field, "placeholder") == "YYYY-MM-DD"
        page.fill("#f-from", f"{first:%Y-%m-%d}")
        page.fill("#f-to", f"{last:%Y-%m-%d}")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/usage?*")
        assert page.input_value("#f-from") == f"{first:%Y-%m-%d}"
        assert page.input_value("#f-to") == f"{last:%Y-%m-%d}"
        assert ranges_shown(page) == {f"{first:%Y-%m-%d} – {last:%Y-%m-%d} (UTC)"}
        assert page.locator("#range time").first.get_attribute("datetime") == f"{first:%Y-%m-%d}"
        start, end = f"{first:%Y-%m-%dT%H:%M:%SZ}", f"{last + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
        assert figures(page) == api_figures(world, "alice", "alice", start, end)
        assert usage_rows(page) == api_rows(api_usage(world, "alice", "alice", **{"from": start}, to=end))

        page.fill("#f-from", "30.11.2026")  # a locale's format is refused by the browser, not sent
        page.click("form.filters button[type=submit]")
        assert page.eval_on_selector("#f-from", "el => el.validity.patternMismatch")
        assert page.input_value("#f-from") == "30.11.2026" and "30.11" not in page.url
        context.close()


def test_on_a_small_phone_the_chart_fits_the_screen(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "alice", SMALL_PHONE)
    for query in ("", "?range=all", f"?from={today(world) - timedelta(days=90):%Y-%m-%d}"):
        page.goto(f"/console/accounts/alice/usage{query}")
        width = page.evaluate("window.innerWidth")
        assert width == 375
        assert page.evaluate("document.documentElement.scrollWidth") <= width, query
        box = page.locator("svg.chart").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (query, box)
        bars = page.eval_on_selector_all(
            "svg.chart g.day rect", "rs => rs.map(r => { const b = r.getBoundingClientRect();"
                                    " return [b.left, b.right]; })")
        assert bars and all(0 <= left and right <= width for left, right in bars), query
    page.context.close()


def test_the_quota_forms_date_is_iso_whatever_the_browsers_locale(browser: Any, world: World) -> None:
    context = browser.new_context(base_url=world.url, locale="de-DE", timezone_id="Europe/Berlin")
    page = context.new_page()
    page.goto("/console/sign-in")
    page.fill("#key", world.keys["carol"])
    page.click("main form button[type=submit]")
    page.wait_for_url("**/console/**")
    page.goto("/console/enterprises/acme")
    assert page.eval_on_selector("#q-until", "el => el.type") == "text"
    assert page.get_attribute("#q-until", "placeholder") == "YYYY-MM-DD"
    assert "YYYY-MM-DD" in page.inner_text("label[for=q-until]")
    context.close()
