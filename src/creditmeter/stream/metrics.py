"""What a consumer has done, as counters: for its Prometheus port and its progress line.

The counters are plain numbers owned by the consumer's loop (one thread writes them); the
metrics port reads them when scraped, through a collector of its own registry, so several
consumers in one process (as in the tests) never share a metric. What the loop changes in place
(the seconds per phase, the rate's samples) is read by the port's thread as a copy taken under a
lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from creditmeter.domain import Charge, Rejected
from creditmeter.money import format_credits

RATE_WINDOW_S = 10.0


@dataclass
class StreamStats:
    """Counts since the consumer started; ``rate`` is events per second over the last 10 s."""

    charged: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    held: int = 0  # handed back to wait (a timestamp ahead of now): not done yet
    refused: int = 0  # dead letters the broker refused for good: terminated, not stored
    redelivered: int = 0
    batches: int = 0
    charged_uc: int = 0
    database_failures: int = 0
    broker_failures: int = 0
    lag: int | None = None
    last_failure: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # fetch, idle, charge, dead_letter, ack
    _samples: deque[tuple[float, int]] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._samples.append((time.monotonic(), 0))  # the rate counts from the start

    @property
    def events(self) -> int:
        return self.charged + self.duplicate + self.dead_lettered + self.refused

    def count_batch(self, results: Sequence[Charge | Rejected], redelivered: int, *, held: int = 0,
                    refused: int = 0) -> None:
        """Count a batch's results; of its rejected ones, ``held`` were handed back to wait and
        ``refused`` were terminated (their dead letters refused), the others dead-lettered."""
        self.dead_lettered -= held + refused
        self.held += held
        self.refused += refused
        for result in results:
            if isinstance(result, Rejected):
                self.dead_lettered += 1
            elif result.status == "duplicate":
                self.duplicate += 1
            else:
                self.charged += 1
                self.charged_uc += result.cost_uc
        self.redelivered += redelivered
        self.batches += 1
        self._sample()

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time the block takes to ``seconds[phase]`` (where a consumer's time goes)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(phase, time.perf_counter() - started)

    def add_time(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def phase_seconds(self) -> dict[str, float]:
        """A copy of ``seconds`` (read from any thread)."""
        with self._lock:
            return dict(self.seconds)

    def dead_letter_refused(self, why: str) -> None:
        self.last_failure = f"dead letter refused: {why}"

    def database_failed(self, why: str) -> None:
        self.database_failures += 1
        self.last_failure = f"database: {why}"

    def broker_failed(self, why: str) -> None:
        self.broker_failures += 1
        self.last_failure = f"broker: {why}"

    def _sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, self.events))
            while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW_S:
                self._samples.popleft()

    @property
    def rate(self) -> float:
        """Events per second over the last ``RATE_WINDOW_S`` (read from any thread)."""
        now = time.monotonic()
        with self._lock:
            recent = [s for s in self._samples if now - s[0] <= RATE_WINDOW_S]
            before = [s for s in self._samples if now - s[0] > RATE_WINDOW_S]
        if not recent:
            return 0.0
        start_t, start_n = before[-1] if before else recent[0]
        end_n = recent[-1][1]
        return (end_n - start_n) / max(now - start_t, 1e-3) if before or len(recent) > 1 else 0.0

    def line(self) -> str:
        """The progress line: what was done, how fast, and how far behind the stream."""
        lag = "?" if self.lag is None else f"{self.lag:,}"
        text = (f"{self.events:,} events: {self.charged:,} charged ({format_credits(self.charged_uc)} "
                f"credits), {self.duplicate:,} duplicate, {self.dead_lettered:,} dead-lettered, "
                f"{self.redelivered:,} redelivered; {self.rate:,.0f}/s, lag {lag}")
        if self.refused:
            text += f"; {self.refused:,} dead letters refused (messages terminated)"
        if self.database_failures or self.broker_failures:
            text += (f"; {self.database_failures} database and {self.broker_failures} broker "
                     f"failures (last: {self.last_failure})")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "charged": self.charged, "duplicate": self.duplicate,
                "dead_lettered": self.dead_lettered, "held": self.held, "refused": self.refused,
                "redelivered": self.redelivered,
                "batches": self.batches, "charged_credits": format_credits(self.charged_uc),
                "database_failures": self.database_failures, "broker_failures": self.broker_failures,
                "lag": self.lag, "seconds": {k: round(v, 3) for k, v in self.phase_seconds().items()}}


class _StatsCollector(Collector):
    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.stats
        messages = CounterMetricFamily("creditmeter_stream_messages", "Messages handled, by outcome.",
                                       labels=["outcome"])
        for outcome, count in (("charged", s.charged), ("duplicate", s.duplicate),
                               ("dead_lettered", s.dead_lettered), ("held", s.held),
                               ("refused", s.refused)):
            messages.add_metric([outcome], count)
        yield messages
        yield CounterMetricFamily("creditmeter_stream_redelivered",
                                  "Messages delivered more than once.", value=s.redelivered)
        yield CounterMetricFamily("creditmeter_stream_batches", "Batches charged and acknowledged.",
                                  value=s.batches)
        yield CounterMetricFamily("creditmeter_stream_charged_credits", "Credits charged.",
                                  value=s.charged_uc / 1_000_000)
        failures = CounterMetricFamily("creditmeter_stream_failures",
                                       "Batches not acknowledged, by what failed.", labels=["cause"])
        failures.add_metric(["database"], s.database_failures)
        failures.add_metric(["broker"], s.broker_failures)
        yield failures
        phases = CounterMetricFamily("creditmeter_stream_seconds",
                                     "Seconds spent, by phase of the loop.", labels=["phase"])
        for phase, seconds in sorted(s.phase_seconds().items()):
            phases.add_metric([phase], seconds)
        yield phases
        yield GaugeMetricFamily("creditmeter_stream_rate", "Events per second over the last 10 s.",
                                value=s.rate)
        if s.lag is not None:
            yield GaugeMetricFamily("creditmeter_stream_lag",
                                    "Messages not done: not delivered yet, or not acknowledged yet.",
                                    value=s.lag)


def serve_metrics(stats: StreamStats, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``stats`` as Prometheus text at http://HOST:PORT/metrics (in a daemon thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    start_http_server(port, addr=host, registry=registry)
