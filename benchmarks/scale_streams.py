"""The ``scale`` benchmark's streams part: N concurrent streamed chat completions through the
gateway (``creditmeter serve`` with a gateway config, one worker), each a stream the local
upstream (``tests/gateway/upstream.py --stream-seconds``) spreads over ~2 s, (a) all on one
account with one key and (b) spread over N accounts with a key each; and, with ``--litellm PATH``,
the same N streams through LiteLLM's proxy in front of the same upstream.

For each N and way, in ``--stream-rounds`` rounds (the ways taking turns, in alternating order):
the first chunk's latency (from the connection's start to the first ``data:`` bytes), p50 and p99
over every stream of the rounds; the time from the first connection to the last stream's end; the
server's CPU per stream (from ``/proc/PID/stat`` of its process and children, before and after);
and the streams that failed. Afterwards, every account must have one usage event per stream that
ended well, no credit left held, and the invariants must hold.

The client is a small asyncio one (raw streams, ``Connection: close``), as run.py's load
generator: a full HTTP client library would spend more CPU per stream than the proxies do.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import orjson

import litellm_proxy
import run as bench
from creditmeter.engine import Engine
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore
from creditmeter.timeutil import US_PER_S

FLAT = 1.2  # "within 20%"
STREAM_TIMEOUT_S = 120
BODY = orjson.dumps({"model": "fake-model", "stream": True, "max_tokens": 64,
                     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "Say hello in twenty words."}]})


def raise_open_files() -> tuple[int, int]:
    """The soft limit on open files raised to the hard one (the servers started after inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def request(key: str, body: bytes = BODY) -> bytes:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _stream(port: int, payload: bytes) -> tuple[float | None, str | None]:
    """One stream to its end: the first chunk's latency (s) and what went wrong, if anything."""
    start = time.perf_counter()
    first: float | None = None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        data = b""
        while piece := await reader.read(65_536):
            if first is None and b"data:" in piece:
                first = time.perf_counter() - start
            data += piece
    finally:
        writer.close()
    status = head.split(b"\r\n", 1)[0].decode()
    if not status.startswith("HTTP/1.1 200"):
        return first, f"{status} {data[:200]!r}"
    if b"[DONE]" not in data and b'"stream":true' in payload or b'"error"' in data:
        return first, f"stream did not end well: {data[-200:]!r}"
    return first, None


def streams(port: int, payloads: list[bytes]) -> tuple[list[float], list[bool], list[str], float]:
    """``payloads`` sent at once, each on a connection of its own: first-chunk latencies, whether
    each stream ended well, the errors, and the seconds from the first start to the last end."""

    async def one(payload: bytes) -> tuple[float | None, str | None]:
        try:
            return await asyncio.wait_for(_stream(port, payload), STREAM_TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            return None, repr(exc)

    async def main() -> list[tuple[float | None, str | None]]:
        return await asyncio.gather(*[one(p) for p in payloads])

    started = time.perf_counter()
    answers = asyncio.run(main())
    seconds = time.perf_counter() - started
    firsts = [first for first, error in answers if first is not None and error is None]
    errors = [error for _, error in answers if error is not None]
    return firsts, [error is None for _, error in answers], errors, seconds


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 2)


class Phase:
    """One way of sending N streams (to one port, one server process), over the rounds."""

    def __init__(self, port: int, pid: int, payloads: list[bytes], accounts: list[str] | None) -> None:
        self.port, self.pid, self.payloads, self.accounts = port, pid, payloads, accounts
        self.firsts: list[float] = []
        self.errors: list[str] = []
        self.cpu_s = self.seconds = 0.0
        self.rounds = 0

    def run(self, ended_well: dict[str, int]) -> None:
        cpu = litellm_proxy.cpu_seconds(self.pid)
        firsts, ok, errors, seconds = streams(self.port, self.payloads)
        time.sleep(0.5)  # what the server still does after the last byte (a settle) counted too
        self.cpu_s += litellm_proxy.cpu_seconds(self.pid) - cpu
        self.firsts += firsts
        self.errors += errors
        self.seconds += seconds
        self.rounds += 1
        if self.accounts is not None:
            for account, good in zip(self.accounts, ok, strict=True):
                ended_well[account] = ended_well.get(account, 0) + good

    def figures(self) -> dict[str, Any]:
        count = self.rounds * len(self.payloads)
        return {"first_chunk_p50_ms": _percentile(self.firsts, 0.5),
                "first_chunk_p99_ms": _percentile(self.firsts, 0.99),
                "seconds": round(self.seconds / max(1, self.rounds), 2),
                "cpu_ms_per_stream": round(self.cpu_s * 1000 / max(1, count), 2),
                "errors": len(self.errors), "first_error": self.errors[0] if self.errors else None}


def _setup(url: str, spread: int) -> tuple[str, list[str]]:
    """The prices, an account ``scale-one`` and ``spread`` accounts ``scale-NNN``, a key each and
    credits for far more than the run."""
    engine = Engine(SqlStore(url))
    engine.store.upgrade()
    now_us = time.time_ns() // 1000
    engine.load_prices(parse_catalog(load_yaml(bench.GATEWAY_PRICES)), now_us - 1, now_us - 1)
    keys = []
    for account in ["scale-one", *(f"scale-{a:03d}" for a in range(spread))]:
        engine.create_account(account, now_us - 1)
        engine.add_grant(account, 10**7 * US_PER_S, "package", now_us - 1)
        keys.append(engine.create_key(account, now_us - 1)[1])
    engine.store.close()
    return keys[0], keys[1:]


def _charged_once(url: str, ended_well: dict[str, int], wait_s: float = 30) -> dict[str, Any]:
    """Each account's usage events against its streams that ended well (waiting a while for
    settles kept to retry), credit still held, and the invariants."""
    engine = Engine(SqlStore(url))
    deadline = time.monotonic() + wait_s
    while True:
        counts = {a: sum(1 for _ in engine.usage(a)) for a in ended_well}
        wrong = {a: (counts[a], n) for a, n in ended_well.items() if counts[a] != n}
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(1)
    held = sum(engine.balance(a, time.time_ns() // 1000).held_uc for a in ended_well)
    violations = engine.check_invariants()
    engine.store.close()
    return {"streams_ended_well": sum(ended_well.values()), "usage_events": sum(counts.values()),
            "accounts_charged_wrongly": len(wrong),
            "first_wrong": str(next(iter(wrong.items()))) if wrong else None,
            "credits_left_held_uc": held, "reconcile_ok": not violations,
            "first_violation": violations[0] if violations else None}


def _servers(args: argparse.Namespace, url: str) -> tuple[list[Any], int, int, int | None]:
    """The paced upstream, the gateway in front of it, and LiteLLM's proxy when asked for."""
    command = [sys.executable, "-m", "tests.gateway.upstream", "--stream-seconds", str(args.stream_seconds)]
    upstream, upstream_port = bench._start(command, "scale-upstream.log", "/_requests")
    config = bench.WORK / "scale-gateway.yaml"
    config.write_text(f"gateway:\n  models:\n    fake-model:\n"
                      f"      base_url: http://127.0.0.1:{upstream_port}/v1\n")
    server, port = bench._start_server(url, 1, "--config", str(config))
    procs = [server, upstream]
    litellm_port = None
    if args.litellm:
        litellm_port = bench._free_port()
        procs.append(litellm_proxy.start(args.litellm, upstream_port, litellm_port, bench.WORK))
    else:
        print("LiteLLM's proxy: skipped (no --litellm PATH to its `litellm` command; "
              "see benchmarks/litellm_proxy.py)")
    return procs, port, upstream_port, litellm_port


def _measure(args: argparse.Namespace, procs: list[Any], port: int, litellm_port: int | None,
             one_key: str, spread_keys: list[str], ended_well: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in args.streams:
        phases = {"one": Phase(port, procs[0].pid, [request(one_key)] * n, ["scale-one"] * n),
                  "spread": Phase(port, procs[0].pid, [request(k) for k in spread_keys[:n]],
                                  [f"scale-{a:03d}" for a in range(n)])}
        if litellm_port is not None:
            phases["litellm"] = Phase(litellm_port, procs[-1].pid,
                                      [request(litellm_proxy.MASTER_KEY)] * n, None)
        for r in range(args.stream_rounds):
            for phase in (list(phases.values()) if r % 2 == 0 else list(phases.values())[::-1]):
                phase.run(ended_well)
        for name, phase in phases.items():
            out.update({f"n{n}_{name}_{k}": v for k, v in phase.figures().items()})
        for what in ("cpu_ms_per_stream", "first_chunk_p50_ms"):
            one, spread = out[f"n{n}_one_{what}"], out[f"n{n}_spread_{what}"]
            out[f"n{n}_one_to_spread_{what}"] = round(one / spread, 3) if one and spread else None
            if litellm_port is not None and out[f"n{n}_litellm_{what}"]:
                out[f"n{n}_litellm_to_spread_{what}"] = round(out[f"n{n}_litellm_{what}"] / spread, 3)
    return out


def _warm(port: int, pid: int, one_key: str, spread_keys: list[str], ended_well: dict[str, int]) -> Phase:
    """Every key used once, by a request that is not streamed (50 at a time), so that no way
    pays for a key's first use; then 5 streams on each way."""
    plain = orjson.dumps({**orjson.loads(BODY), "stream": False})
    accounts = [f"scale-{a:03d}" for a in range(len(spread_keys))]
    for start in range(0, len(spread_keys), 50):
        Phase(port, pid, [request(k, plain) for k in spread_keys[start:start + 50]],
              accounts[start:start + 50]).run(ended_well)
    warm = Phase(port, pid, [request(one_key)] * 5 + [request(k) for k in spread_keys[:5]],
                 ["scale-one"] * 5 + accounts[:5])
    warm.run(ended_well)
    return warm


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench.WORK.mkdir(parents=True, exist_ok=True)
    soft, _ = raise_open_files()
    url = bench.fresh_database(args.db, "scale-streams")
    one_key, spread_keys = _setup(url, max(args.streams))
    ended_well: dict[str, int] = {}
    procs, port, _, litellm_port = _servers(args, url)
    try:
        warm = _warm(port, procs[0].pid, one_key, spread_keys, ended_well)
        if litellm_port is not None:
            Phase(litellm_port, procs[-1].pid, [request(litellm_proxy.MASTER_KEY)] * 5, None).run({})
        result: dict[str, Any] = {"streams": args.streams, "rounds": args.stream_rounds,
                                  "stream_seconds": args.stream_seconds, "open_files_limit": soft,
                                  "warm_up_errors": len(warm.errors)}
        result.update(_measure(args, procs, port, litellm_port, one_key, spread_keys, ended_well))
        result.update(_charged_once(url, ended_well))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    n = max(args.streams)
    errors = sum(v for k, v in result.items() if k.endswith("_errors") and "litellm" not in k)
    result["targets"] = {
        f"{n} streams on one account: CPU per stream within 20% of spread":
            (result[f"n{n}_one_to_spread_cpu_ms_per_stream"] or 99) <= FLAT,
        f"{n} streams on one account: first-chunk p50 within 20% of spread":
            (result[f"n{n}_one_to_spread_first_chunk_p50_ms"] or 99) <= FLAT,
        "no gateway errors": not errors,
        "every stream charged exactly once": not result["accounts_charged_wrongly"]
        and result["credits_left_held_uc"] == 0 and result["reconcile_ok"]}
    return result
