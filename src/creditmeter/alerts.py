"""Alerts: what an account's change raises, kept in an outbox and delivered to webhook endpoints.

An :class:`Alert` is raised inside the transaction of the change that causes it and stored once
per ``(account_id, dedupe_key)``: the raiser encodes in the key what makes the alert one of a kind
(the rule, the period, the package, the crossing), so raising it again changes nothing. Delivery
reads the stored alerts later; it never runs in the raising transaction.

Its id (:func:`alert_id`) is derived from the account and the dedupe key, so it is the same on every
retry, every replay and in every worker: receivers use it (the Standard Webhooks ``webhook-id``) to
drop what they already handled. Its body (:func:`alert_body`) is canonical JSON::

    {"data": {"account_id": "acme", ...}, "timestamp": "2026-03-01T12:00:00Z", "type": "credits.depleted"}

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from creditmeter.ids import check_id
from creditmeter.timeutil import MAX_US, MIN_US, format_instant

ALERT_ID_PREFIX = "msg_"
MAX_DEDUPE_KEY = 255


class AlertType(enum.StrEnum):
    """What an alert tells: the webhook event types (the body's ``type``)."""

    USAGE_REACHED = "credits.usage_reached"
    BALANCE_LOW = "credits.balance_low"
    DEPLETED = "credits.depleted"
    OVERAGE = "credits.overage"
    PACKAGE_EXPIRING = "package.expiring"
    LIMIT_REACHED = "limit.reached"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    SUBSCRIPTION_ENDED = "subscription.ended"
    PURCHASE_COMPLETED = "purchase.completed"
    ALLOCATION_ADDED = "allocation.added"
    ALLOCATION_REVOKED = "allocation.revoked"
    TOPUP_REQUESTED = "topup.requested"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert about one account.

    Attributes:
      account_id: the account it is about (its body's ``data.account_id``).
      type: what it tells.
      dedupe_key: unique per account: the raiser encodes the rule and the period, package or
        crossing in it, so the same crossing raised twice is stored once (1-255 characters).
      at_us: the instant of the change that raised it (the body's ``timestamp``).
      data: what else the body's ``data`` carries, JSON-able (strings, whole numbers, booleans,
        None, lists and mappings of them); never ``account_id``, which is the field above.
    """

    account_id: str
    type: AlertType
    dedupe_key: str
    at_us: int
    data: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        assert isinstance(self.type, AlertType), self.type
        check_id(self.account_id, "account_id")
        check_id(self.dedupe_key, "dedupe_key")
        assert type(self.at_us) is int and MIN_US <= self.at_us <= MAX_US, self.at_us
        assert "account_id" not in self.data, "data.account_id is the alert's account_id"


def alert_id(account_id: str, dedupe_key: str) -> str:
    """The alert's id: ``msg_`` and 26 base32 characters (130 bits) of a SHA-256 of the account
    and the dedupe key; the same wherever and however often it is computed."""
    digest = hashlib.sha256(orjson.dumps([account_id, dedupe_key])).digest()
    return ALERT_ID_PREFIX + base64.b32encode(digest).decode("ascii")[:26].lower()


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The body as a mapping: ``{"type", "timestamp", "data": {"account_id", ...data}}``."""
    return {"type": alert.type.value, "timestamp": format_instant(alert.at_us),
            "data": {"account_id": alert.account_id, **alert.data}}


def alert_body(alert: Alert) -> bytes:
    """The body sent for the alert: canonical JSON (keys sorted, no spaces, UTF-8), so the bytes
    signed are the same each time it is sent."""
    return orjson.dumps(alert_payload(alert), option=orjson.OPT_SORT_KEYS)


def data_json(data: Mapping[str, object]) -> str:
    """An alert's ``data`` as stored (canonical JSON); raises ``TypeError`` if it is not JSON-able."""
    return orjson.dumps(dict(data), option=orjson.OPT_SORT_KEYS).decode()


def data_from_json(text: str) -> Mapping[str, object]:
    """Stored ``data`` back as a read-only mapping."""
    loaded = orjson.loads(text)
    assert isinstance(loaded, dict)
    return MappingProxyType(loaded)
