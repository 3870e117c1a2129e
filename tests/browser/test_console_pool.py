"""An enterprise pool's figures, and the package bars, in a real browser against a real server.

A pool package's credits go out to members as quota: the console, the CLI and the API call that
"allocated", and show beside it what members used. The "remaining" part of every package bar
stands out (WCAG non-text contrast, at least 3:1) from the page behind it and from the parts next
to it, in the light and the dark colour scheme.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from tests.browser.conftest import LAPTOP, World
from tests.browser.test_console_pages import signed_in

# Each bar's parts and what is behind the bar: the first opaque background up from the bar.
BARS_JS = """bars => bars.map(svg => {
  let box = svg.parentElement;
  const clear = b => /^(rgba\\(.*,0\\)|transparent)$/.test(
    getComputedStyle(b).backgroundColor.replace(/\\s/g, ''));
  while (box && clear(box)) box = box.parentElement;
  return {background: getComputedStyle(box || document.body).backgroundColor,
          parts: [...svg.querySelectorAll('rect:not(.bar-bg)')].map(r => [r.getAttribute('class'),
                                                                           getComputedStyle(r).fill])};
})"""


def luminance(css: str) -> float:
    """The relative luminance (WCAG 2) of an ``rgb(r, g, b)`` colour."""
    inside = css[css.index("(") + 1:css.index(")")]
    channels = [int(part) / 255 for part in inside.replace(",", " ").split()[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_remaining_stands_out_from_the_page_and_the_parts_beside_it(browser: Any, world: World,
                                                                    scheme: str) -> None:
    checked, beside = 0, set()
    for who, path in (("alice", "/console/accounts/alice"), ("carol", "/console/enterprises/acme")):
        page = signed_in(browser, world, who)
        page.emulate_media(color_scheme=scheme)
        page.goto(path)
        for bar in page.eval_on_selector_all("svg.bar", BARS_JS):
            classes = [name for name, _ in bar["parts"]]
            if "bar-remaining" not in classes:
                continue
            at = classes.index("bar-remaining")
            remaining = bar["parts"][at][1]
            assert contrast(remaining, bar["background"]) >= 3, (path, bar)
            if at:
                neighbour, fill = bar["parts"][at - 1]
                assert contrast(remaining, fill) >= 3, (path, neighbour, bar)
                beside.add(neighbour)
            checked += 1
        page.context.close()
    assert checked >= 4 and "bar-used" in beside


def test_the_pool_says_allocated_and_what_members_used_as_the_api_does(browser: Any, world: World) -> None:
    api = world.get("carol", "/api/enterprises/acme")
    pool = api["pool"]
    allocated = sum(Decimal(a["amount_credits"]) - Decimal(a["returned_credits"]) for a in api["allocations"])
    members_used = sum(Decimal(m["used_credits"]) for m in api["members"])
    assert (Decimal(pool["allocated_credits"]), Decimal(pool["members_used_credits"])) == (allocated,
                                                                                         members_used)
    assert allocated == Decimal("420") and members_used > 0  # the seed: 300 to dave, 120 to erin
    # Nothing else is charged to acme itself: what left its packages is what members were given.
    assert sum(Decimal(p["used_credits"]) for p in pool["packages"]) == allocated

    page = signed_in(browser, world, "carol", LAPTOP)
    page.goto("/console/enterprises/acme")
    assert page.locator("#allocated data").get_attribute("value") == pool["allocated_credits"]
    assert page.locator("#members-used data").get_attribute("value") == pool["members_used_credits"]
    assert page.inner_text("div:has(> #allocated) > dt") == "Allocated to members"
    assert page.inner_text("div:has(> #members-used) > dt") == "Used by members"
    texts = "ths => ths.map(th => th.textContent.trim())"
    headers = page.eval_on_selector_all("table.packages thead th", texts)
    assert "Allocated" in headers and "Used" not in headers
    pool_cells = page.eval_on_selector_all(
        "table.packages tbody tr",
        "rows => rows.map(r => [r.dataset.grant, r.querySelector('.used').dataset.label,"
        " r.querySelector('.used data').value])")
    assert pool_cells == [[p["grant_id"], "Allocated", p["used_credits"]] for p in pool["packages"]]
    members = page.eval_on_selector_all("table.members thead th", texts)
    assert "Used" in members  # a member's own use of their quota is what they used
    page.context.close()


def test_the_cli_shows_the_pool_as_allocated(world: World) -> None:
    api = world.get("operator", "/api/enterprises/acme")["pool"]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(sys.path)}
    shown = subprocess.run([sys.executable, "-m", "creditmeter.cli", "enterprise", "show", "acme",
                            "--db", world.server.db_url], capture_output=True, text=True, env=env,
                           timeout=60, check=True).stdout
    header = next(line for line in shown.splitlines() if "granted" in line)
    assert "allocated" in header and "used" not in header
    assert (f"allocated to members {api['allocated_credits']} credits, "
            f"used by members {api['members_used_credits']}") in shown
    as_json = json.loads(subprocess.run(
        [sys.executable, "-m", "creditmeter.cli", "enterprise", "show", "acme", "--json", "--db",
         world.server.db_url], capture_output=True, text=True, env=env, timeout=60, check=True).stdout)
    assert (as_json["pool"]["allocated_credits"], as_json["pool"]["members_used_credits"]) == (
        api["allocated_credits"], api["members_used_credits"])
