"""The overview's "Allowances and limits" in a real browser against a real server.

An account on a plan with a daily allowance on the Asia/Shanghai calendar, an allowance every 5
hours, a ``rolling 5h`` limit and ``when_out_of_credits: {fallback: basic-model, daily_cap: 50}``
(and a daily limit the operator set), with usage and a request in flight: the page shows each
allowance with its period and reset time, each limit with used / held / limit and when it resets
or frees, and the policy in words; every figure is the API's balance for the same moment. The
section keeps to the colour schemes' contrast and fits a 360 px wide phone; an account with none
of these shows the page as before.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from creditmeter.allowances import BLOCK, Allowance, LimitRule, LimitStatus
from creditmeter.console.display import credits, credits_text, iso_when
from creditmeter.console.views import limit_row, often, terms
from creditmeter.domain import Balance, Hold
from creditmeter.engine import Engine
from creditmeter.plans import parse_plans
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.recurrence import parse_every, parse_window
from tests.browser.conftest import CREDIT, DAY_US, LAPTOP, World, served_world
from tests.browser.test_console_pages import instant, people_credits, signed_in
from tests.browser.test_console_pool import BARS_JS, contrast
from tests.conftest import EXAMPLE_CATALOG

HOUR_US = DAY_US // 24
SMALL_PHONE = {"width": 360, "height": 740}
PLANS = {"plans": [
    {"id": "pro-plus", "kind": "subscription", "name": "Professional Plus", "credits": 1500,
     "period": "month",
     "allowances": [
         {"id": "daily", "every": "1d", "credits": 50, "calendar": "Asia/Shanghai", "name": "Daily credits"},
         {"id": "burst", "every": "5h", "credits": 10, "name": "Burst credits"}],
     "limits": [{"window": "rolling 5h", "credits": 300}],
     "when_out_of_credits": {"fallback": "basic-model", "daily_cap": 50}},
    {"id": "basic", "kind": "subscription", "name": "Basic", "credits": 100, "period": "month"},
]}
OFTEN = {"plan": "every month", "daily": "every day (Asia/Shanghai)", "burst": "every 5 hours"}
POLICY = "When your credits run out, requests use basic-model, up to 50 a day."

# Each allowance and limit as the page shows it (an amount's exact figure is its <data>'s value).
METERS_JS = """items => items.map(li => {
  const amount = c => { const d = li.querySelector('.meter-figures .' + c + ' data');
                        return d ? {exact: d.value, text: d.textContent.trim()} : null; };
  const text = c => { const e = li.querySelector('.' + c); return e ? e.textContent.trim() : null; };
  const at = li.querySelector('.resets-at time');
  return {id: li.dataset.allowance || li.dataset.limit, grant_id: li.dataset.grant || null,
          resets_kind: li.dataset.resets || null, name: text('mname'), often: text('often'),
          used: amount('used'), granted: amount('granted'), limit: amount('limit'),
          held: amount('held'), remaining: amount('remaining'),
          resets_at: at ? at.getAttribute('datetime') : null, resets_text: at ? at.textContent.trim() : null,
          resets: text('resets'), bar: li.querySelector('svg.bar').getAttribute('aria-label')};
})"""


def seed(engine: Engine, now_us: int) -> dict[str, str]:
    """fay: the plan with allowances, limits and a fallback, with usage and a hold in flight;
    gus: a plain monthly plan. Returns each one's key."""
    start = now_us - now_us % DAY_US - 3 * DAY_US
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), start, start)
    engine.load_plans(parse_plans(PLANS), start)
    for account, plan in (("fay", "pro-plus"), ("gus", "basic")):
        engine.create_account(account, start, name=f"{account.title()} Example")
        engine.subscribe(account, plan, start, subscription_id=f"{account}-sub")
    engine.set_limit("fay", "1d", 120, start, calendar="Asia/Shanghai", limit_id="daily-cap")
    usage = [(now_us - 2 * DAY_US, {"quantities": {"web_search": 20}}),
             (now_us - 3 * HOUR_US, {"model": "gpt-4o", "input_tokens": 100_000, "output_tokens": 15_000}),
             (now_us - 120_000_000, {"quantities": {"web_search": 8}})]
    for number, (moment, fields) in enumerate(usage):
        for account in ("fay", "gus"):
            engine.record({"id": f"{account}-{number}", "account_id": account, **fields}, moment)
    held = engine.reserve("fay", 5 * CREDIT, now_us, ttl_s=3_600, hold_id="fay-hold")
    assert isinstance(held, Hold), held
    assert engine.check_invariants() == []
    return {person: engine.create_key(person, now_us, name="console tests")[1] for person in ("fay", "gus")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from served_world(tmp_path_factory.mktemp("console-terms"), seed)


def shown_at(page: Any, world: World, who: str, account: str) -> dict[str, Any]:
    """Open the overview and return the API's balance of the same moment: read before and after
    the page, the same figures both times (but the instant asked and where a rolling window
    starts, which the page does not show), else a period turned over between them: read again."""
    for _ in range(3):
        before = world.get(who, f"/api/accounts/{account}/balance")
        assert page.goto(f"/console/accounts/{account}").status == 200
        after = world.get(who, f"/api/accounts/{account}/balance")
        if steady(before) == steady(after):
            return after
    raise AssertionError("the balance kept changing while the page was read")


def steady(balance: dict[str, Any]) -> dict[str, Any]:
    """The balance without what moves with the clock alone."""
    limits = [{k: v for k, v in s.items() if k != "window_start"} for s in balance["limits"]]
    return {**{k: v for k, v in balance.items() if k != "at"}, "limits": limits}


def moment(iso: str) -> str:
    """An instant as the page writes it: UTC to the minute, or to the second when not on one."""
    at = instant(iso)
    return f"{at:%Y-%m-%d %H:%M}" + (f":{at:%S}" if at.second or at.microsecond else "")


def amount(exact: str) -> dict[str, str]:
    return {"exact": exact, "text": people_credits(exact)}


def bar_words(whole: str, **parts: str) -> str:
    """A bar's label worked out from the API's figures: each nonzero part in whole percent."""
    return ", ".join(f"{int(Decimal(uc) * 100 // Decimal(whole))}% {name.replace('_', ' ')}"
                     for name, uc in parts.items() if Decimal(uc) > 0)


def check_terms(page: Any, api: dict[str, Any]) -> None:
    """The section's allowances, limits and policy against the API's balance."""
    allowances = page.eval_on_selector_all("#allowances li.meter", METERS_JS)
    assert [a["id"] for a in allowances] == [a["id"] for a in api["allowances"]]
    for row, expected in zip(allowances, api["allowances"], strict=True):
        assert (row["grant_id"], row["name"], row["often"]) == (
            expected["grant_id"], expected["name"], OFTEN[expected["id"]])
        for name in ("used", "granted", "remaining"):
            assert row[name] == amount(expected[f"{name}_credits"]), (expected["id"], name)
        held = expected["held_credits"]
        assert row["held"] == (None if held == "0" else amount(held)), expected["id"]
        resets_at = expected["resets_at"]
        assert (row["resets_at"], row["resets_text"]) == (resets_at, moment(resets_at))
        assert row["resets"] == f"Resets at {moment(resets_at)} (UTC)"
        gone = (Decimal(expected["granted_credits"]) - Decimal(expected["used_credits"])
                - Decimal(expected["held_credits"]) - Decimal(expected["remaining_credits"]))
        assert row["bar"] == bar_words(expected["granted_credits"], used=expected["used_credits"],
                                       held=expected["held_credits"], expired_or_voided=str(gone),
                                       remaining=expected["remaining_credits"])

    limits = page.eval_on_selector_all("#limits li.meter", METERS_JS)
    assert [row["id"] for row in limits] == [s["id"] for s in api["limits"]]
    for row, expected in zip(limits, api["limits"], strict=True):
        assert row["name"] == expected["description"]
        for name in ("used", "limit", "remaining"):
            assert row[name] == amount(expected[f"{name}_credits"]), (expected["id"], name)
        held = expected["held_credits"]
        assert row["held"] == (None if held == "0" else amount(held)), expected["id"]
        resets_at = expected["resets_at"]
        assert (row["resets_at"], row["resets_text"]) == (resets_at, moment(resets_at))
        verb = "Frees from" if expected["window"].startswith("rolling ") else "Resets at"
        assert row["resets_kind"] == ("frees" if verb == "Frees from" else "resets")
        assert row["resets"].startswith(f"{verb} {moment(resets_at)} (UTC)")
        assert row["bar"] == bar_words(expected["limit_credits"], used=expected["used_credits"],
                                       held=expected["held_credits"], remaining=expected["remaining_credits"])

    policy = page.locator("#when-out")
    said = api["when_out_of_credits"]["description"]
    assert policy.inner_text() == f"{said[0].upper()}{said[1:]}."
    assert policy.get_attribute("data-mode") == api["when_out_of_credits"]["mode"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def next_shanghai_midnight(now: datetime) -> str:
    """Asia/Shanghai keeps UTC+8 all year: its days start at 16:00 UTC."""
    midnight = now.replace(hour=16, minute=0, second=0, microsecond=0)
    return f"{midnight + timedelta(days=1) if midnight <= now else midnight:%Y-%m-%dT%H:%M:%SZ}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_overview_shows_allowances_limits_and_the_policy_as_the_api_does(
        browser: Any, world: World, tmp_path: Path, scheme: str) -> None:
    page = signed_in(browser, world, "fay")
    page.emulate_media(color_scheme=scheme)
    api = shown_at(page, world, "fay", "fay")
    check_terms(page, api)
    assert page.inner_text("#terms-h") == "Allowances and limits"
    assert page.eval_on_selector_all("main h2", "hs => hs.map(h => h.textContent.trim())") == [
        "Subscription", "Credits", "Allowances and limits", "Packages"]

    # What the seed makes: the figures the API gives are the ones this account should have.
    by_id = {a["id"]: a for a in api["allowances"]}
    assert set(by_id) == {"plan", "daily", "burst"}
    assert by_id["daily"]["resets_at"] == next_shanghai_midnight(instant(api["at"]))
    assert sum(Decimal(a["used_credits"]) for a in api["allowances"]) > 0
    assert sum(Decimal(a["held_credits"]) for a in api["allowances"]) == 5
    rolling, daily = api["limits"]
    assert (rolling["description"], rolling["held_credits"]) == ("300 credits in any 5 hours", "5")
    assert Decimal(rolling["used_credits"]) > 0 and rolling["resets_at"] is not None
    assert (daily["id"], daily["description"]) == ("daily-cap", "120 credits per day (Asia/Shanghai)")
    assert daily["resets_at"] == by_id["daily"]["resets_at"]
    assert page.inner_text("#when-out") == POLICY

    # The bars: the remaining part stands out from the card and from the part beside it.
    bars = page.eval_on_selector_all("#terms svg.bar", BARS_JS)
    assert len(bars) == len(api["allowances"]) + len(api["limits"])
    checked = 0
    for bar in bars:
        parts = dict(bar["parts"])
        if "bar-remaining" not in parts:  # used up
            continue
        assert contrast(parts["bar-remaining"], bar["background"]) >= 3, bar
        for name in ("bar-used", "bar-held"):
            if name in parts:
                assert contrast(parts["bar-remaining"], parts[name]) >= 3, (name, bar)
        checked += 1
    assert checked >= 2  # the month's credits and the rolling limit, at least
    # The words in grey still read as text (WCAG AA, 4.5:1) on the card.
    card = page.eval_on_selector("#terms", "e => getComputedStyle(e).backgroundColor")
    for colour in page.eval_on_selector_all("#terms .often, #terms .resets",
                                            "es => es.map(e => getComputedStyle(e).color)"):
        assert contrast(colour, card) >= 4.5, (colour, card)

    page.locator("#terms").evaluate("e => e.scrollIntoView()")  # the section at the top
    shot = tmp_path / f"allowances-{scheme}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1_000 and png_size(shot) == (LAPTOP["width"], LAPTOP["height"])
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_on_a_360_px_phone_the_section_fits_the_screen(browser: Any, world: World, tmp_path: Path,
                                                       scheme: str) -> None:
    page = signed_in(browser, world, "fay", SMALL_PHONE)
    page.emulate_media(color_scheme=scheme)
    check_terms(page, shown_at(page, world, "fay", "fay"))
    width = page.evaluate("window.innerWidth")
    assert width == 360
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    boxes = page.eval_on_selector_all(
        "#terms, #terms *", "es => es.map(e => { const b = e.getBoundingClientRect();"
                            " return [e.tagName, e.className.baseVal ?? e.className, b.left, b.right]; })")
    assert len(boxes) > 20
    outside = [box for box in boxes if box[2] < 0 or box[3] > width]
    assert outside == []
    page.locator("#terms").evaluate("e => e.scrollIntoView()")  # the section at the top
    shot = tmp_path / f"allowances-phone-{scheme}.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1_000 and png_size(shot) == (SMALL_PHONE["width"], SMALL_PHONE["height"])
    page.context.close()


def test_an_account_without_allowances_limits_or_a_policy_shows_the_page_as_before(
        browser: Any, world: World) -> None:
    page = signed_in(browser, world, "gus")
    api = shown_at(page, world, "gus", "gus")
    assert [a["id"] for a in api["allowances"]] == ["plan"] and api["limits"] == []
    assert api["when_out_of_credits"]["mode"] == "block"
    assert page.locator("#terms").count() == 0
    assert page.eval_on_selector_all("main h2", "hs => hs.map(h => h.textContent.trim())") == [
        "Subscription", "Credits", "Packages"]
    page.context.close()


# -- what the section is made of (no server) ------------------------------------------------------


def test_how_often_an_allowance_recurs_is_said_in_words() -> None:
    for every, calendar, said in (("1d", "Asia/Shanghai", "every day (Asia/Shanghai)"),
                                  ("5h", None, "every 5 hours"), ("1mo", None, "every month"),
                                  ("7d", "UTC", "every 7 days (UTC)")):
        assert often(Allowance("a", parse_every(every, "every"), CREDIT, calendar, "A")) == said


def test_a_limit_past_its_amount_is_a_full_bar_and_a_total_never_resets() -> None:
    rule = LimitRule("l", parse_window("rolling 5h", "window"), 10 * CREDIT)
    within = limit_row(LimitStatus(rule, 4 * CREDIT, 1 * CREDIT, 0, 7 * HOUR_US))
    assert (within.resets, within.bar) == ("frees", (("used", 0, 400), ("held", 400, 100),
                                                     ("remaining", 500, 500)))
    assert within.bar_label == "40% used, 10% held, 50% remaining"
    assert within.figures["used_credits"] == "4" and within.figures["remaining_credits"] == "5"
    past = limit_row(LimitStatus(rule, 12 * CREDIT, 3 * CREDIT, 0, None))  # usage already made counts
    assert past.bar == (("used", 0, 800), ("held", 800, 200)) and past.figures["remaining_credits"] == "0"
    assert past.bar_label == "120% used, 30% held"
    total = LimitRule("t", parse_window("total", "window"), CREDIT)
    assert limit_row(LimitStatus(total, 0, 0, 0, None)).resets == "never"
    calendar = LimitRule("c", parse_window("1d", "window", "Asia/Shanghai"), CREDIT)
    assert limit_row(LimitStatus(calendar, 0, 0, 0, DAY_US)).resets == "resets"


def test_an_account_with_none_of_it_has_no_section() -> None:
    assert terms(Balance("acct", 0, 0, 0, 0, (), when_out=BLOCK)) is None
    rule = LimitRule("l", parse_window("1d", "window"), CREDIT)
    shown = terms(Balance("acct", 0, 0, 0, 0, (), limits=(LimitStatus(rule, 0, 0, 0, DAY_US),)))
    assert shown is not None and shown.allowances == [] and len(shown.limits) == 1
    assert shown.when_out == {"mode": "block",
                              "description": "when your credits run out, requests are refused"}


def test_the_apis_strings_are_shown_as_the_console_shows_amounts_and_instants() -> None:
    text = lambda markup: re.sub(r"<[^>]+>", "", str(markup))  # noqa: E731
    assert credits_text("1234.567891") == credits(1_234_567_891)
    assert credits_text("0.000125") == credits(125)
    assert text(iso_when("2026-12-01T16:00:00Z")) == "2026-12-01 16:00"
    assert text(iso_when("2026-12-01T12:12:04.5Z")) == "2026-12-01 12:12:04"
    assert 'datetime="2026-12-01T12:12:04.500000Z"' in iso_when("2026-12-01T12:12:04.5Z")
    assert iso_when(None) == "—"
