"""Fixtures for the console: a real ``creditmeter serve`` over a seeded SQLite database (one per
module), keys for each person in it, and Debian's Chromium driven by Playwright (one per module).

The seed is relative to the real clock (the server reads it): about a month of usage replayed at
its own times, packages of every kind, a hold in flight, an account in overage, and two
enterprises with admins and members.

Without ``/usr/bin/chromium`` (or Playwright) the browser tests are skipped, saying why; in CI
(``CI=true``) they fail instead.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest

from creditmeter.engine import Engine
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore
from creditmeter.timeutil import US_PER_S
from tests.api.conftest import ADMIN_KEY, Server, bearer, start_server, stop_server
from tests.conftest import EXAMPLE_CATALOG

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CREDIT = 1_000_000  # µc
DAY_US = 86_400 * US_PER_S
MODELS = ["gpt-4o", "demo-small", "claude-sonnet-4", "gpt-4o-mini"]


@dataclass
class World:
    """The seeded server: its URL, the database's engine, and a key for each person."""

    server: Server
    engine: Engine
    now_us: int
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.base_url

    def api(self, who: str) -> httpx2.Client:
        """An API client with ``who``'s key (``operator`` for the operator)."""
        key = ADMIN_KEY if who == "operator" else self.keys[who]
        return httpx2.Client(base_url=self.url, headers=bearer(key), timeout=30)

    def get(self, who: str, path: str, **params: Any) -> Any:
        with self.api(who) as client:
            response = client.get(path, params={k: v for k, v in params.items() if v is not None})
            assert response.status_code == 200, response.text
            return response.json() if "json" in response.headers["content-type"] else response.content


def seed(engine: Engine, now_us: int) -> dict[str, str]:
    """Accounts, packages, usage and enterprises; returns each person's key."""
    start = now_us - now_us % DAY_US - 40 * DAY_US
    engine.load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())), start, start)

    # alice, replayed in time order: a pack used up and a promo that takes over from it (one
    # request is paid by both), an add-on, a monthly
    # subscription, a trial that expires within the week; a month of usage over four models (some
    # with web searches, one with features only) and a request in flight.
    engine.create_account("alice", start, name="Alice Example")
    engine.add_grant("alice", 10 * CREDIT, "package", start, expires_at_us=now_us - 30 * DAY_US,
                     name="Spring pack", grant_id="alice-spring")
    engine.add_grant("alice", 25 * CREDIT, "promo", start, name="Welcome credits", grant_id="alice-welcome")
    rng = random.Random(11)
    steps: list[tuple[int, Callable[[int], object]]] = [
        (now_us - 25 * DAY_US, lambda at: engine.purchase("alice", "addon-1000", at, order_id="alice-addon")),
        (now_us - 20 * DAY_US, lambda at: engine.subscribe("alice", "professional-monthly", at,
                                                           subscription_id="alice-pro")),
        (now_us - 10 * DAY_US, lambda at: engine.subscribe("alice", "trial", at)),
        (now_us - 3 * DAY_US, lambda at: engine.record(
            {"id": "alice-search", "account_id": "alice", "quantities": {"kb_retrieval": 3}}, at)),
    ]
    moments = [now_us - rng.randint(31 * 86_400, 34 * 86_400) * US_PER_S for _ in range(3)]
    moments += [now_us - rng.randint(60, 24 * 86_400) * US_PER_S for _ in range(43)]
    for number, moment in enumerate(sorted(moments)):
        event: dict[str, object] = {
            "id": f"alice-{number:03d}", "account_id": "alice", "model": MODELS[rng.randrange(len(MODELS))],
            "input_tokens": rng.randint(500, 40_000), "output_tokens": rng.randint(50, 4_000),
            "cached_input_tokens": rng.choice([0, 0, rng.randint(100, 9_000)]),
            "metadata": {"conversation": f"c{number // 4}"}}
        if number % 9 == 0:
            event["quantities"] = {"web_search": 2}
        steps.append((moment, partial(engine.record, event)))
    for moment, step in sorted(steps, key=lambda s: s[0]):
        step(moment)
    engine.reserve("alice", 7 * CREDIT, now_us, ttl_s=3_600, hold_id="alice-hold")

    # bob: little credit and more usage than it covers (overage).
    engine.create_account("bob", start, name="Bob Example")
    engine.add_grant("bob", 1 * CREDIT, "promo", start, name="Welcome credits", grant_id="bob-promo")
    engine.record({"id": "bob-1", "account_id": "bob", "model": "demo-large", "input_tokens": 20_000,
                   "output_tokens": 2_000}, now_us - 2 * DAY_US)

    # acme: carol administers it; dave and erin are members. globex: gina administers it.
    engine.create_account("acme", start, name="Acme Corp", kind="enterprise")
    engine.add_grant("acme", 10_000 * CREDIT, "package", start, expires_at_us=now_us + 90 * DAY_US,
                     name="Acme pool — annual", grant_id="acme-annual")
    engine.add_grant("acme", 500 * CREDIT, "promo", start, expires_at_us=now_us + 5 * DAY_US,
                     name="Acme launch bonus", grant_id="acme-bonus")
    for person, role in (("carol", "admin"), ("dave", "member"), ("erin", "member")):
        engine.create_account(person, start, name=person.title())
        engine.add_member("acme", person, start, role=role)
    engine.add_grant("dave", 20 * CREDIT, "promo", start, name="Dave's own credits", grant_id="dave-own")
    engine.allocate("acme", "dave", 300 * CREDIT, now_us - 6 * DAY_US,
                    expires_at_us=now_us + 60 * DAY_US, allocation_id="dave-q1")
    engine.allocate("acme", "erin", 120 * CREDIT, now_us - 6 * DAY_US, allocation_id="erin-q1")
    for number in range(5):
        engine.record({"id": f"dave-{number}", "account_id": "dave", "model": MODELS[number % 2],
                       "input_tokens": 30_000 + number, "output_tokens": 3_000},
                      now_us - (5 - number) * DAY_US)
    engine.create_account("globex", start, name="Globex", kind="enterprise")
    engine.create_account("gina", start, name="Gina")
    engine.add_member("globex", "gina", start, role="admin")
    engine.add_grant("globex", 800 * CREDIT, "package", start, name="Globex pool", grant_id="globex-pool")

    keys = {}
    for person in ("alice", "bob", "carol", "dave", "erin", "gina"):
        keys[person] = engine.create_key(person, now_us, name="console tests")[1]
    # The console takes a stored operator key (revocable), never the environment's.
    keys["operator"] = engine.create_key(None, now_us, name="console tests")[1]
    problems = engine.check_invariants()
    assert not problems, problems
    return keys


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A real server over a freshly seeded database (keys are checked on every request)."""
    yield from served_world(tmp_path_factory.mktemp("console"), seed)


# -- the browser ------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI runs the browser tests: install Debian's chromium package)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), headless, for a module's tests. Not for the
    whole session: while Playwright's sync API is open, its event loop is marked as running in
    this thread, and a later test's ``asyncio.run`` would be refused."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"the browser tests need Chromium at {CHROMIUM}, which is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the browser tests need Playwright for Python: {exc}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def served_world(folder: Path, seed: Callable[[Engine, int], dict[str, str]]) -> Iterator[World]:
    """A fresh database seeded by ``seed(engine, now_us)`` (which answers each person's key) and a
    real server on it, for a module's tests; stopped once they are done."""
    url = f"sqlite:///{folder / 'console.db'}"
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    now_us = time.time_ns() // 1_000
    keys = seed(engine, now_us)
    server = start_server(url, folder / "serve.log", env={"CREDITMETER_KEY_CACHE_S": "0",
                                                          "CREDITMETER_TICK_S": "0"})
    try:
        yield World(server, engine, now_us, keys)
    finally:
        stop_server(server)
        engine.store.close()
