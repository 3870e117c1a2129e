"""The stream benchmark: ``python benchmarks/stream.py [--db URL] [--events N] [--profile]``.

The same events — a tenth of them sent twice, one in a hundred invalid — are charged on fresh
PostgreSQL databases four ways, in one run: ``creditmeter usage import`` of them as a JSONL file
(batches of 5,000 and of 500), and ``creditmeter consume`` from a NATS JetStream stream with one and
with three consumer processes (batches of 500). Each run is checked: every valid event charged once,
each account's total equal to the one computed here from the price table (exact decimals, not the
engine's rating), every invalid one rejected (dead-lettered), the invariants holding.

A consumer's rate is the messages over the time from its first charge to its last (its start-up
is not counted; the import's time is its own ``seconds``, also without start-up). ``--profile``
also runs one consumer under cProfile and prints where its time goes. The NATS server is started
here (``nats-server`` on PATH). Prints a table and writes ``benchmarks/results/stream-postgresql.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import pstats
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from creditmeter.engine import Engine  # noqa: E402
from creditmeter.pricing import parse_catalog  # noqa: E402
from creditmeter.store.sql import SqlStore, _driver_url  # noqa: E402
from run import fresh_database  # noqa: E402

PRICES = {"small": {"input": "0.15", "output": "0.6"}, "odd": {"input": "3.333333", "output": "13.000007"},
          "big": {"input": "15", "output": "75"}}
CREDITMETER = [sys.executable, "-m", "creditmeter"]


def cost_uc(event: dict[str, Any]) -> int:
    """A price per 1M tokens is µc per token: Σ tokens × price, rounded up once per event."""
    price = PRICES[event["model"]]
    exact = (Decimal(event["input_tokens"]) * Decimal(price["input"])
             + Decimal(event["output_tokens"]) * Decimal(price["output"]))
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def make_events(count: int, accounts: int, seed: int) -> tuple[list[bytes], dict[str, int], int]:
    """The messages in order, the expected total per account, and how many are invalid."""
    rng = random.Random(seed)
    now = time.time()
    invalid = count // 100
    valid = [{"id": f"ev-{i:08d}", "account_id": f"acct-{rng.randrange(accounts):05d}",
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                         time.gmtime(now - rng.randrange(60, 6 * 3600))),
              "model": rng.choice(list(PRICES)), "input_tokens": rng.randint(1, 8_000),
              "output_tokens": rng.randint(0, 3_000)} for i in range((count - invalid) * 10 // 11)]
    messages = [orjson.dumps(e) for e in valid]
    messages += [orjson.dumps(e) for e in rng.sample(valid, count - invalid - len(valid))]
    messages += [orjson.dumps({**valid[i], "id": f"bad-{i}", "model": "no-such-model"})
                 for i in range(invalid)]
    rng.shuffle(messages)
    totals: dict[str, int] = {}
    for e in valid:
        totals[e["account_id"]] = totals.get(e["account_id"], 0) + cost_uc(e)
    return messages, totals, invalid


def setup(url: str, accounts: int) -> None:
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    start = (int(time.time()) - 86400) * 1_000_000
    engine.load_prices(parse_catalog({"models": PRICES}), start, start)
    for a in range(accounts):
        engine.create_account(f"acct-{a:05d}", start)
        engine.add_grant(f"acct-{a:05d}", 10**6 * 10**6, "addon", start, grant_id=f"acct-{a:05d}-addon")
    engine.store.close()


def verify(url: str, totals: dict[str, int]) -> dict[str, Any]:
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    with db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT account_id, count(*), sum(cost_uc), count(DISTINCT id) "
                                    "FROM events GROUP BY account_id").all()
    db.dispose()
    engine = Engine(SqlStore(url))
    problems = engine.check_invariants()
    engine.store.close()
    found = {r[0]: int(r[2]) for r in rows}
    once = all(r[1] == r[3] for r in rows)
    return {"exactly_once": once and found == totals, "charged": sum(int(r[1]) for r in rows),
            "reconcile_ok": problems == []}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count_events(url: str) -> int:
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    with db.connect() as conn:
        n = int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one())
    db.dispose()
    return n


def import_run(server: str, messages: list[bytes], totals: dict[str, int], accounts: int, batch: int,
               work: Path) -> dict[str, Any]:
    url = fresh_database(server, f"stream_import_{batch}")
    setup(url, accounts)
    path = work / "events.jsonl"
    path.write_bytes(b"\n".join(messages) + b"\n")
    done = subprocess.run([*CREDITMETER, "usage", "import", str(path), "--db", url, "--json",
                           "--batch-size", str(batch)], capture_output=True, text=True, check=False)
    summary = json.loads(done.stdout)
    return {"events_per_s": round(len(messages) / summary["seconds"]), "seconds": summary["seconds"],
            "rejected": summary["rejected"], **verify(url, totals)}


async def publish(url: str, stream: str, subject: str, messages: list[bytes]) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    started = time.perf_counter()
    pending = []
    for data in messages:
        pending.append(await js.publish_async(subject, data, wait_stall=30.0))
        if len(pending) >= 5_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    seconds = time.perf_counter() - started
    await nc.close()
    return seconds


def consume_run(server: str, nats_url: str, messages: list[bytes], totals: dict[str, int], accounts: int,
                consumers: int, batch: int, work: Path, profile: bool = False) -> dict[str, Any]:
    name = f"B{consumers}{'P' if profile else ''}"
    url = fresh_database(server, f"stream_consume_{name}")
    setup(url, accounts)
    publish_s = asyncio.run(publish(nats_url, name, f"{name.lower()}.events", messages))
    expected = len(set(messages)) - len(messages) // 100  # the valid events, once each
    prefix = [sys.executable, "-m", "cProfile", "-o", str(work / "consumer.prof"), "-m", "creditmeter"]
    command = [*(prefix if profile else CREDITMETER), "consume", nats_url, "--stream", name,
               "--subject", f"{name.lower()}.events", "--durable", "bench", "--dead-letter",
               f"dead.{name.lower()}", "--db", url, "--batch-size", str(batch), "--idle-exit", "2",
               "--progress", "0", "--json"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(consumers)]
    first = last = None
    while True:
        n = count_events(url)
        now = time.perf_counter()
        if n and first is None:
            first = now
        if n >= expected:
            last = now
            break
        if all(p.poll() is not None for p in procs):
            raise SystemExit(f"consumers stopped at {n}/{expected}: {[p.stderr.read() for p in procs]}")
        time.sleep(0.02)
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert first is not None and last is not None
    seconds = {k: round(sum(o["seconds"].get(k, 0) for o in outs), 2) for k in outs[0]["seconds"]}
    return {"events_per_s": round(len(messages) / (last - first)), "seconds": round(last - first, 2),
            "publish_per_s": round(len(messages) / publish_s),
            "dead_lettered": sum(o["dead_lettered"] for o in outs),
            "duplicate": sum(o["duplicate"] for o in outs), "consumer_seconds_by_phase": seconds,
            **verify(url, totals)}


def profile_summary(path: Path, top: int = 14) -> list[str]:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return [line for line in out.getvalue().splitlines() if line.strip()][-top - 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=os.environ.get("CREDITMETER_TEST_PG",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    messages, totals, invalid = make_events(args.events, args.accounts, 11)
    work = Path(tempfile.mkdtemp(prefix="cm-bench-stream-"))
    port = free_port()
    server = subprocess.Popen([shutil.which("nats-server") or "nats-server", "-js", "-a", "127.0.0.1",
                               "-p", str(port), "-sd", str(work / "nats")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nats_url = f"nats://127.0.0.1:{port}"
    time.sleep(0.5)
    try:
        result: dict[str, Any] = {"benchmark": "stream", "db": "postgresql", "events": args.events,
                                  "invalid": invalid, "accounts": args.accounts, "batch_size": args.batch}
        result["import_5000"] = import_run(args.db, messages, totals, args.accounts, 5_000, work)
        result["import_500"] = import_run(args.db, messages, totals, args.accounts, 500, work)
        for n in (1, 3):
            result[f"consume_{n}"] = consume_run(args.db, nats_url, messages, totals, args.accounts, n,
                                                 args.batch, work)
        if args.profile:
            consume_run(args.db, nats_url, messages, totals, args.accounts, 1, args.batch, work, profile=True)
            result["profile_1_consumer_top_tottime"] = profile_summary(work / "consumer.prof")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    show(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream-postgresql.json").write_text(json.dumps(result, indent=2) + "\n")


def show(result: dict[str, Any]) -> None:
    print(f"{result['events']:,} events ({result['invalid']:,} invalid, a tenth sent twice), "
          f"{result['accounts']:,} accounts, PostgreSQL")
    print(f"{'run':<28}{'events/s':>10}{'seconds':>10}  exactly once  reconcile")
    runs = (("import_5000", "usage import (batch 5,000)"), ("import_500", "usage import (batch 500)"),
            ("consume_1", "consume, 1 process"), ("consume_3", "consume, 3 processes"))
    for key, label in runs:
        r = result[key]
        print(f"{label:<28}{r['events_per_s']:>10,}{r['seconds']:>10}  {r['exactly_once']!s:<12}  "
              f"{r['reconcile_ok']}")
    for n in (1, 3):
        phases = result[f"consume_{n}"]["consumer_seconds_by_phase"]
        print(f"consume, {n}: time by phase (summed over processes): {phases}")
    for line in result.get("profile_1_consumer_top_tottime", []):
        print(line)


if __name__ == "__main__":
    main()
