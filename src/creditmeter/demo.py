"""The demo database: one user, four packages and a month of usage, and a team that gives the
user quota (``creditmeter demo`` builds it, shows it and serves it with the built-in demo upstream).

Everything is replayed through the engine as it would happen (each request at its own time,
some through holds as a gateway would do), so the result is a real ledger that reconciles.
"""

from __future__ import annotations

import random
from importlib.resources import files
from pathlib import Path

import sqlalchemy as sa

from creditmeter.domain import Hold
from creditmeter.engine import Engine, Usage, open_engine
from creditmeter.errors import InputError
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.timeutil import DAY_US, US_PER_S

USER = "demo-user"
TEAM = "demo-team"
TEAMMATE = "demo-teammate"
# The models the demo gateway serves, all answered offline by the built-in demo upstream.
GATEWAY_MODELS = ("demo-small", "demo-large")
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
    engine.create_account(USER, start, name="Dana Demo")
    engine.add_grant(USER, 100 * US_PER_S, "trial", start, expires_at_us=start + 14 * DAY_US,
                     name="Personal Trial Edition", grant_id="demo-trial")
    engine.add_grant(USER, 1_500 * US_PER_S, "subscription", start,
                     expires_at_us=start + (days + 5) * DAY_US,
                     name="Personal Professional Edition — monthly", grant_id="demo-pro")
    engine.add_grant(USER, 300 * US_PER_S, "package", start,
                     expires_at_us=start + max(days * 2 // 3, 1) * DAY_US,
                     name="Resource pack — knowledge base", grant_id="demo-pack")
    addon_at = start + (days // 4) * DAY_US
    engine.add_grant(USER, 500 * US_PER_S, "addon", addon_at, expires_at_us=addon_at + 365 * DAY_US,
                     name="Personal Add-on Pack", grant_id="demo-addon")
    _team(engine, start, days)
    rng = random.Random(7)
    requests = 0
    for day in range(days):
        day_start = start + day * DAY_US
        count = rng.randint(6, 14) if day % 7 < 5 else rng.randint(1, 4)
        moments = sorted(day_start + rng.randint(8 * 3600, 20 * 3600) * US_PER_S for _ in range(count))
        for moment in moments:
            if moment > now_us:
                break
            _one_request(engine, rng, moment, requests)
            requests += 1
            if rng.random() < 0.3:
                _one_request(engine, rng, moment + US_PER_S, requests, account=TEAMMATE)
                requests += 1
        engine.tick(min(day_start + DAY_US, now_us))
    engine.tick(now_us)
    return engine, requests


def _team(engine: Engine, start: int, days: int) -> None:
    """An enterprise whose admin is the demo user: a pool, and quota for the user and a teammate."""
    engine.create_account(TEAM, start, name="Demo Team", kind="enterprise")
    engine.create_account(TEAMMATE, start, name="Sam Teammate")
    engine.add_grant(TEAM, 5_000 * US_PER_S, "subscription", start, expires_at_us=start + (days + 5) * DAY_US,
                     name="Enterprise Edition — 5 seats", grant_id="demo-team-pool")
    engine.add_member(TEAM, USER, start, role="admin")
    engine.add_member(TEAM, TEAMMATE, start)
    engine.allocate(TEAM, TEAMMATE, 400 * US_PER_S, start, allocation_id="sam-monthly")
    engine.allocate(TEAM, USER, 200 * US_PER_S, start + 2 * DAY_US, allocation_id="dana-monthly")


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
