"""The demo database: one user on the shipped example plans (a trial, a running Professional
subscription, an add-on pack and a resource package bought), a month of usage, and a team on an
enterprise plan that gives the user quota (``creditmeter demo`` builds it, shows it and serves it
with the built-in demo upstream).

Everything is replayed through the engine as it would happen (subscriptions, purchases, renewals,
each request at its own time, some through holds as a gateway would do), so the result is a real
ledger that reconciles.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import sqlalchemy as sa

from creditmeter.domain import Hold
from creditmeter.engine import Engine, Usage, open_engine
from creditmeter.errors import InputError
from creditmeter.plans import default_plans, period_bounds
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.timeutil import DAY_US, US_PER_S

USER = "demo-user"
TEAM = "demo-team"
TEAMMATE = "demo-teammate"
# The models the demo gateway serves, all answered offline by the built-in demo upstream.
GATEWAY_MODELS = ("demo-small", "demo-large")
# The shipped example plans (catalogs/plans.yaml) the demo accounts subscribe to and buy.
TRIAL_PLAN, PRO_PLAN, ADDON_PACK, RESOURCE_PACK, TEAM_PLAN = (
    "trial", "professional-monthly", "addon-1000", "package-3000", "enterprise-seat")
TEAM_SEATS = 5
# (model, share of requests, typical input tokens, typical output tokens)
MODELS = [("demo-small", 0.35, 3_000, 400), ("gpt-4o-mini", 0.25, 6_000, 800),
          ("demo-large", 0.2, 18_000, 1_600), ("claude-sonnet-4", 0.2, 24_000, 2_000)]


def example_catalog_text() -> str:
    return files("creditmeter").joinpath("catalogs/example.yaml").read_text(encoding="utf-8")


def run_demo(url: str, days: int, now_us: int) -> tuple[Engine, int]:
    """Build the demo database at ``url`` (replacing an old one); the engine on it, and how many
    requests were replayed."""
    path = sa.engine.make_url(url).database if url.startswith("sqlite") else None
    if not path or path == ":memory:":
        raise InputError("db", "the demo needs a SQLite file URL, e.g. sqlite:///creditmeter-demo.db")
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    engine = open_engine(url)
    start = (now_us // DAY_US - days) * DAY_US
    engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start,
                       source="example.yaml (example prices)")
    engine.load_plans(default_plans(), start, source="plans.yaml (example plans)")
    engine.create_account(USER, start, name="Dana Demo")
    engine.subscribe(USER, TRIAL_PLAN, start, subscription_id="demo-trial")
    _team(engine, start)
    later = _later(engine, start, days, now_us)
    rng = random.Random(7)
    requests = 0
    for day in range(days):
        day_start = start + day * DAY_US
        count = rng.randint(6, 14) if day % 7 < 5 else rng.randint(1, 4)
        moments = sorted(day_start + rng.randint(8 * 3600, 20 * 3600) * US_PER_S for _ in range(count))
        for moment in moments:
            if moment > now_us:
                break
            while later and later[0][0] <= moment:  # what happened before this request
                later.pop(0)[1]()
            _one_request(engine, rng, moment, requests)
            requests += 1
            if rng.random() < 0.3:
                _one_request(engine, rng, moment + US_PER_S, requests, account=TEAMMATE)
                requests += 1
        engine.tick(min(day_start + DAY_US, now_us))
    for _, action in later:
        action()
    engine.tick(now_us)
    return engine, requests


def _later(engine: Engine, start: int, days: int, now_us: int) -> list[tuple[int, Callable[[], object]]]:
    """What happens after the first instant, in time order, to replay between requests: the
    demo user subscribes to Professional a week into the trial (it renews each month from then),
    buys a resource package, then an add-on pack; each month, once the team's pool has renewed,
    its admin hands quota to the teammate and to herself (the daily tick renews the pool first)."""
    pro_at = start + min(7, days // 2) * DAY_US
    pack_at = start + max(1, days // 6) * DAY_US
    addon_at = start + max(1, days // 4) * DAY_US
    actions: list[tuple[int, Callable[[], object]]] = [
        (pro_at, lambda: engine.subscribe(USER, PRO_PLAN, pro_at, subscription_id="demo-pro")),
        (pack_at, lambda: engine.purchase(USER, RESOURCE_PACK, pack_at, order_id="demo-pack")),
        (addon_at, lambda: engine.purchase(USER, ADDON_PACK, addon_at, order_id="demo-addon")),
    ]
    month = 0
    while (at := period_bounds(start, "month", month)[0]) <= now_us:  # the team's periods
        for member, credits in ((TEAMMATE, 400), (USER, 200)):
            actions.append((at, functools.partial(engine.allocate, TEAM, member, credits * US_PER_S, at,
                                                  allocation_id=f"{member}-month-{month}")))
        month += 1
    return sorted((item for item in actions if item[0] <= now_us), key=lambda item: item[0])


def _team(engine: Engine, start: int) -> None:
    """An enterprise on the enterprise plan, whose admin is the demo user, with a teammate."""
    engine.create_account(TEAM, start, name="Demo Team", kind="enterprise")
    engine.create_account(TEAMMATE, start, name="Sam Teammate")
    engine.subscribe(TEAM, TEAM_PLAN, start, subscription_id="demo-team-plan", seats=TEAM_SEATS)
    engine.add_member(TEAM, USER, start, role="admin")
    engine.add_member(TEAM, TEAMMATE, start)


def _one_request(engine: Engine, rng: random.Random, at_us: int, number: int,
                 account: str = USER) -> None:
    model, _, typical_in, typical_out = rng.choices(MODELS, weights=[m[1] for m in MODELS])[0]
    input_tokens = int(typical_in * rng.uniform(0.3, 2.0))
    output_tokens = int(typical_out * rng.uniform(0.2, 1.8))
    cached = int(input_tokens * rng.uniform(0.2, 0.7)) if rng.random() < 0.4 else 0
    quantities = {"web_search": rng.randint(1, 3)} if rng.random() < 0.1 else {}
    metadata = {"conversation": f"conv-{number // 5:04d}"}
    if rng.random() < 0.5:
        # As a gateway does: hold an estimate, then settle the actual usage.
        hold = engine.reserve(account, 5 * US_PER_S, at_us, ttl_s=120, hold_id=f"demo-hold-{number:05d}")
        if isinstance(hold, Hold):
            engine.settle(hold.id, Usage(model, input_tokens - cached, output_tokens, cached, 0,
                                         tuple(quantities.items()), metadata),
                          at_us + rng.randint(2, 40) * US_PER_S, event_id=f"demo-req-{number:05d}")
            return
    engine.record({"id": f"demo-req-{number:05d}", "account_id": account, "model": model,
                   "input_tokens": input_tokens - cached, "output_tokens": output_tokens,
                   "cached_input_tokens": cached, "quantities": quantities, "metadata": metadata},
                  at_us)
