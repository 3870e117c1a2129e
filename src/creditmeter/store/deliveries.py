"""What delivery workers do in a SQL transaction: route stored alerts to the endpoints that
receive them, take the deliveries that are due, record what each attempt gave.

Any number of workers may run at once. On PostgreSQL each takes rows with ``FOR UPDATE SKIP
LOCKED``, so two workers never take the same alert or delivery; on SQLite the write lock makes
them take turns. A delivery taken is leased: its due time moves to the lease's end, so no other
worker takes it before then; the result clears the lease, and one that never comes (the worker
died) leaves it due again when the lease ends, and the next claim logs the attempt as lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from creditmeter.endpoints import Claim, DeliveryStatus, Outcome, delivery_id, events_from_json
from creditmeter.store.alerts import ALERT_COLUMNS, stored_alert
from creditmeter.store.rows import chunks
from creditmeter.store.webhooks import REPLAY, WebhookRecords

LOST = "no result: the worker sending it stopped before its lease ended"
DELIVERY_INSERT = ("INSERT INTO webhook_deliveries (id, endpoint_id, alert_seq, alert_id, status, attempts, "
                   "created_at_us, next_at_us, horizon_at_us) VALUES ({marks}) ON CONFLICT DO NOTHING")
CLAIM_SELECT = ("SELECT d.seq, d.id, d.endpoint_id, d.alert_seq, d.alert_id, d.attempts, d.lease_token, "
                "d.next_at_us, d.horizon_at_us, e.url, e.secret FROM webhook_deliveries d "
                "JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                "WHERE d.status = 'pending' AND d.next_at_us <= {m} AND e.disabled_at_us IS NULL{exclude} "
                "ORDER BY d.next_at_us LIMIT {m}")
CLAIM_SPREAD = 4  # a claim looks at this many times the deliveries it takes, to take them in turn


class DeliveryWork(WebhookRecords):
    """Routing, claiming and recording deliveries."""

    def _skip_locked(self, of: str = "") -> str:
        return f" FOR UPDATE{' OF ' + of if of else ''} SKIP LOCKED" if self._pg else ""

    def delivery_backlog(self, at_us: int) -> tuple[bool, bool]:
        """Whether any alert waits to be routed, and whether any delivery is due (a read: an idle
        worker takes no write lock)."""
        rows = self._fetch_all([
            ("SELECT 1 FROM alerts WHERE routed_at_us IS NULL LIMIT 1", ()),
            ("SELECT 1 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
             f"WHERE d.status = 'pending' AND d.next_at_us <= {self._mark} AND e.disabled_at_us IS NULL "
             "LIMIT 1", (at_us,))])
        return bool(rows[0]), bool(rows[1])

    def route_alerts(self, at_us: int, limit: int, horizon_us: int, max_deliveries: int) -> int:
        """Make the deliveries of up to ``limit`` alerts not routed yet (one per enabled endpoint
        that receives it: its type, recorded at or after the endpoint's creation), each retried
        until ``horizon_us`` after ``at_us``; fewer alerts when they would make more than
        ``max_deliveries``, so one transaction stays short. How many deliveries were made.

        On PostgreSQL it first waits for an endpoint being added to commit (a share lock), so an
        alert recorded after the endpoint's creation never misses it."""
        m = self._mark
        if self._pg:
            self._run("LOCK TABLE webhook_endpoints IN SHARE MODE")
        endpoints = [(ident, events_from_json(events), int(created))
                     for ident, events, created in self._fetch(
                         "SELECT id, events, created_at_us FROM webhook_endpoints "
                         "WHERE disabled_at_us IS NULL ORDER BY id", ())]
        limit = max(1, min(limit, max_deliveries // max(1, len(endpoints))))
        alerts = self._fetch(f"SELECT seq, id, type, recorded_at_us FROM alerts WHERE routed_at_us IS NULL "
                             f"ORDER BY seq LIMIT {m}{self._skip_locked()}", (limit,))
        if not alerts:
            return 0
        rows = [(delivery_id(endpoint, alert), endpoint, seq, alert, DeliveryStatus.PENDING.value, 0,
                 at_us, at_us, at_us + horizon_us)
                for seq, alert, kind, recorded in alerts for endpoint, events, created in endpoints
                if recorded >= created and (events is None or kind in events)]
        made = self._run(DELIVERY_INSERT.format(marks=", ".join([m] * 9)), rows)
        for part in chunks([row[0] for row in alerts]):
            self._run(f"UPDATE alerts SET routed_at_us = {m} WHERE seq IN ({', '.join([m] * len(part))})",
                      (at_us, *part))
        return made

    def claim_deliveries(self, at_us: int, limit: int, lease_us: int, token: str,
                         room: Mapping[str, int] | None = None) -> list[Claim]:
        """Take up to ``limit`` due deliveries (of enabled endpoints), leased until ``at_us +
        lease_us`` under ``token``, taken in turn from each endpoint that has some due (so one
        endpoint's backlog does not shut out the others); ``room``: at most that many of the
        endpoints named (none of those with 0). An earlier lease that ended without a result is
        logged."""
        m = self._mark
        room = dict(room or {})
        full = sorted(e for e, n in room.items() if n <= 0)
        exclude = f" AND d.endpoint_id NOT IN ({', '.join([m] * len(full))})" if full else ""
        found = self._fetch(CLAIM_SELECT.format(m=m, exclude=exclude) + self._skip_locked("d"),
                            (at_us, *full, limit * CLAIM_SPREAD))
        rows = _in_turn(found, limit, room)
        if not rows:
            return []
        lost = [(ident, attempts, next_at - lease_us, LOST)
                for _, ident, _, _, _, attempts, old_token, next_at, *_ in rows if old_token is not None]
        self._run("INSERT INTO webhook_attempts (delivery_id, attempt, at_us, error) "
                  f"VALUES ({m}, {m}, {m}, {m})", lost)
        until = at_us + lease_us
        self._run(f"UPDATE webhook_deliveries SET attempts = attempts + 1, lease_token = {m}, "
                  f"lease_until_us = {m}, next_at_us = {m} WHERE seq = {m}",
                  [(token, until, until, row[0]) for row in rows])
        alerts = {}
        for part in chunks([row[3] for row in rows]):
            for row in self._fetch(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE seq IN "
                                   f"({', '.join([m] * len(part))})", part):
                alerts[row[0]] = stored_alert(row)[2]
        return [Claim(ident, endpoint, url, secret, alert_id, alerts[alert_seq], attempts + 1, token, horizon)
                for _, ident, endpoint, alert_seq, alert_id, attempts, _, _, horizon, url, secret in rows]

    def release_claims(self, claims: Sequence[Claim], at_us: int) -> int:
        """Give back deliveries taken and never sent (their worker is stopping): due at ``at_us``,
        their attempt not counted; those whose claim ran out meanwhile are left as they are."""
        m = self._mark
        return self._run(f"UPDATE webhook_deliveries SET attempts = attempts - 1, next_at_us = {m}, "
                         f"lease_token = NULL, lease_until_us = NULL WHERE id = {m} AND lease_token = {m}",
                         [(at_us, c.delivery_id, c.token) for c in claims])

    def record_outcomes(self, outcomes: Sequence[Outcome], at_us: int, disable_after_failures: int,
                        disable_after_us: int) -> tuple[list[Outcome], list[str]]:
        """Log each attempt and move its delivery to its next state if the attempt was made
        under the delivery's current claim; a 2xx made under a claim that ran out still counts
        (the delivery is delivered, unless replayed since); a result under a claim replayed
        meanwhile makes it due again at once. Each endpoint's run of failures is kept from the
        current results only. The outcomes that counted (their status as recorded), and the
        ids of the endpoints this disabled, are returned as ``(counted, disabled)``."""
        if not outcomes:
            return [], []
        m = self._mark
        ids = sorted({o.claim.delivery_id for o in outcomes})
        lock = " FOR UPDATE" if self._pg else ""
        state = {row[0]: (row[1], row[2]) for part in chunks(ids) for row in self._fetch(
            "SELECT id, status, lease_token FROM webhook_deliveries "
            f"WHERE id IN ({', '.join([m] * len(part))}) ORDER BY id{lock}", part)}
        self._run("INSERT INTO webhook_attempts (delivery_id, attempt, at_us, status_code, latency_ms, "
                  f"error) VALUES ({m}, {m}, {m}, {m}, {m}, {m})",
                  [(a.delivery_id, a.attempt, a.at_us, a.status_code, a.latency_ms, a.error)
                   for a in (o.attempt for o in outcomes) if a.delivery_id in state])
        counted = [_counted(o, *state[o.claim.delivery_id], at_us) for o in outcomes
                   if o.claim.delivery_id in state]
        kept = [o for o in counted if o is not None]
        self._run(f"UPDATE webhook_deliveries SET status = {m}, next_at_us = {m}, ended_at_us = {m}, "
                  f"last_status_code = {m}, last_error = {m}, lease_token = NULL, lease_until_us = NULL "
                  f"WHERE id = {m}",
                  [(o.status.value, o.next_at_us,
                    None if o.status is DeliveryStatus.PENDING else o.next_at_us, o.attempt.status_code,
                    o.attempt.error, o.claim.delivery_id) for o in kept])
        return kept, self._keep_runs(kept, at_us, disable_after_failures, disable_after_us)

    def _keep_runs(self, outcomes: Sequence[Outcome], at_us: int, disable_after_failures: int,
                   disable_after_us: int) -> list[str]:
        """Each endpoint's run of failed attempts, and the endpoints it now disables (endpoints
        are written in id order, so two workers never wait on each other in a circle)."""
        m = self._mark
        runs: dict[str, tuple[bool, int, int | None]] = {}  # endpoint: (reset?, failures, since)
        for o in sorted(outcomes, key=lambda o: o.attempt.at_us):
            reset, failures, since = runs.get(o.claim.endpoint_id, (False, 0, None))
            if o.attempt.ok:
                runs[o.claim.endpoint_id] = (True, 0, None)
            else:
                runs[o.claim.endpoint_id] = (reset, failures + 1, o.attempt.at_us if since is None else since)
        disabled = []
        for endpoint, (reset, failures, since) in sorted(runs.items()):
            if reset:
                self._run(f"UPDATE webhook_endpoints SET failures = {m}, failing_since_us = {m} "
                          f"WHERE id = {m}", (failures, since, endpoint))
            else:
                self._run(f"UPDATE webhook_endpoints SET failures = failures + {m}, "
                          f"failing_since_us = COALESCE(failing_since_us, {m}) WHERE id = {m}",
                          (failures, since, endpoint))
            reason = _reason(disable_after_failures, disable_after_us)
            if failures and self._run(
                    f"UPDATE webhook_endpoints SET disabled_at_us = {m}, disabled_reason = {m} "
                    f"WHERE id = {m} AND disabled_at_us IS NULL AND failures >= {m} "
                    f"AND failing_since_us <= {m}",
                    (at_us, reason, endpoint, disable_after_failures, at_us - disable_after_us)):
                disabled.append(endpoint)
        return disabled


def _reason(failures: int, after_us: int) -> str:
    return (f"{failures} or more attempts in a row failed, for at least {after_us / 1e6:g} s; "
            "enable it again once it answers")


def _in_turn(rows: Sequence[Sequence[Any]], limit: int, room: Mapping[str, int]) -> list[Sequence[Any]]:
    """Up to ``limit`` of the due ``rows`` (oldest first), one endpoint's after another's in turn,
    none past the room its endpoint has."""
    queues: dict[str, list[Sequence[Any]]] = defaultdict(list)
    for row in rows:
        queues[row[2]].append(row)
    left = {e: room.get(e, limit) for e in queues}
    taken: list[Sequence[Any]] = []
    while len(taken) < limit and any(queues[e] and left[e] > 0 for e in queues):
        for endpoint, queue in queues.items():
            if queue and left[endpoint] > 0 and len(taken) < limit:
                taken.append(queue.pop(0))
                left[endpoint] -= 1
    return taken


def _counted(o: Outcome, status: str, token: str | None, at_us: int) -> Outcome | None:
    """What an outcome makes of its delivery, now ``status`` under ``token``: its own next state
    under its claim; due again at once under its claim replayed meanwhile; delivered for a 2xx
    under a claim that ran out (unless replayed since, or no longer pending); else nothing."""
    if token == o.claim.token:
        return o
    if token == REPLAY + o.claim.token:
        return replace(o, status=DeliveryStatus.PENDING, next_at_us=at_us)
    if o.attempt.ok and status == DeliveryStatus.PENDING.value and not (token or "").startswith(REPLAY):
        return o
    return None
