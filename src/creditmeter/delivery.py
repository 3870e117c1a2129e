"""The delivery worker: sends stored alerts to webhook endpoints, signed, at least once.

One round (:meth:`Deliverer.run_once`): route the alerts stored since the last round to the
endpoints that receive them; take due deliveries (leased to this worker), only as many as it has
free send slots, in turn from each endpoint and no more of one endpoint's than its share of the
slots (so an endpoint that hangs never holds up the others); send each outside any database
transaction, within one overall deadline per request; as each answer comes, record the attempt
and the delivery's next state (delivered, a retry with backoff, or failed past the horizon) and
take more; and go on while deliveries are due. ``creditmeter deliver`` runs rounds from the
command line (``--once`` for cron), and ``creditmeter serve`` runs them in a background thread of
each worker process.

Any number of workers may run against one database: none takes a delivery another holds. A worker
killed mid-send leaves its deliveries to be taken again when their lease ends (the receiver may
then see the same ``webhook-id`` twice: delivery is at least once).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import httpx

from creditmeter.alerts import alert_body
from creditmeter.deadline import deadline_client, until
from creditmeter.endpoints import (
    Attempt,
    Claim,
    DeliveryPolicy,
    DeliveryStatus,
    Outcome,
    outcome,
    signed_headers,
)
from creditmeter.engine import Engine
from creditmeter.errors import CreditmeterError

log = logging.getLogger("creditmeter.delivery")
MAX_ERROR = 255
USER_AGENT = "creditmeter-webhooks"
MAX_ANSWER = 64 * 1024  # of an answer's body, no more is read
MAX_HELD = 1000  # deliveries one worker holds at most (in flight and queued)
POLL_S = 0.25  # while requests are in flight and slots are free, how often to look for more due
LOOK_S = 1.0  # while takes come back full, the backlog (and what to route) is looked at this often


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

    ``concurrency``: requests in flight at once; ``batch``: deliveries taken per claim at most
    (never more than the free slots); ``per_endpoint``: requests in flight to one endpoint at
    most (by default half the slots, at least one). ``clock``: now, in µs since the epoch;
    ``draw``: a uniform random number in [0, 1), the jitter of each retry.
    """

    def __init__(self, engine: Engine, policy: DeliveryPolicy | None = None, *, concurrency: int = 16,
                 batch: int = 100, per_endpoint: int | None = None,
                 clock: Callable[[], int] = system_clock_us,
                 draw: Callable[[], float] = random.random) -> None:
        assert concurrency >= 1 and batch >= 1 and (per_endpoint is None or per_endpoint >= 1)
        self.engine = engine
        self.policy = policy or DeliveryPolicy()
        self.concurrency = concurrency
        self.batch = batch
        self.per_endpoint = per_endpoint or max(1, concurrency // 2)
        # Each queued delivery waits at most one timeout per place ahead of it in its slot's line.
        self.depth = max(1, int(self.policy.lease_s // self.policy.timeout_s) - 1)
        self.holding = min(concurrency * self.depth, MAX_HELD)
        self._looked = 0.0  # when the backlog was last looked at
        self._full = False  # whether the last take took all it asked for
        self.clock = clock
        self.draw = draw
        self.client = deadline_client(concurrency, self.policy.timeout_s, follow_redirects=False,
                                      headers={"user-agent": USER_AGENT})
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="creditmeter-deliver")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def run_once(self, stop: threading.Event | None = None) -> Report:
        """Route what was stored and send everything due now; return once nothing is due, or,
        once ``stop`` is set, as soon as the requests in flight are answered and recorded (what
        was taken and not sent yet is given back, due at once).

        A worker holds no more deliveries than it can send before their lease ends: those in
        flight, and a queue of at most ``depth - 1`` times as many, where ``depth`` is how many
        whole timeouts fit in the lease less one (at least 1: no queue). It takes more as they go
        (half of what it may hold of an endpoint at a time, not one by one: each take is a
        transaction), and records answers as they come (a few at a time, none kept waiting past
        ``POLL_S``)."""
        stop = stop or threading.Event()
        report = Report()
        running: dict[Future[Attempt], Claim] = {}
        queued: deque[Claim] = deque()
        finished: list[tuple[Claim, Attempt]] = []
        since = 0.0
        few = self.concurrency
        cap = self.per_endpoint * self.depth  # what it may hold of one endpoint
        taken = 0.0
        while True:
            if finished and (len(finished) >= few or not running or stop.is_set()
                             or time.monotonic() - since >= POLL_S):
                self._record(finished, report)
                finished = []
            if stop.is_set() and queued:
                self.engine.release_claims(list(queued), self.clock())
                queued.clear()
            self._start(queued, running)
            room = self.holding - len(running) - len(queued)
            more = False
            held = Counter(claim.endpoint_id for claim in (*running.values(), *queued))
            # Take more once half of what it holds of some endpoint is gone, or, while a slot is
            # idle, every POLL_S (other endpoints may have some due: one that hangs holds up none).
            if room > 0 and not stop.is_set() and (
                    not held or min(held.values()) <= cap // 2
                    or (len(running) < self.concurrency and time.monotonic() - taken >= POLL_S)):
                taken = time.monotonic()
                claims, more = self._take(room, [*running.values(), *queued], report)
                queued.extend(claims)
                self._start(queued, running)
            if not running:
                if finished or queued or (more and not stop.is_set()):
                    continue
                return report
            done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            if done and not finished:
                since = time.monotonic()
            finished += [(running.pop(future), future.result()) for future in done]

    def _start(self, queued: deque[Claim], running: dict[Future[Attempt], Claim]) -> None:
        """Send what is queued, oldest first, while slots are free and its endpoint has room."""
        busy = Counter(claim.endpoint_id for claim in running.values())
        waiting: deque[Claim] = deque()
        while queued and len(running) < self.concurrency:
            claim = queued.popleft()
            if busy[claim.endpoint_id] < self.per_endpoint:
                running[self.pool.submit(self.send, claim)] = claim
                busy[claim.endpoint_id] += 1
            else:
                waiting.append(claim)
        queued.extendleft(reversed(waiting))

    def run_forever(self, interval_s: float, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set, ``interval_s`` apart when idle; a failed round (the
        database away) is logged and tried again after the interval."""
        while not stop.is_set():
            try:
                report = self.run_once(stop)
                if report.attempts:
                    log.info("delivery: %s sent, %s delivered, %s to retry, %s failed", report.attempts,
                             report.delivered, report.retrying, report.failed)
            except CreditmeterError as exc:
                log.warning("delivery round failed (%s); trying again in %s s", exc, interval_s)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("delivery round failed; trying again in %s s", interval_s)
            stop.wait(interval_s)

    def _take(self, free: int, held: Iterable[Claim], report: Report) -> tuple[list[Claim], bool]:
        """Route what waits and take what is due, as many as ``free`` and each endpoint's room (what
        it may hold of one endpoint, less what it ``held``) allow; the claims, and whether there
        may be more to take at once."""
        unrouted = False
        if time.monotonic() - self._looked >= LOOK_S or not self._full:
            # Look first (a read), unless the last take was full: then routing waits up to LOOK_S.
            self._looked = time.monotonic()
            unrouted, due = self.engine.delivery_backlog(self.clock())
            if not unrouted and not due:
                return [], False
        routed = self.engine.route_alerts(self.clock(), self.policy) if unrouted else 0
        report.routed += routed
        busy = Counter(claim.endpoint_id for claim in held)
        room = {endpoint: self.per_endpoint * self.depth - n for endpoint, n in busy.items()}
        limit = min(free, self.batch)
        claims = self.engine.claim_deliveries(self.clock(), self.policy, limit, room)
        self._full = len(claims) == limit
        return claims, bool(claims) or routed > 0

    def _record(self, attempts: list[tuple[Claim, Attempt]], report: Report) -> None:
        outcomes = [outcome(claim, attempt, self.draw(), self.policy) for claim, attempt in attempts]
        counted, disabled = self.engine.record_outcomes(outcomes, self.clock(), self.policy)
        report.attempts += len(outcomes)
        for done in counted:
            if done.status is DeliveryStatus.DELIVERED:
                report.delivered += 1
            elif done.status is DeliveryStatus.FAILED:
                report.failed += 1
                _log_dead(done)
            else:
                report.retrying += 1
        for endpoint in disabled:
            log.warning("webhook endpoint %s disabled: its attempts kept failing", endpoint)
        report.disabled += disabled

    def send(self, claim: Claim) -> Attempt:
        """One attempt: POST the signed alert and read at most ``MAX_ANSWER`` bytes of the answer,
        all within ``timeout_s``; any failure is this attempt's, never the round's."""
        body = alert_body(claim.alert)
        at_us = self.clock()
        started = time.monotonic()
        code: int | None = None
        try:
            headers = signed_headers(claim.secret, claim.alert_id, at_us // 1_000_000, body)
            with until(self.policy.timeout_s), \
                    self.client.stream("POST", claim.url, content=body, headers=headers) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER:
                        break
            code = response.status_code
            error = None if 200 <= code < 300 else f"HTTP {code} {response.reason_phrase}".strip()
        except httpx.TimeoutException:
            code, error = None, f"no answer within {self.policy.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - whatever one send raises fails that attempt only
            code, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = int((time.monotonic() - started) * 1000)
        return Attempt(claim.delivery_id, claim.attempt, at_us, code, latency_ms,
                       None if error is None else error[:MAX_ERROR])


def _log_dead(done: Outcome) -> None:
    log.warning("webhook delivery %s (%s) to endpoint %s failed for good after %s attempts: %s",
                done.claim.delivery_id, done.claim.alert_id, done.claim.endpoint_id, done.attempt.attempt,
                done.attempt.error)
