"""The delivery worker: sends stored alerts to webhook endpoints, signed, at least once.

One round (:meth:`Deliverer.run_once`): route the alerts stored since the last round to the
endpoints that receive them; take a batch of due deliveries (leased to this worker); send them,
several at once, outside any database transaction; record each attempt and the delivery's next
state (delivered, a retry with backoff, or failed past the horizon); and go on while deliveries
are due. ``creditmeter deliver`` runs rounds from the command line (``--once`` for cron), and
``creditmeter serve`` runs them in a background thread of each worker process.

Any number of workers may run against one database: none takes a delivery another holds. A worker
killed mid-send leaves its deliveries to be taken again when their lease ends (the receiver may
then see the same ``webhook-id`` twice: delivery is at least once).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from creditmeter.alerts import alert_body
from creditmeter.endpoints import Attempt, Claim, DeliveryPolicy, DeliveryStatus, outcome, signed_headers
from creditmeter.engine import Engine
from creditmeter.errors import CreditmeterError

log = logging.getLogger("creditmeter.delivery")
MAX_ERROR = 255
USER_AGENT = "creditmeter-webhooks"


def system_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Report:
    """What rounds of delivery did.

    Attributes:
      routed: deliveries made from stored alerts.
      attempts: requests sent (or tried).
      delivered: deliveries that got a 2xx.
      retrying: failed attempts whose delivery will be tried again.
      failed: deliveries given up (their horizon passed).
      disabled: endpoints the failure rule disabled.
    """

    routed: int = 0
    attempts: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    disabled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"routed": self.routed, "attempts": self.attempts, "delivered": self.delivered,
                "retrying": self.retrying, "failed": self.failed, "disabled": self.disabled}


class Deliverer:
    """Delivers alerts for one engine with one delivery policy.

    ``concurrency``: requests in flight at once; ``batch``: deliveries taken per claim.
    ``clock``: now, in µs since the epoch; ``draw``: a uniform random number in [0, 1), the
    jitter of each retry.
    """

    def __init__(self, engine: Engine, policy: DeliveryPolicy | None = None, *, concurrency: int = 16,
                 batch: int = 100, clock: Callable[[], int] = system_clock_us,
                 draw: Callable[[], float] = random.random) -> None:
        assert concurrency >= 1 and batch >= 1
        self.engine = engine
        self.policy = policy or DeliveryPolicy()
        self.concurrency = concurrency
        self.batch = batch
        self.clock = clock
        self.draw = draw
        timeout = httpx.Timeout(self.policy.timeout_s)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, limits=limits,
                                   headers={"user-agent": USER_AGENT})
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="creditmeter-deliver")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def run_once(self) -> Report:
        """Route what was stored and send everything due now; return once nothing is due."""
        report = Report()
        while True:
            unrouted, due = self.engine.delivery_backlog(self.clock())
            if not unrouted and not due:
                return report
            routed = self.engine.route_alerts(self.clock(), self.policy) if unrouted else 0
            report.routed += routed
            claims = self.engine.claim_deliveries(self.clock(), self.policy, self.batch)
            if claims:
                self._send_all(claims, report)
            elif not routed:
                return report  # other workers hold what is there

    def run_forever(self, interval_s: float, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set, ``interval_s`` apart when idle; a failed round (the
        database away) is logged and tried again after the interval."""
        while not stop.is_set():
            try:
                report = self.run_once()
                if report.attempts:
                    log.info("delivery: %s sent, %s delivered, %s to retry, %s failed", report.attempts,
                             report.delivered, report.retrying, report.failed)
            except CreditmeterError as exc:
                log.warning("delivery round failed (%s); trying again in %s s", exc, interval_s)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("delivery round failed; trying again in %s s", interval_s)
            stop.wait(interval_s)

    def _send_all(self, claims: list[Claim], report: Report) -> None:
        attempts = list(self.pool.map(self.send, claims))
        outcomes = [outcome(claim, attempt, self.draw(), self.policy)
                    for claim, attempt in zip(claims, attempts, strict=True)]
        disabled = self.engine.record_outcomes(outcomes, self.clock(), self.policy)
        report.attempts += len(outcomes)
        for done in outcomes:
            if done.status is DeliveryStatus.DELIVERED:
                report.delivered += 1
            elif done.status is DeliveryStatus.FAILED:
                report.failed += 1
            else:
                report.retrying += 1
        for endpoint in disabled:
            log.warning("webhook endpoint %s disabled: its attempts kept failing", endpoint)
        report.disabled += disabled

    def send(self, claim: Claim) -> Attempt:
        """One attempt: POST the signed alert, and what came of it."""
        body = alert_body(claim.alert)
        at_us = self.clock()
        headers = signed_headers(claim.secret, claim.alert_id, at_us // 1_000_000, body)
        started = time.monotonic()
        code: int | None = None
        try:
            response = self.client.post(claim.url, content=body, headers=headers)
            code = response.status_code
            error = None if 200 <= code < 300 else f"HTTP {code} {response.reason_phrase}".strip()
        except httpx.TimeoutException:
            error = f"no answer within {self.policy.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = int((time.monotonic() - started) * 1000)
        return Attempt(claim.delivery_id, claim.attempt, at_us, code, latency_ms,
                       None if error is None else error[:MAX_ERROR])
