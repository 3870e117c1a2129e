"""creditmeter benchmarks:
``python benchmarks/run.py ingest|balance|contention|holds|api|gateway|deliveries|reads|scale [--db URL]``.

``scale`` (benchmarks/scale.py) measures, in one command, ingest of 1,000,000 events over 10,000
accounts with the bytes each takes on disk, the reads at 10,000 and 1,000,000 events, and
hundreds of concurrent streams through the gateway on one account against spread over as many.

Without ``--db`` they run on fresh SQLite files in benchmarks/work; with a PostgreSQL URL they
make fresh databases on that server.

Each benchmark prints a table and writes ``benchmarks/results/NAME.json``. Targets are checked
here, never by timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

import litellm_proxy

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT / "work"
sys.path.insert(0, str(ROOT.parent / "src"))

from creditmeter.alert_rules import parse_alert_rules  # noqa: E402
from creditmeter.demo import example_catalog_text  # noqa: E402
from creditmeter.engine import Engine, Settings  # noqa: E402
from creditmeter.ingest import import_jsonl, read_batches  # noqa: E402
from creditmeter.plans import parse_plans  # noqa: E402
from creditmeter.pricing import load_yaml, parse_catalog  # noqa: E402
from creditmeter.store.sql import SqlStore  # noqa: E402
from creditmeter.timeutil import US_PER_S, format_instant, parse_instant  # noqa: E402

DAY_US = 86_400 * US_PER_S
AT = parse_instant("2026-11-20T00:00:00Z", "at")
MODELS = ["demo-small", "gpt-4o-mini", "demo-large", "claude-sonnet-4", "gpt-4o", "deepseek-chat"]
KINDS = [("trial", 3), ("package", 5), ("subscription", 20), ("addon", 365), ("promo", None)]


# -- data ------------------------------------------------------------------------------------------

def write_events(path: Path, events: int, accounts: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        for i in range(events):
            ts = AT - rng.randrange(6 * DAY_US)
            event = {
                "id": f"evt-{i:09d}", "account_id": f"acct-{rng.randrange(accounts):05d}",
                "timestamp": format_instant(ts), "model": rng.choice(MODELS),
                "input_tokens": rng.randrange(200, 20_000), "output_tokens": rng.randrange(50, 3_000),
                "cached_input_tokens": rng.choice((0, 0, rng.randrange(0, 8_000))),
                "metadata": {"conversation": f"c{rng.randrange(10_000)}"},
            }
            out.write(orjson.dumps(event) + b"\n")


def events_file(events: int, accounts: int) -> Path:
    """The event file of ``events`` over ``accounts`` (written once, kept in the work folder)."""
    path = WORK / f"ingest-{events}-{accounts}.jsonl"
    if not path.exists():
        write_events(path, events, accounts)
    return path


# A plan with what SPEC §12 adds: monthly credits with a rollover, a daily allowance on the
# Shanghai calendar (with its own rollover), a rolling and a calendar limit.
TERMS_PLANS = """
plans:
  - id: bench-plus
    kind: subscription
    name: Bench Plus
    credits: 1500
    period: month
    rollover: {max_percent: 40, max_credits: 200, lasts: 1}
    allowances:
      - {id: daily, every: 1d, credits: 50, calendar: Asia/Shanghai, name: Daily credits,
         rollover: {max_credits: 20, lasts: 1}}
    limits:
      - {window: rolling 5h, credits: 300}
      - {window: 1d, credits: 400, calendar: Asia/Shanghai}
"""

# The plan the allowances' target names: monthly credits, a daily allowance (on the Shanghai
# calendar) used before them, and a rolling 5-hour limit; no rollover.
DAILY_5H_PLANS = """
plans:
  - id: bench-plus
    kind: subscription
    name: Bench Plus
    credits: 1500
    period: month
    allowances:
      - {id: daily, every: 1d, credits: 50, calendar: Asia/Shanghai, name: Daily credits}
    limits:
      - {window: rolling 5h, credits: 300}
"""
PLANS = {"full": TERMS_PLANS, "daily-5h": DAILY_5H_PLANS}


def setup_engine(url: str, accounts: int, seed: int = 2, *, terms: bool = False,
                 plans: str = TERMS_PLANS) -> Engine:
    """Accounts with 3-5 packages of different kinds each; with ``terms``, each also subscribed
    (from the same instant) to a plan with allowances, rollover and limits."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    start = AT - 8 * DAY_US
    engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start)
    if terms:
        engine.load_plans(parse_plans(load_yaml(plans)), start)
    rng = random.Random(seed)
    for a in range(accounts):
        account = f"acct-{a:05d}"
        engine.create_account(account, start)
        if terms:
            engine.subscribe(account, "bench-plus", start, subscription_id=f"{account}-plus")
        for kind, days in rng.sample(KINDS, rng.randint(3, 5)):
            engine.add_grant(account, rng.randrange(500, 5_000) * US_PER_S, kind, start,
                             expires_at_us=None if days is None else AT + days * DAY_US,
                             grant_id=f"{account}-{kind}")
    return engine


def fresh_sqlite(name: str) -> str:
    path = WORK / name
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return f"sqlite:///{path}"


def fresh_database(server: str | None, name: str) -> str:
    """A new empty database: a SQLite file in benchmarks/work, or with ``--db`` a PostgreSQL
    URL (of any database on the server), a database ``creditmeter_bench_NAME`` made anew there."""
    if server is None or server.startswith("sqlite"):
        return fresh_sqlite(f"{name}.db")
    import sqlalchemy as sa

    from creditmeter.store.sql import _driver_url

    admin = sa.create_engine(_driver_url(server), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    database = f"creditmeter_bench_{name}".replace("-", "_")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    admin.dispose()
    return sa.engine.make_url(server).set(database=database).render_as_string(hide_password=False)


# -- phases (each in its own process, so memory and caches are its own) ---------------------------

def _engine_phase(url: str, events_path: str, batch: int, out: Any) -> None:
    engine = Engine(SqlStore(url))
    started, cpu = time.perf_counter(), time.process_time()
    summary = import_jsonl(engine, Path(events_path), AT, batch_size=batch)
    seconds = time.perf_counter() - started
    out.put({"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
             "charged": summary.charged, "duplicate": summary.duplicate,
             "rejected": len(summary.rejected),
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _engine_phase_rules(url: str, events_path: str, batch: int, rules: bool, out: Any) -> None:
    """``_engine_phase`` with the engine watching ``ALERT_RULES`` (or no rule) for every account."""
    settings = Settings(alert_rules=parse_alert_rules(ALERT_RULES, "alerts") if rules else ())
    engine = Engine(SqlStore(url), settings)
    started, cpu = time.perf_counter(), time.process_time()
    summary = import_jsonl(engine, Path(events_path), AT, batch_size=batch)
    seconds = time.perf_counter() - started
    with engine.store.transaction() as tx:
        alerts = len(tx.alerts_since(None, 0, 1_000_000))
    out.put({"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "alerts": alerts,
             "charged": summary.charged, "rejected": len(summary.rejected)})


def _baseline_phase(url: str, events_path: str, batch: int, out: Any) -> None:
    """The same file, parsed line by line and inserted as one bare row each, same batches."""
    store = SqlStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE bare_events (id VARCHAR(255) PRIMARY KEY, account_id VARCHAR(255), "
            "timestamp VARCHAR(64), model VARCHAR(255), input_tokens BIGINT, output_tokens BIGINT, "
            "cached_input_tokens BIGINT, cache_write_tokens BIGINT)")
    mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO bare_events VALUES ({', '.join([mark] * 8)})"
    started = time.perf_counter()
    rows = 0
    for chunk, _ in read_batches(Path(events_path), batch):
        values = [(e["id"], e["account_id"], e.get("timestamp"), e.get("model"),
                   e.get("input_tokens", 0), e.get("output_tokens", 0),
                   e.get("cached_input_tokens", 0), e.get("cache_write_tokens", 0))
                  for _, e in chunk]
        with store.engine.begin() as conn:
            conn.exec_driver_sql(sql, values)
        rows += len(values)
    seconds = time.perf_counter() - started
    out.put({"seconds": seconds, "rows": rows,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _in_process(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result  # type: ignore[no-any-return]


def _time_balance(url: str, account: str, repeat: int = 200) -> tuple[float, float]:
    """Median in-process balance read (ms) and median `creditmeter balance` command (ms)."""
    engine = Engine(SqlStore(url))
    engine.balance(account, AT)
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        engine.balance(account, AT)
        samples.append((time.perf_counter() - t) * 1000)
    cli = []
    exe = shutil.which("creditmeter") or f"{sys.executable} -m creditmeter.cli"
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([*exe.split(), "balance", account, "--db", url, "--at",
                        format_instant(AT) or "", "--json"], check=True, capture_output=True)
        cli.append((time.perf_counter() - t) * 1000)
    engine.store.close()
    return statistics.median(samples), statistics.median(cli)


def _hot_account(url: str, events: int) -> None:
    """Charge ``events`` events to one account (setup for the balance-vs-history check)."""
    engine = Engine(SqlStore(url))
    engine.create_account("hot", AT - 8 * DAY_US)
    engine.create_account("fresh", AT - 8 * DAY_US)
    for account in ("hot", "fresh"):
        engine.add_grant(account, 10**9 * US_PER_S, "subscription", AT - 8 * DAY_US,
                         grant_id=f"{account}-pro")
    for start in range(0, events, 10_000):
        engine.record_batch([{"id": f"hot-{i}", "account_id": "hot", "model": "demo-small",
                              "input_tokens": 100 + i % 50, "output_tokens": 10,
                              "timestamp": format_instant(AT - DAY_US + i)}
                             for i in range(start, min(events, start + 10_000))], AT)


def _ingest_targets(url: str, events_per_s: float, ratio: float) -> dict[str, bool]:
    if url.startswith("sqlite"):
        return {"events_per_s >= 50000": events_per_s >= 50_000, "ratio <= 2": ratio <= 2}
    return {"events_per_s >= 20000": events_per_s >= 20_000, "ratio <= 3": ratio <= 3}


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    events_path = events_file(args.events, args.accounts)
    engine_url = fresh_database(args.db, "ingest-engine")
    baseline_url = fresh_database(args.db, "ingest-baseline")
    setup_engine(engine_url, args.accounts).store.close()
    engine_run = _in_process(_engine_phase, engine_url, str(events_path), args.batch)
    baseline_run = _in_process(_baseline_phase, baseline_url, str(events_path), args.batch)
    checker = Engine(SqlStore(engine_url))
    violations = checker.check_invariants()
    _hot_account(engine_url, args.history)
    hot_ms, hot_cli_ms = _time_balance(engine_url, "hot")
    fresh_ms, fresh_cli_ms = _time_balance(engine_url, "fresh")
    violations += checker.check_invariants()
    events_per_s = args.events / engine_run["seconds"]
    baseline_rows_per_s = args.events / baseline_run["seconds"]
    return {
        "benchmark": "ingest",
        "db": "sqlite" if engine_url.startswith("sqlite") else engine_url.split(":")[0],
        "events": args.events, "accounts": args.accounts, "batch_size": args.batch,
        "engine_seconds": round(engine_run["seconds"], 3),
        "baseline_seconds": round(baseline_run["seconds"], 3),
        "events_per_s": round(events_per_s),
        "baseline_rows_per_s": round(baseline_rows_per_s),
        "ratio": round(engine_run["seconds"] / baseline_run["seconds"], 3),
        "charged": engine_run["charged"], "rejected": engine_run["rejected"],
        "peak_rss_mb": round(engine_run["peak_rss_mb"], 1),
        "baseline_peak_rss_mb": round(baseline_run["peak_rss_mb"], 1),
        f"balance_ms_with_{args.history}_events": round(hot_ms, 3),
        "balance_ms_fresh_account": round(fresh_ms, 3),
        f"balance_cli_ms_with_{args.history}_events": round(hot_cli_ms, 1),
        "balance_cli_ms_fresh_account": round(fresh_cli_ms, 1),
        "reconcile_ok": not violations,
        "targets": _ingest_targets(engine_url, events_per_s, engine_run["seconds"] / baseline_run["seconds"]),
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }


# -- allowances and limits (SPEC §12) on the charging path and on the balance read ----------------

def copy_database(server: str | None, template: str, name: str) -> str:
    """A copy of the database ``template`` (a closed SQLite file, or on PostgreSQL a database
    nothing is connected to) under a fresh name."""
    if server is None or server.startswith("sqlite"):
        target = fresh_sqlite(f"{name}.db")
        source = template.removeprefix("sqlite:///")
        for suffix in ("", "-wal"):
            if Path(source + suffix).exists():
                shutil.copyfile(source + suffix, target.removeprefix("sqlite:///") + suffix)
        return target
    import sqlalchemy as sa

    from creditmeter.store.sql import _driver_url

    admin = sa.create_engine(_driver_url(server), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    database = f"creditmeter_bench_{name}".replace("-", "_")
    source_db = sa.engine.make_url(template).database
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}" TEMPLATE "{source_db}"')
    admin.dispose()
    return sa.engine.make_url(server).set(database=database).render_as_string(hide_password=False)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


ALERT_RULES = [{"usage_reached_percent": 50}, {"balance_below": 8000}]  # both crossed by some accounts


def ingest_alerts(args: argparse.Namespace) -> dict[str, Any]:
    """The same event file charged to the same subscribed accounts (``TERMS_PLANS``) by an engine
    with no alert rule and by one with the two of ``ALERT_RULES``, in alternating repetitions, each
    on a fresh copy of the database and in a process of its own."""
    WORK.mkdir(parents=True, exist_ok=True)
    events_path = events_file(args.events, args.accounts)
    template = fresh_database(args.db, "ingest-alerts-template")
    setup_engine(template, args.accounts, terms=True).store.close()
    seconds: dict[str, list[float]] = {"none": [], "rules": []}
    cpu: dict[str, list[float]] = {"none": [], "rules": []}
    raised: dict[str, int] = {}
    for rep in range(args.repeat):
        for variant in ("none", "rules") if rep % 2 == 0 else ("rules", "none"):
            url = copy_database(args.db, template, f"ingest-alerts-{variant}")
            run = _in_process(_engine_phase_rules, url, str(events_path), args.batch, variant == "rules")
            seconds[variant].append(run["seconds"])
            cpu[variant].append(run["cpu_seconds"])
            raised[variant] = run["alerts"]
            print(f"  run {rep + 1} {variant}: {run['seconds']:.2f} s ({run['cpu_seconds']:.2f} s CPU, "
                  f"{run['alerts']} alerts)", flush=True)
    none, rules = statistics.median(seconds["none"]), statistics.median(seconds["rules"])
    return {
        "benchmark": "ingest-alerts",
        "db": "sqlite" if template.startswith("sqlite") else "postgresql",
        "events": args.events, "accounts": args.accounts, "batch_size": args.batch, "repeat": args.repeat,
        "rules": ALERT_RULES, "alerts_raised": raised,
        "none_seconds": _spread(seconds["none"]), "rules_seconds": _spread(seconds["rules"]),
        "none_events_per_s": round(args.events / none), "rules_events_per_s": round(args.events / rules),
        "ratio_rules_to_none": round(rules / none, 3),
        "none_cpu_seconds": _spread(cpu["none"]), "rules_cpu_seconds": _spread(cpu["rules"]),
        "cpu_ratio_rules_to_none": round(statistics.median(cpu["rules"]) / statistics.median(cpu["none"]), 3),
        "targets": {"rules within 10% of none (CPU)":
                    statistics.median(cpu["rules"]) <= 1.1 * statistics.median(cpu["none"])},
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }


def ingest_terms(args: argparse.Namespace) -> dict[str, Any]:
    """The same event file charged to the same accounts without and with terms (a subscription
    to the plan ``--plan`` names in ``PLANS`` on every account), in alternating repetitions, each
    on a fresh copy of its variant's database and in a process of its own."""
    WORK.mkdir(parents=True, exist_ok=True)
    events_path = events_file(args.events, args.accounts)
    templates = {}
    for variant in ("plain", "terms"):
        templates[variant] = fresh_database(args.db, f"ingest-{variant}-template")
        setup_engine(templates[variant], args.accounts, terms=variant == "terms",
                     plans=PLANS[args.plan]).store.close()
    seconds: dict[str, list[float]] = {"plain": [], "terms": []}
    cpu: dict[str, list[float]] = {"plain": [], "terms": []}  # the importing process's own CPU time
    runs: dict[str, dict[str, Any]] = {}
    urls: dict[str, str] = {}
    for rep in range(args.repeat):
        for variant in ("plain", "terms") if rep % 2 == 0 else ("terms", "plain"):
            urls[variant] = copy_database(args.db, templates[variant], f"ingest-{variant}")
            runs[variant] = _in_process(_engine_phase, urls[variant], str(events_path), args.batch)
            seconds[variant].append(runs[variant]["seconds"])
            cpu[variant].append(runs[variant]["cpu_seconds"])
            print(f"  run {rep + 1} {variant}: {runs[variant]['seconds']:.2f} s "
                  f"({runs[variant]['cpu_seconds']:.2f} s CPU)", flush=True)
    violations = [v for url in urls.values() for v in Engine(SqlStore(url)).check_invariants()]
    made = _terms_packages(urls["terms"])
    plain, terms = statistics.median(seconds["plain"]), statistics.median(seconds["terms"])
    ratio = terms / plain
    return {
        "benchmark": "ingest-terms" if args.plan == "full" else f"ingest-terms-{args.plan}",
        "plan": args.plan,
        "db": "sqlite" if urls["plain"].startswith("sqlite") else "postgresql",
        "events": args.events, "accounts": args.accounts, "batch_size": args.batch, "repeat": args.repeat,
        "plain_seconds": _spread(seconds["plain"]), "terms_seconds": _spread(seconds["terms"]),
        "plain_events_per_s": round(args.events / plain), "terms_events_per_s": round(args.events / terms),
        "ratio_terms_to_plain": round(ratio, 3),
        "pair_ratios": [round(t / p, 3) for p, t in zip(seconds["plain"], seconds["terms"], strict=True)],
        "plain_cpu_seconds": _spread(cpu["plain"]), "terms_cpu_seconds": _spread(cpu["terms"]),
        "cpu_ratio_terms_to_plain": round(statistics.median(cpu["terms"])
                                          / statistics.median(cpu["plain"]), 3),
        "charged": [runs["plain"]["charged"], runs["terms"]["charged"]],
        "rejected": [runs["plain"]["rejected"], runs["terms"]["rejected"]],
        "packages_made_by_terms": made,
        "peak_rss_mb": [round(runs["plain"]["peak_rss_mb"], 1), round(runs["terms"]["peak_rss_mb"], 1)],
        "reconcile_ok": not violations,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": {"terms within 10% of plain": ratio <= 1.10},
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }


def _terms_packages(url: str) -> dict[str, int]:
    """How many packages the terms made (period packages and rollovers), over all accounts."""
    store = SqlStore(url)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT substr(id, 1, 4), count(*) FROM grants "
                                    "WHERE substr(id, 1, 4) IN ('sub:', 'rol:') GROUP BY substr(id, 1, 4)")
        found = {str(r[0]): int(r[1]) for r in rows}
    store.close()
    return {"period packages": found.get("sub:", 0), "rollovers": found.get("rol:", 0)}


HISTORY_DAYS = 35
RECENT = 300  # events in the last 24 hours, the same on every account


def _history(size: int, seed: int) -> list[int]:
    """``size`` event times, oldest first: the last day's ``RECENT`` (the same for every size),
    the rest spread over the ``HISTORY_DAYS`` before it."""
    rng = random.Random(seed)
    recent = sorted(AT - 1 - rng.randrange(DAY_US) for _ in range(min(size, RECENT)))
    older = sorted(AT - DAY_US - 1 - rng.randrange((HISTORY_DAYS - 1) * DAY_US)
                   for _ in range(size - len(recent)))
    return older + recent


def _record_history(engine: Engine, account: str, times: list[int]) -> None:
    """Charge events at ``times`` (oldest first) as they would have come: each batch at its
    newest event's time, no batch spanning more than a day or 5,000 events."""
    batch: list[dict[str, Any]] = []
    for i, ts in enumerate(times):
        if batch and (len(batch) == 5_000 or ts - parse_instant(batch[0]["timestamp"], "t") > DAY_US):
            engine.record_batch(batch, parse_instant(batch[-1]["timestamp"], "t"))
            batch = []
        batch.append({"id": f"{account}-{i}", "account_id": account, "model": MODELS[i % len(MODELS)],
                      "input_tokens": 200 + i % 1_000, "output_tokens": 50 + i % 300,
                      "timestamp": format_instant(ts)})
    if batch:
        engine.record_batch(batch, parse_instant(batch[-1]["timestamp"], "t"))


def _query_plans(engine: Engine, account: str) -> dict[str, list[str]]:
    """Every statement one balance read sends, with how the database answers it (EXPLAIN on
    PostgreSQL, EXPLAIN QUERY PLAN on SQLite): the limits' windows must be index ranges, not
    scans of the account's history. The statements are recorded from the read itself."""
    from creditmeter.store.driver import DriverTransaction

    sent: list[tuple[str, tuple[Any, ...]]] = []
    fetch, fetch_all = DriverTransaction._fetch, DriverTransaction._fetch_all

    def record_one(self: DriverTransaction, sql: str, params: Any) -> list[Any]:
        sent.append((sql, tuple(params)))
        return fetch(self, sql, params)

    def record_all(self: DriverTransaction, queries: Any) -> list[list[Any]]:
        sent.extend((sql, tuple(params)) for sql, params in queries)
        return fetch_all(self, queries)

    DriverTransaction._fetch, DriverTransaction._fetch_all = record_one, record_all  # type: ignore[method-assign]
    try:
        engine.balance(account, AT)
    finally:
        DriverTransaction._fetch, DriverTransaction._fetch_all = fetch, fetch_all  # type: ignore[method-assign]
    sqlite = engine.store.url.startswith("sqlite")
    out: dict[str, list[str]] = {}
    raw = engine.store.engine.raw_connection()  # type: ignore[attr-defined]
    try:
        cur = raw.cursor()
        for sql, params in sent:
            cur.execute(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, params)
            out[" ".join(sql.split())[:160]] = [str(row[-1] if sqlite else row[0]) for row in cur.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    return out


def balance_bench(args: argparse.Namespace) -> dict[str, Any]:
    """``engine.balance`` (what the API's balance route serves) on accounts subscribed to
    ``TERMS_PLANS`` with 0 to 100,000 events of history: the same last day on each, the rest
    spread over five weeks before it. Reads of the accounts take turns, round by round."""
    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "balance")
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    start = AT - (HISTORY_DAYS + 2) * DAY_US
    engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start)
    engine.load_plans(parse_plans(load_yaml(TERMS_PLANS)), start)
    sizes = [0, *args.sizes]
    for size in sizes:
        account = f"hist-{size}"
        engine.create_account(account, start)
        engine.subscribe(account, "bench-plus", start, subscription_id=f"{account}-plus")
        engine.add_grant(account, 10**9 * US_PER_S, "package", start, grant_id=f"{account}-pack")
        _record_history(engine, account, _history(size, seed=size))
    engine.store.close()
    engine = Engine(SqlStore(url))
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    for size in sizes:
        engine.balance(f"hist-{size}", AT)  # warm
    for _ in range(args.rounds):
        for size in sizes:
            t = time.perf_counter()
            engine.balance(f"hist-{size}", AT)
            samples[size].append((time.perf_counter() - t) * 1000)
    shown = engine.balance(f"hist-{sizes[-1]}", AT)
    medians = {size: statistics.median(samples[size]) for size in sizes}
    smallest = medians[sizes[1]] if len(sizes) > 1 else medians[0]
    growth = medians[sizes[-1]] / smallest
    result = {
        "benchmark": "balance", "db": "sqlite" if url.startswith("sqlite") else "postgresql",
        "history_days": HISTORY_DAYS, "events_in_last_day": RECENT, "rounds": args.rounds,
        **{f"balance_ms_{size}_events": round(medians[size], 3) for size in sizes},
        **{f"balance_ms_p90_{size}_events": round(sorted(samples[size])[int(len(samples[size]) * 0.9)], 3)
           for size in sizes},
        "largest_to_smallest": round(growth, 3),
        "packages_on_account": len(shown.packages),
        "limits_shown": [f"{s.rule.describe()}: {s.used_uc / US_PER_S:.2f} used" for s in shown.limits],
        "allowances_shown": len(shown.allowances),
        "query_plans": _query_plans(engine, f"hist-{sizes[-1]}"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "targets": {"flat: largest history within 10% of the smallest": growth <= 1.10},
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }
    engine.store.close()
    return result


def _contention_worker(url: str, label: str, accounts: list[str], pairs: int, seed: int,
                       out: Any) -> None:
    """reserve + settle pairs as fast as one process can, on the given accounts."""
    from creditmeter.engine import Usage

    engine = Engine(SqlStore(url))
    rng = random.Random(seed)
    out.put("ready")
    started = time.perf_counter()
    done = refused = 0
    for i in range(pairs):
        account = rng.choice(accounts)
        hold = engine.reserve(account, 2 * US_PER_S, AT + i, hold_id=f"{label}-{seed}-{i}", ttl_s=60)
        if not hasattr(hold, "parts"):
            refused += 1
            continue
        engine.settle(hold.id, Usage("demo-small", rng.randrange(100, 2_000), rng.randrange(10, 500)),
                      AT + i)
        done += 1
    out.put((done, refused, time.perf_counter() - started))


def _contention_run(url: str, label: str, accounts: list[str], processes: int,
                    pairs: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_contention_worker, args=(url, label, accounts, pairs, seed, queue))
             for seed in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:
        queue.get(timeout=120)  # each worker has imported and connected
    started = time.perf_counter()
    results = [queue.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - started
    for proc in procs:
        proc.join()
    done = sum(r[0] for r in results)
    return {"pairs": done, "refused": sum(r[1] for r in results), "seconds": round(wall, 3),
            "pairs_per_s": round(done / wall)}


def contention(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "contention")
    engine = setup_engine(url, 0)
    spread = [f"spread-{i:03d}" for i in range(100)]
    for account in ["hot", *spread]:
        engine.create_account(account, AT - DAY_US)
        engine.add_grant(account, 10**7 * US_PER_S, "subscription", AT - DAY_US, grant_id=f"{account}-pro")
    engine.store.close()
    hot = _contention_run(url, "hot", ["hot"], args.processes, args.pairs)
    spread_run = _contention_run(url, "spread", spread, args.processes, args.pairs)
    violations = Engine(SqlStore(url)).check_invariants()
    return {
        "benchmark": "contention", "db": "sqlite" if url.startswith("sqlite") else "postgresql",
        "processes": args.processes, "pairs_per_process": args.pairs,
        "hot_pairs_per_s": hot["pairs_per_s"], "hot_seconds": hot["seconds"],
        "spread_pairs_per_s": spread_run["pairs_per_s"], "spread_seconds": spread_run["seconds"],
        "refused": hot["refused"] + spread_run["refused"],
        "reconcile_ok": not violations,
        "targets": {"spread_pairs_per_s >= 1000": spread_run["pairs_per_s"] >= 1000},
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }


# -- api -------------------------------------------------------------------------------------------

ADMIN_KEY = "benchmark-operator-key-" + "b" * 32


class _Load:
    """A minimal keep-alive HTTP/1.1 load generator (asyncio streams).

    Deliberately small: it runs on the same machine as the server, and a full HTTP client library
    would spend more CPU per request than the server does, measuring itself. Every response's
    status is checked; latency is from the first byte sent to the last byte read.
    """

    def __init__(self, port: int) -> None:
        self.port = port

    async def _connection(self, make: Any, until: float, latencies: list[float],
                          errors: list[str]) -> None:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while time.perf_counter() < until:
                request = make()
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors.append((head.split(b"\r\n")[0] + b" " + body[:200]).decode())
        finally:
            writer.close()

    def run(self, make: Any, concurrency: int, seconds: float,
            keep: list[float] | None = None) -> dict[str, Any]:
        """Requests from ``make`` for ``seconds``; ``keep`` collects their latencies too."""
        import asyncio

        latencies: list[float] = []
        errors: list[str] = []

        async def main() -> float:
            until = time.perf_counter() + seconds
            start = time.perf_counter()
            await asyncio.gather(*[self._connection(make, until, latencies, errors)
                                   for _ in range(concurrency)])
            return time.perf_counter() - start

        elapsed = asyncio.run(main())
        if keep is not None:
            keep.extend(latencies)
            if errors:
                raise SystemExit(f"errors during a latency round: {errors[0]}")
        return _summary(latencies, elapsed, errors)


def _summary(latencies: list[float], elapsed: float, errors: list[str]) -> dict[str, Any]:
    latencies.sort()
    return {
        "requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "errors": len(errors), "first_error": errors[0] if errors else None,
    }


def _request(method: str, path: str, key: str, body: bytes = b"", *, anthropic: bool = False) -> bytes:
    """One request; with ``anthropic``, the key and version headers Anthropic's clients send."""
    auth = (f"x-api-key: {key}\r\nanthropic-version: 2023-06-01" if anthropic
            else f"Authorization: Bearer {key}")
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(command: list[str], log_name: str, ready_path: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command`` (given ``--port N`` at the end) and wait until ``ready_path`` answers."""
    import os
    import urllib.error
    import urllib.request

    port = _free_port()
    env = {**os.environ, "CREDITMETER_ADMIN_KEY": ADMIN_KEY,
           "PYTHONPATH": f"{ROOT.parent / 'src'}:{ROOT.parent}"}
    log = (WORK / log_name).open("wb")
    proc = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT.parent)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
                return proc, port
        except urllib.error.HTTPError:
            return proc, port  # it answers
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{command} did not start: {(WORK / log_name).read_text()}")


def _start_server(url: str, workers: int, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    return _start([sys.executable, "-m", "creditmeter.cli", "serve", "--db", url, "--workers", str(workers),
                   "--no-access-log", *extra], "serve.log", "/healthz")


def api(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "api")
    engine = setup_engine(url, args.accounts)
    now_us = time.time_ns() // 1000
    keys = [engine.create_key(f"acct-{a:05d}", now_us)[1] for a in range(args.accounts)]
    history = [{"id": f"seed-{a}-{i}", "account_id": f"acct-{a:05d}", "model": MODELS[i % len(MODELS)],
                "input_tokens": 1_000 + i, "output_tokens": 200} for a in range(args.accounts)
               for i in range(args.history)]
    for start in range(0, len(history), 5_000):
        engine.record_batch(history[start:start + 5_000], now_us)
    engine.store.close()
    proc, port = _start_server(url, args.workers)
    try:
        load = _Load(port)
        rng = random.Random(3)
        paths = [(f"/api/accounts/acct-{a:05d}/balance", keys[a]) for a in range(args.accounts)]

        def balance() -> bytes:
            path, key = rng.choice(paths)
            return _request("GET", path, key)

        counter = iter(range(10**9))

        def usage() -> bytes:
            event = {"id": f"bench-{next(counter)}", "account_id": f"acct-{rng.randrange(args.accounts):05d}",
                     "model": rng.choice(MODELS), "input_tokens": rng.randrange(200, 20_000),
                     "output_tokens": rng.randrange(50, 3_000)}
            return _request("POST", "/api/usage", ADMIN_KEY, orjson.dumps({"events": [event]}))

        load.run(balance, args.concurrency, 1.0)  # warm-up
        reads = load.run(balance, args.concurrency, args.seconds)
        posts = load.run(usage, args.concurrency, args.seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    violations = Engine(SqlStore(url)).check_invariants()
    return {
        "benchmark": "api", "db": "sqlite" if url.startswith("sqlite") else "postgresql",
        "workers": args.workers, "concurrency": args.concurrency, "accounts": args.accounts,
        "events_per_account": args.history,
        "balance_reads_per_s": reads["requests_per_s"], "balance_p50_ms": reads["p50_ms"],
        "balance_p99_ms": reads["p99_ms"], "balance_errors": reads["errors"],
        "usage_posts_per_s": posts["requests_per_s"], "usage_p50_ms": posts["p50_ms"],
        "usage_p99_ms": posts["p99_ms"], "usage_errors": posts["errors"],
        "first_error": reads["first_error"] or posts["first_error"],
        "reconcile_ok": not violations,
        "targets": {"balance_reads_per_s >= 1500": reads["requests_per_s"] >= 1500,
                    "balance_p99_ms <= 20": reads["p99_ms"] <= 20,
                    "no errors": not reads["errors"] and not posts["errors"]},
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
    }


# -- gateway ---------------------------------------------------------------------------------------

ROUNDS = 10  # the latency phases take turns in this many rounds
GATEWAY_PRICES = ("models:\n  fake-model:\n    input: 50\n    output: 200\n"
                  "  claude-bench:\n    input: 50\n    output: 200\n    cached_input: 5\n")


def gateway(args: argparse.Namespace) -> dict[str, Any]:
    """The same chat request straight to the local upstream and through the gateway (credits
    enforced: reserve, forward, settle), on one machine, and the same for an Anthropic Messages
    request: requests/s at concurrency 16, and latency at concurrency 1 (the phases taking turns)."""
    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "gateway")
    engine = Engine(SqlStore(url))
    engine.store.upgrade()  # a fresh PostgreSQL database has no schema yet
    now_us = time.time_ns() // 1000
    engine.load_prices(parse_catalog(load_yaml(GATEWAY_PRICES)), now_us - 1, now_us - 1)
    accounts = [f"gw-{a:03d}" for a in range(args.accounts)]
    keys = []
    for account in accounts:
        engine.create_account(account, now_us - 1)
        engine.add_grant(account, 10**6 * US_PER_S, "package", now_us - 1)
        keys.append(engine.create_key(account, now_us - 1)[1])
    engine.store.close()
    upstream, upstream_port = _start([sys.executable, "-m", "tests.gateway.upstream"], "upstream.log",
                                     "/_requests")
    config = WORK / "gateway.yaml"
    config.write_text(f"gateway:\n  models:\n    fake-model:\n"
                      f"      base_url: http://127.0.0.1:{upstream_port}/v1\n"
                      f"    claude-bench:\n      api: anthropic\n      upstream_model: fake-model\n"
                      f"      base_url: http://127.0.0.1:{upstream_port}\n")
    server, port = _start_server(url, 1, "--config", str(config))
    bare, bare_port = _start([sys.executable, str(ROOT / "passthrough.py"), "--upstream",
                              f"http://127.0.0.1:{upstream_port}"], "passthrough.log", "/")
    procs = [server, bare, upstream]
    litellm_port = None
    if args.litellm:
        litellm_port = _free_port()
        procs.append(litellm_proxy.start(args.litellm, upstream_port, litellm_port, WORK))
    else:
        print("LiteLLM's proxy: skipped (no --litellm PATH to its `litellm` command; "
              "see benchmarks/litellm_proxy.py)")
    body = orjson.dumps({"model": "fake-model", "max_tokens": 64,
                         "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": "Say hello in twenty words."}]})
    message = {"model": "", "max_tokens": 64, "system": "You are a helpful assistant.",
               "messages": [{"role": "user", "content": "Say hello in twenty words."}]}
    message_upstream = orjson.dumps({**message, "model": "fake-model"})
    message_gateway = orjson.dumps({**message, "model": "claude-bench"})

    rng = random.Random(5)
    try:
        direct, through, passthrough = _Load(upstream_port), _Load(port), _Load(bare_port)

        def to_upstream() -> bytes:
            return _request("POST", "/v1/chat/completions", "upstream-key", body)

        def to_gateway() -> bytes:
            return _request("POST", "/v1/chat/completions", rng.choice(keys), body)

        def to_litellm() -> bytes:
            return _request("POST", "/v1/chat/completions", litellm_proxy.MASTER_KEY, body)

        def messages_to_upstream() -> bytes:
            return _request("POST", "/v1/messages", "upstream-key", message_upstream, anthropic=True)

        def messages_to_gateway() -> bytes:
            return _request("POST", "/v1/messages", rng.choice(keys), message_gateway, anthropic=True)

        phases = [("direct", direct, to_upstream, upstream), ("passthrough", passthrough, to_upstream, bare),
                  ("gateway", through, to_gateway, server),
                  ("messages_direct", direct, messages_to_upstream, upstream),
                  ("messages_gateway", through, messages_to_gateway, server)]
        if litellm_port is not None:
            phases.insert(3, ("litellm", _Load(litellm_port), to_litellm, procs[-1]))
        for _, load, make, _ in phases:  # warm-up
            load.run(make, args.concurrency, 1.0)
        results = {}
        for name, load, make, proc in phases:
            cpu = litellm_proxy.cpu_seconds(proc.pid)
            rps = load.run(make, args.concurrency, args.seconds)
            used = litellm_proxy.cpu_seconds(proc.pid) - cpu
            rps["cpu_ms_per_request"] = round(used * 1000 / max(1, rps["requests"]), 3)
            results[name] = {"rps": rps}
        # Latency at concurrency 1 in rounds that take turns (each phase a slice of every round),
        # so a machine whose load changes during the run weighs on every phase alike.
        latencies: dict[str, list[float]] = {name: [] for name, _, _, _ in phases}
        for _ in range(ROUNDS):
            for name, load, make, _ in phases:
                load.run(make, 1, args.seconds / ROUNDS, keep=latencies[name])
        for name, _, _, _ in phases:
            results[name]["single"] = _summary(latencies[name], args.seconds, [])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    check = Engine(SqlStore(url))
    violations = check.check_invariants()
    charged = sum(sum(1 for _ in check.usage(a, limit=10**6)) for a in accounts)
    d, g, b = results["direct"], results["gateway"], results["passthrough"]
    md, mg = results["messages_direct"], results["messages_gateway"]
    served = sum(r[k]["requests"] for r in (g, mg) for k in ("rps", "single"))
    result = {
        "benchmark": "gateway", "db": "sqlite" if url.startswith("sqlite") else "postgresql",
        "concurrency": args.concurrency, "accounts": args.accounts,
        "direct_rps": d["rps"]["requests_per_s"], "gateway_rps": g["rps"]["requests_per_s"],
        "rps_ratio": round(g["rps"]["requests_per_s"] / d["rps"]["requests_per_s"], 3),
        "direct_p50_ms": d["single"]["p50_ms"], "direct_p99_ms": d["single"]["p99_ms"],
        "gateway_p50_ms": g["single"]["p50_ms"], "gateway_p99_ms": g["single"]["p99_ms"],
        "added_p50_ms": round(g["single"]["p50_ms"] - d["single"]["p50_ms"], 2),
        "added_p99_ms": round(g["single"]["p99_ms"] - d["single"]["p99_ms"], 2),
        "gateway_p99_ms_at_concurrency": g["rps"]["p99_ms"],
        # The reference: a bare Starlette + httpx pass-through (no keys, no credits) in front of the
        # same upstream, in the same run.
        "passthrough_rps": b["rps"]["requests_per_s"],
        "passthrough_added_p50_ms": round(b["single"]["p50_ms"] - d["single"]["p50_ms"], 2),
        "passthrough_added_p99_ms": round(b["single"]["p99_ms"] - d["single"]["p99_ms"], 2),
        "gateway_vs_passthrough_rps": round(g["rps"]["requests_per_s"] / b["rps"]["requests_per_s"], 3),
        # CPU time of each server process per request at concurrency 16 (a shared machine changes
        # it less than requests/s).
        "gateway_cpu_ms_per_request": g["rps"]["cpu_ms_per_request"],
        "passthrough_cpu_ms_per_request": b["rps"]["cpu_ms_per_request"],
        # The same, for an Anthropic Messages request (``/v1/messages``, the key as ``x-api-key``).
        "messages_direct_rps": md["rps"]["requests_per_s"],
        "messages_gateway_rps": mg["rps"]["requests_per_s"],
        "messages_direct_p50_ms": md["single"]["p50_ms"], "messages_gateway_p50_ms": mg["single"]["p50_ms"],
        "messages_added_p50_ms": round(mg["single"]["p50_ms"] - md["single"]["p50_ms"], 2),
        "messages_added_p99_ms": round(mg["single"]["p99_ms"] - md["single"]["p99_ms"], 2),
        "errors": sum(r[k]["errors"] for r in results.values() for k in r),
        "first_error": next((r[k]["first_error"] for r in results.values() for k in r
                             if r[k]["first_error"]), None),
        "requests_charged": charged, "gateway_requests_served": served,
        "reconcile_ok": not violations,
    }
    if "litellm" in results:  # LiteLLM's proxy in front of the same upstream, in the same run
        lite = results["litellm"]
        result.update({
            "litellm_rps": lite["rps"]["requests_per_s"],
            "litellm_p50_ms": lite["single"]["p50_ms"], "litellm_p99_ms": lite["single"]["p99_ms"],
            "litellm_added_p50_ms": round(lite["single"]["p50_ms"] - d["single"]["p50_ms"], 2),
            "litellm_added_p99_ms": round(lite["single"]["p99_ms"] - d["single"]["p99_ms"], 2),
            "litellm_p99_ms_at_concurrency": lite["rps"]["p99_ms"],
            "litellm_cpu_ms_per_request": lite["rps"]["cpu_ms_per_request"],
            "gateway_vs_litellm_rps": round(g["rps"]["requests_per_s"] / lite["rps"]["requests_per_s"], 2),
        })
    # Warm-up requests were charged too; every answered request is a usage event.
    result["targets"] = {"rps_ratio >= 0.5": result["rps_ratio"] >= 0.5,
                         "added_p50_ms <= 3": result["added_p50_ms"] <= 3,
                         "messages_added_p50_ms <= 3": result["messages_added_p50_ms"] <= 3,
                         "added_p50_ms <= 1": result["added_p50_ms"] <= 1,
                         "added_p99_ms <= 5": result["added_p99_ms"] <= 5,
                         "no errors": not result["errors"]}
    if "gateway_vs_litellm_rps" in result:
        result["targets"]["gateway_vs_litellm_rps >= 5"] = result["gateway_vs_litellm_rps"] >= 5
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = {"python": platform.python_version(), "cpus": mp.cpu_count()}
    return result


def deliveries(args: argparse.Namespace) -> dict[str, Any]:
    from deliveries import run as run_deliveries

    WORK.mkdir(parents=True, exist_ok=True)
    result = run_deliveries(args, fresh_database(args.db, "deliveries"))
    result["machine"] = {"python": platform.python_version(), "cpus": mp.cpu_count()}
    return result


def reads(args: argparse.Namespace) -> dict[str, Any]:
    from reads import run as run_reads

    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "reads")
    start = AT - (HISTORY_DAYS + 2) * DAY_US

    def setup(engine: Engine, account: str, size: int) -> None:
        if size == 0:  # the first account: the prices before any usage
            engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start)
        engine.create_account(account, start)
        engine.add_grant(account, 10**9 * US_PER_S, "package", start, grant_id=f"{account}-pack")
        _record_history(engine, account, _history(size, seed=size))

    result = run_reads(args, url, setup, AT)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = {"python": platform.python_version(), "cpus": mp.cpu_count()}
    return result


def holds(args: argparse.Namespace) -> dict[str, Any]:
    from holds import run as run_holds

    WORK.mkdir(parents=True, exist_ok=True)
    url = fresh_database(args.db, "holds")
    start = AT - DAY_US
    priced = False

    def setup(engine: Engine, account: str) -> None:
        nonlocal priced
        if not priced:
            engine.load_prices(parse_catalog(load_yaml(example_catalog_text())), start, start)
            priced = True
        engine.create_account(account, start)
        engine.add_grant(account, 10**9 * US_PER_S, "package", start, grant_id=f"{account}-pack")

    result = run_holds(args, url, setup, AT)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = {"python": platform.python_version(), "cpus": mp.cpu_count()}
    return result


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"creditmeter benchmark: {result['benchmark']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key in ("benchmark", "targets", "machine"):
            continue
        table.add_row(key, f"{value:,}" if isinstance(value, int | float) and not isinstance(value, bool)
                      else str(value))
    for target, met in result.get("targets", {}).items():
        table.add_row(f"target {target}", "met" if met else "NOT met")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    p = sub.add_parser("ingest", help="batch import through the engine vs bare inserts")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: fresh SQLite files)")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--accounts", type=int, default=1_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--history", type=int, default=100_000, help="events on the hot account")
    p.add_argument("--terms", action="store_true",
                   help="compare the engine without and with a plan's allowances, rollover and limits")
    p.add_argument("--repeat", type=int, default=6, help="with --terms: runs of each variant, alternating")
    p.add_argument("--plan", choices=sorted(PLANS), default="full",
                   help="with --terms: the plan (full: daily and monthly rollovers, a rolling and a calendar "
                        "limit; daily-5h: a daily allowance and a rolling 5h limit)")
    p.add_argument("--alerts", action="store_true",
                   help="the same subscribed accounts charged with no alert rule and with two, alternating")
    p = sub.add_parser("balance", help="the balance read with allowances and limits, by history size")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                   help="events of history on each account")
    p.add_argument("--rounds", type=int, default=300, help="reads of each account, taking turns")
    p = sub.add_parser("contention", help="reserve + settle pairs from many processes")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--pairs", type=int, default=300, help="pairs per process")
    p = sub.add_parser("holds", help="reserve and settle on one account, by its open holds")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1_000],
                   help="open holds on each account (besides an account with none)")
    p.add_argument("--rounds", type=int, default=200, help="reserve + settle pairs on each account")
    p = sub.add_parser("api", help="balance reads and usage posts against a real server")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0, help="per measured phase")
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--history", type=int, default=200, help="events per account before the run")
    p = sub.add_parser("gateway", help="chat requests straight to an upstream and through the gateway")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0, help="per measured phase")
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--litellm", metavar="PATH",
                   help="LiteLLM's `litellm` command (its own virtualenv): measure its proxy too")
    p = sub.add_parser("deliveries", help="alerts delivered to a local webhook receiver by one worker")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--alerts", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--batch", type=int, default=100)
    p = sub.add_parser("reads", help="usage summaries, pages and exports, by history size")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: a fresh SQLite file)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                   help="events of history on each account")
    p.add_argument("--rounds", type=int, default=30, help="reads of each kind on each account")
    p = sub.add_parser("scale", help="ingest, reads and concurrent gateway streams at scale (scale.py)")
    p.add_argument("--db", help="a PostgreSQL server URL to run on (default: fresh SQLite files)")
    p.add_argument("--parts", nargs="+", choices=["ingest", "reads", "streams"],
                   default=["ingest", "reads", "streams"])
    p.add_argument("--events", type=int, default=1_000_000, help="ingest: events in the file")
    p.add_argument("--accounts", type=int, default=10_000, help="ingest: accounts they go to")
    p.add_argument("--batch", type=int, default=5_000, help="ingest: events a transaction")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="reads: history sizes")
    p.add_argument("--rounds", type=int, default=30, help="reads: reads of each kind on each account")
    p.add_argument("--streams", type=int, nargs="+", default=[50, 200, 500], help="streams: N at once")
    p.add_argument("--stream-rounds", type=int, default=2, help="streams: rounds of each way, taking turns")
    p.add_argument("--stream-seconds", type=float, default=2.0, help="streams: each stream's length")
    p.add_argument("--litellm", metavar="PATH", help="streams: LiteLLM's `litellm` command, measured too")
    args = parser.parse_args()
    if args.benchmark == "scale":
        import scale

        scale.main(args)
        return
    run = ingest_alerts if args.benchmark == "ingest" and args.alerts else ingest_terms if (
        args.benchmark == "ingest" and args.terms) else {
        "ingest": ingest, "balance": balance_bench, "contention": contention, "api": api,
        "gateway": gateway, "deliveries": deliveries, "reads": reads, "holds": holds}[args.benchmark]
    result = run(args)
    show(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = result["benchmark"] if result["db"] == "sqlite" else f"{result['benchmark']}-{result['db']}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
