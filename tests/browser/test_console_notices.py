"""The overview's notices in a real browser against a real server: the newest first in plain words
(the API's words), the unread count in a badge, and "Mark all read", which marks them for the
signed-in person only, up to the newest one the page showed (one raised since stays unread). The
section keeps to the colour schemes' contrast and fits a phone; a wrong form token marks nothing;
an account without notices has no such section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from creditmeter.alerts import Alert, AlertType
from creditmeter.engine import Engine
from creditmeter.timeutil import format_instant
from tests.browser.conftest import DAY_US, PHONE, World, served_world
from tests.browser.test_console_pages import shoot, signed_in
from tests.browser.test_console_pool import contrast

HOUR_US = DAY_US // 24
NOTICES_JS = """items => items.map(li => ({id: li.dataset.notice, type: li.dataset.type,
  text: li.querySelector('.notice-text').textContent.trim(), unread: li.classList.contains('is-unread'),
  at: li.querySelector('time').getAttribute('datetime')}))"""

ROWS_JS = ("items => items.map(li => { const r = li.getBoundingClientRect(); "
           "return [r.top, r.bottom, r.width]; })")


def raise_alerts(engine: Engine, *alerts: Alert) -> None:
    with engine.store.transaction(write=True) as tx:
        for alert in alerts:
            assert tx.insert_alert(alert, alert.at_us)


def seed(engine: Engine, now_us: int) -> dict[str, str]:
    """nia with five notices of different kinds; oli with none. Returns each one's key."""
    start = now_us - 3 * DAY_US
    for account in ("nia", "oli"):
        engine.create_account(account, start, name=f"{account.title()} Example")
    end = format_instant(now_us + 20 * DAY_US)
    raise_alerts(
        engine,
        Alert("nia", AlertType.USAGE_REACHED, "usage:80", now_us - 50 * HOUR_US,
              {"percent": 80, "package_name": "Professional (monthly)", "period_end": end}),
        Alert("nia", AlertType.PACKAGE_EXPIRING, "expiring:trial", now_us - 40 * HOUR_US,
              {"package_name": "Trial credits", "remaining": "12.5",
               "expires_at": format_instant(now_us + 3 * DAY_US - HOUR_US)}),
        Alert("nia", AlertType.LIMIT_REACHED, "limit:1", now_us - 30 * HOUR_US,
              {"limit_id": "plan-1", "window": "rolling 5h", "credits": "300",
               "frees_at": format_instant(now_us - 25 * HOUR_US)}),
        Alert("nia", AlertType.DEPLETED, "depleted:1", now_us - 20 * HOUR_US),
        Alert("nia", AlertType.PURCHASE_COMPLETED, "order:o1", now_us - 10 * HOUR_US,
              {"pack_id": "addon-1000", "credits": "1000"}))
    return {person: engine.create_key(person, now_us, name="console tests")[1] for person in ("nia", "oli")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from served_world(tmp_path_factory.mktemp("console-notices"), seed)


def shown(page: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.eval_on_selector_all("#notices li.notice-item", NOTICES_JS)
    return found


def test_notices_in_words_then_all_marked_read(browser: Any, world: World, screenshots: Path) -> None:
    page = signed_in(browser, world, "nia")
    assert page.goto("/console/accounts/nia").status == 200
    api = world.get("nia", "/api/accounts/nia/notifications")
    on_page = shown(page)
    assert [(n["id"], n["type"], n["text"], n["at"]) for n in on_page] == [
        (n["id"], n["type"], n["text"], n["timestamp"]) for n in api["notifications"]]
    assert [n["text"] for n in on_page] == [
        "Purchase of pack addon-1000 completed (1000 credits)",
        "Your credits are used up",
        f"You reached your 5-hour usage limit of 300 credits; it frees up at "
        f"{format_instant(world.now_us - 25 * HOUR_US)[:16].replace('T', ' ')} UTC",
        f"Your trial credits (12.5 left) expire in 3 days, on "
        f"{format_instant(world.now_us + 3 * DAY_US - HOUR_US)[:10]}",
        f"You have used 80% of Professional (monthly) credits for the period that ends "
        f"{format_instant(world.now_us + 20 * DAY_US)[:10]}"]
    assert all(n["unread"] for n in on_page)
    assert page.inner_text("#unread-count") == "5 new"
    # Each notice is a row the width of the list, one under the other with no gap.
    rows = page.eval_on_selector_all("#notices li.notice-item", ROWS_JS)
    list_width = page.eval_on_selector("#notices ol", "e => e.getBoundingClientRect().width")
    assert all(abs(width - list_width) < 1 for _, _, width in rows), (rows, list_width)
    assert all(abs(rows[i][1] - rows[i + 1][0]) < 1 for i in range(len(rows) - 1)), rows
    shoot(page, screenshots, "notices-unread")

    # One raised after the page was drawn: "Mark all read" leaves it unread.
    raise_alerts(world.engine, Alert("nia", AlertType.OVERAGE, "overage:1", world.now_us))
    page.click("#mark-read")
    page.wait_for_url("**/console/accounts/nia?done=read#notices")
    assert page.inner_text("p.flash") == "Notices marked read."
    after = shown(page)
    assert [(n["text"], n["unread"]) for n in after[:2]] == [
        ("Credits are being used in overage", True),
        ("Purchase of pack addon-1000 completed (1000 credits)", False)]
    assert not any(n["unread"] for n in after[1:]) and len(after) == 6
    assert page.inner_text("#unread-count") == "1 new"
    shoot(page, screenshots, "notices-marked-read")

    # The marks are nia's: the operator still has all six unread.
    assert world.get("operator", "/api/accounts/nia/notifications")["unread"] == 6
    assert world.get("nia", "/api/accounts/nia/notifications")["unread"] == 1
    page.click("#mark-read")
    page.wait_for_url("**/console/accounts/nia?done=read#notices")
    assert page.locator("#unread-count").count() == 0 and page.locator("#mark-read").count() == 0
    assert world.get("nia", "/api/accounts/nia/notifications")["unread"] == 0
    page.context.close()


def test_a_wrong_form_token_marks_nothing(browser: Any, world: World) -> None:
    page = signed_in(browser, world, "oli")
    page.goto("/console/accounts/oli")
    assert page.locator("#notices").count() == 0  # no notices: no section
    raise_alerts(world.engine, Alert("oli", AlertType.DEPLETED, "depleted:1", world.now_us))
    answer = page.request.post(f"{world.url}/console/accounts/oli/notices/read", form={"csrf": "wrong"})
    assert answer.status == 403
    stranger = page.request.post(f"{world.url}/console/accounts/nia/notices/read", form={"csrf": "wrong"})
    assert stranger.status == 404  # not oli's to see, whatever the token
    assert world.get("oli", "/api/accounts/oli/notifications")["unread"] == 1
    page.goto("/console/accounts/oli")
    assert page.inner_text("#unread-count") == "1 new"
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_section_reads_in_both_schemes_and_fits_a_phone(browser: Any, world: World, screenshots: Path,
                                                             scheme: str) -> None:
    person = f"pia-{scheme}"  # an account of its own: a notice unread, whatever ran before
    world.engine.create_account(person, world.now_us - DAY_US)
    raise_alerts(world.engine, Alert(person, AlertType.PACKAGE_EXPIRING, "expiring:1", world.now_us,
                                     {"package_name": "A rather long package name for a small screen",
                                      "remaining": "1234.567891",
                                      "expires_at": format_instant(world.now_us + 5 * HOUR_US)}))
    world.keys[person] = world.engine.create_key(person, world.now_us)[1]
    page = signed_in(browser, world, person, viewport=PHONE)
    page.emulate_media(color_scheme=scheme)
    page.goto(f"/console/accounts/{person}")
    card = page.eval_on_selector("#notices", "e => getComputedStyle(e).backgroundColor")
    for selector in (".notice-text", ".notice-meta time", "#unread-count", "#mark-read"):
        colour, background = page.eval_on_selector(
            f"#notices {selector}", "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]")
        against = background if background not in ("rgba(0, 0, 0, 0)", "transparent") else card
        assert contrast(colour, against) >= 4.5, (selector, colour, against)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    shoot(page, screenshots, f"notices-phone-{scheme}")
    page.context.close()
