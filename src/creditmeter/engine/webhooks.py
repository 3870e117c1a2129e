"""Webhook endpoints and the delivery of alerts to them: the operator's commands (add, list,
remove, enable an endpoint; read the delivery log; replay a delivery) and the steps a delivery
worker runs, each in one transaction (route stored alerts to endpoints, take due deliveries,
record what the attempts gave). Sending is not here: a worker sends between its transactions
(``creditmeter.delivery``), never inside one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence

from creditmeter.endpoints import (
    ENDPOINT_ID_PREFIX,
    Attempt,
    Claim,
    Delivery,
    DeliveryPolicy,
    DeliveryStatus,
    Endpoint,
    Outcome,
    check_events,
    check_url,
    new_secret,
)
from creditmeter.engine._unit import EngineBase, _check_instant
from creditmeter.errors import Conflict, InputError, NotFound
from creditmeter.ids import check_id, check_text
from creditmeter.store.base import Transaction
from creditmeter.timeutil import US_PER_S

MAX_DELIVERY_PAGE = 1000
MAX_CLAIM = 1000
MAX_ROUTED = 2000  # deliveries made in one routing transaction at most
DEFAULT_POLICY = DeliveryPolicy()


class WebhookCommands(EngineBase):
    """Webhook endpoints, their delivery log, and the steps of delivery."""

    def add_webhook(self, url: str, at_us: int, events: Iterable[object] | None = None,
                    description: str | None = None) -> tuple[Endpoint, str]:
        """A new endpoint receiving the alerts stored from now on whose type is in ``events``
        (None: every type). Returns it and its signing secret (shown once)."""
        url = check_url(url)
        kinds = check_events(events)
        if description is not None:
            check_text(description, "description")
        _check_instant(at_us, "at")
        ident = f"{ENDPOINT_ID_PREFIX}{uuid.uuid4().hex[:16]}"
        endpoint = Endpoint(ident, url, kinds, description or "", at_us)
        secret = new_secret()
        self._write(lambda tx: tx.insert_endpoint(endpoint, secret))
        return endpoint, secret

    def webhooks(self) -> list[Endpoint]:
        with self._read() as tx:
            return tx.list_endpoints()

    def get_webhook(self, endpoint_id: str) -> Endpoint:
        return self._lookup(lambda tx: tx.get_endpoint(endpoint_id), "webhook endpoint", endpoint_id,
                            "endpoint_id")

    def remove_webhook(self, endpoint_id: str) -> None:
        """Remove an endpoint, its deliveries and their log."""
        check_id(endpoint_id, "endpoint_id")

        def work(tx: Transaction) -> None:
            if not tx.delete_endpoint(endpoint_id):
                raise NotFound("webhook endpoint", endpoint_id, "endpoint_id")

        self._write(work)

    def enable_webhook(self, endpoint_id: str, at_us: int) -> Endpoint:
        """Enable an endpoint again (its run of failures forgotten; what it had pending is due
        at once). Enabling an enabled endpoint changes nothing."""
        check_id(endpoint_id, "endpoint_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Endpoint:
            if tx.get_endpoint(endpoint_id) is None:
                raise NotFound("webhook endpoint", endpoint_id, "endpoint_id")
            tx.enable_endpoint(endpoint_id, at_us)
            endpoint = tx.get_endpoint(endpoint_id)
            assert endpoint is not None and endpoint.enabled
            return endpoint

        return self._write(work)

    def deliveries(self, endpoint_id: str, limit: int = 50, before: str | None = None) -> list[Delivery]:
        """An endpoint's deliveries, newest first, ``limit`` at most; ``before``: a delivery id,
        to page on."""
        check_id(endpoint_id, "endpoint_id")
        if type(limit) is not int or not 1 <= limit <= MAX_DELIVERY_PAGE:
            raise InputError("limit", f"must be a whole number from 1 to {MAX_DELIVERY_PAGE}, got {limit!r}")
        if before is not None:
            check_id(before, "before")
        with self._read() as tx:
            if tx.get_endpoint(endpoint_id) is None:
                raise NotFound("webhook endpoint", endpoint_id, "endpoint_id")
            if before is not None and tx.get_delivery(before) is None:
                raise NotFound("delivery", before, "before")
            return tx.list_deliveries(endpoint_id, limit, before)

    def delivery(self, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
        """A delivery and its attempts, oldest first."""
        check_id(delivery_id, "delivery_id")
        with self._read() as tx:
            found = tx.get_delivery(delivery_id)
            if found is None:
                raise NotFound("delivery", delivery_id, "delivery_id")
            return found, tx.list_attempts(delivery_id)

    def replay_delivery(self, delivery_id: str, at_us: int,
                        horizon_s: float = DEFAULT_POLICY.horizon_s) -> Delivery:
        """Send a delivery again (same ``webhook-id``), due now and retried as a new one would be
        for ``horizon_s``; a delivery being sent right now is sent again as soon as that try's
        result is recorded, whatever it was.
        Conflict if its endpoint is disabled (enable it first)."""
        check_id(delivery_id, "delivery_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Delivery:
            found = tx.get_delivery(delivery_id)
            if found is None:
                raise NotFound("delivery", delivery_id, "delivery_id")
            endpoint = tx.get_endpoint(found.endpoint_id)
            assert endpoint is not None
            if not endpoint.enabled:
                raise Conflict(f"delivery_id: the endpoint {endpoint.id} is disabled; enable it first")
            tx.replay_delivery(delivery_id, at_us, at_us + int(horizon_s * US_PER_S))
            again = tx.get_delivery(delivery_id)
            assert again is not None and again.status is DeliveryStatus.PENDING
            return again

        return self._write(work)

    # -- the steps of a delivery worker ------------------------------------------------------

    def delivery_backlog(self, at_us: int) -> tuple[bool, bool]:
        """Whether any stored alert waits to be routed, and whether any delivery is due."""
        with self._read() as tx:
            return tx.delivery_backlog(at_us)

    def route_alerts(self, at_us: int, policy: DeliveryPolicy, limit: int = 500,
                     max_deliveries: int = MAX_ROUTED) -> int:
        """Make the deliveries of up to ``limit`` stored alerts not routed yet: one for each
        enabled endpoint that receives the alert (fewer alerts when they would make more than
        ``max_deliveries``: the transaction stays short). How many deliveries were made."""
        assert 1 <= limit <= MAX_CLAIM and max_deliveries >= 1
        return self._write(lambda tx: tx.route_alerts(at_us, limit, int(policy.horizon_s * US_PER_S),
                                                      max_deliveries))

    def claim_deliveries(self, at_us: int, policy: DeliveryPolicy, limit: int = 100,
                         room: Mapping[str, int] | None = None) -> list[Claim]:
        """Take up to ``limit`` due deliveries for this worker, leased for ``policy.lease_s``, in
        turn from each endpoint with some due; ``room``: at most that many of the endpoints named."""
        assert 1 <= limit <= MAX_CLAIM
        token = uuid.uuid4().hex
        lease_us = int(policy.lease_s * US_PER_S)
        return self._write(lambda tx: tx.claim_deliveries(at_us, limit, lease_us, token, room))

    def release_claims(self, claims: Sequence[Claim], at_us: int) -> int:
        """Give back deliveries this worker took and will not send (it is stopping): due again at
        ``at_us``, their attempt not counted. How many were given back."""
        return self._write(lambda tx: tx.release_claims(claims, at_us)) if claims else 0

    def record_outcomes(self, outcomes: Sequence[Outcome], at_us: int,
                        policy: DeliveryPolicy) -> tuple[list[Outcome], list[str]]:
        """Record what attempts gave: the outcomes that counted (as recorded: a result under a
        claim that ran out changes nothing but a 2xx; one replayed meanwhile is due again), and the
        ids of the endpoints that their failures disabled."""
        return self._write(lambda tx: tx.record_outcomes(
            outcomes, at_us, policy.disable_after_failures, int(policy.disable_after_s * US_PER_S)))
