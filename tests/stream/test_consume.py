"""Three ``creditmeter consume`` processes share one durable JetStream consumer on PostgreSQL.

Thousands of events are published, a tenth of them twice and one in a hundred invalid (bad JSON,
an unknown model, a timestamp older than the lateness window). Every valid event is charged
exactly once, at the cost computed here from the price table (not through the engine's rating);
every invalid one is in the dead-letter subject with the field and reason of its rejection;
``creditmeter reconcile`` finds nothing wrong; and the metrics port serves Prometheus text.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from pathlib import Path

from tests import forked
from tests.concurrency.prices import expected_cost_uc
from tests.stream.conftest import Ledger, start_consumer, stop
from tests.stream.harness import (
    NatsServer,
    expected_totals,
    free_port,
    make_events,
    publish_raw,
    read_dead_letters,
)

COUNT = 6_000


def check_exactly_once(ledger: Ledger, valid: list[dict[str, object]]) -> None:
    rows = ledger.charged()
    ids = Counter(r[0] for r in rows)
    assert sorted(ids) == sorted(str(e["id"]) for e in valid), "not every valid event was charged"
    assert max(ids.values()) == 1
    by_id = {str(e["id"]): e for e in valid}
    wrong = [r for r in rows if r[2] != expected_cost_uc(by_id[r[0]]) or r[1] != by_id[r[0]]["account_id"]]
    assert wrong == [], f"charged wrong (id, account, cost): {wrong[:5]}"
    totals: Counter[str] = Counter()
    for _, account, cost in rows:
        totals[account] += cost
    assert dict(totals) == {k: v for k, v in expected_totals(valid).items() if v}


def check_dead_letters(nats_url: str, invalid: list[tuple[bytes, str]]) -> None:
    letters = asyncio.run(read_dead_letters(nats_url, "dead.usage", "USAGE_DEAD"))
    by_message = {letter["message"].encode(): letter for letter in letters}
    assert len(by_message) == len(letters) == len(invalid), "each invalid event, once"
    for message, field in invalid:
        letter = by_message[message]
        assert letter["field"] == field and letter["reason"], letter
        assert letter["subject"] == "usage.events" and letter["stream_sequence"] > 0


def reconcile(url: str, out: Path) -> None:
    process = forked.start(["reconcile", "--db", url], stdout=out)
    assert process.wait(60) == 0, out.read_text()
    assert "every invariant holds" in out.read_text()


def test_three_consumers_charge_each_event_exactly_once(nats_server: NatsServer, ledger: Ledger,
                                                        tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    messages, valid, invalid = make_events(COUNT, seed, time.time())
    asyncio.run(publish_raw(nats_server.url, "usage.events", messages))
    port = free_port()
    consumers = [start_consumer(nats_server.url, ledger.url, tmp_path / f"c{i}", "--idle-exit", "3",
                                *(["--metrics-port", str(port)] if i == 0 else []))
                 for i in range(3)]
    try:
        metrics = scrape_while_running(port)
        codes = [c.wait(90) for c in consumers]
    finally:
        for c in consumers:
            stop(c)
    errors = [(tmp_path / f"c{i}.err").read_text() for i in range(3)]
    assert codes == [0, 0, 0], errors
    summaries = [json.loads((tmp_path / f"c{i}.out").read_text()) for i in range(3)]
    # (a consumer started last may find the others have taken everything: two sharing is the check)
    assert sum(1 for s in summaries if s["charged"] > 0) >= 2, f"the work was not shared: {summaries}"
    assert sum(s["charged"] for s in summaries) == len(valid), (seed, summaries)
    assert sum(s["dead_lettered"] for s in summaries) == len(invalid)
    assert sum(s["events"] for s in summaries) == len(messages) + sum(s["redelivered"] for s in summaries)
    check_exactly_once(ledger, valid)
    check_dead_letters(nats_server.url, invalid)
    reconcile(ledger.url, tmp_path / "reconcile.out")
    assert 'creditmeter_stream_messages_total{outcome="charged"}' in metrics
    for name in ("creditmeter_stream_redelivered_total", "creditmeter_stream_rate",
                 "creditmeter_stream_lag", 'creditmeter_stream_failures_total{cause="database"}'):
        assert name in metrics, metrics
    assert "events:" in errors[0] and "/s, lag" in errors[0], "a progress line on stderr"


def scrape_while_running(port: int) -> str:
    """The consumer's metrics page, once it has charged something and measured its lag (which
    it does after each batch: a page read between the two has no lag yet)."""
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            time.sleep(0.1)
            continue
        if ('outcome="charged"} 0.0' not in text and "outcome=\"charged\"}" in text
                and "creditmeter_stream_lag" in text):
            return text
        time.sleep(0.1)
    return text
