"""Webhook endpoints and the deliveries of alerts to them: the records, the checks of what an
operator gives, Standard Webhooks signing, when a failed delivery is tried again, and when an
endpoint that keeps failing is disabled.

Signing follows Standard Webhooks (https://www.standardwebhooks.com): each request carries
``webhook-id`` (the alert's id, the same on every retry and replay), ``webhook-timestamp`` (whole
seconds since the epoch, when it is sent) and ``webhook-signature``: ``v1,`` and the base64 of an
HMAC-SHA256, keyed with the base64-decoded secret, of ``{id}.{timestamp}.{body}``.

Pure: no I/O, no clock (instants and random draws are arguments).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from creditmeter.alerts import Alert, AlertType
from creditmeter.errors import InputError
from creditmeter.ids import check_text
from creditmeter.timeutil import DAY_S, US_PER_S

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_URL = 2000
ENDPOINT_ID_PREFIX = "whe_"
DELIVERY_ID_PREFIX = "dlv_"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"      # to be sent (again) when due
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"        # every attempt failed until the horizon: no more retries


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL alerts are delivered to. Its secret is kept apart: shown once, used to sign.

    Attributes:
      id: ``whe_`` and 16 hex digits.
      url: where alerts are POSTed (http or https).
      events: the alert types it receives; None: every type.
      description: the operator's note.
      created_at_us: when it was added; it receives the alerts stored after that.
      disabled_at_us: when it was disabled (by the failure rule); None: enabled.
      disabled_reason: why.
      failures: the current run of failed attempts (a 2xx ends it).
      failing_since_us: when that run began; None: not failing.
    """

    id: str
    url: str
    events: frozenset[AlertType] | None
    description: str
    created_at_us: int
    disabled_at_us: int | None = None
    disabled_reason: str | None = None
    failures: int = 0
    failing_since_us: int | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at_us is None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one endpoint, tried until a 2xx or the horizon.

    Attributes:
      id: ``dlv_`` and 26 base32 characters, derived from the endpoint and the alert.
      endpoint_id: where it goes.
      alert_id: the alert's id, sent as ``webhook-id`` on every attempt.
      alert_type: the alert's type.
      account_id: the alert's account.
      status: pending, delivered or failed.
      attempts: how many attempts were made (or begun).
      created_at_us: when it was made from the alert.
      next_at_us: when it is due (pending).
      horizon_at_us: no retry is made after this instant (a replay moves it).
      ended_at_us: when it was delivered or given up.
      last_status_code: the last answer's HTTP status; None: none yet, or no answer.
      last_error: why the last attempt failed.
    """

    id: str
    endpoint_id: str
    alert_id: str
    alert_type: AlertType
    account_id: str
    status: DeliveryStatus
    attempts: int
    created_at_us: int
    next_at_us: int
    horizon_at_us: int
    ended_at_us: int | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery, as the log keeps it.

    Attributes:
      delivery_id: the delivery.
      attempt: its number, from 1.
      at_us: when it was sent.
      status_code: the answer's HTTP status; None: no answer (timeout, refused, lost worker).
      latency_ms: how long until the answer (or the failure).
      error: why it failed; None for a 2xx.
    """

    delivery_id: str
    attempt: int
    at_us: int
    status_code: int | None
    latency_ms: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Claim:
    """A due delivery a worker took: what it sends, and the claim its result must match.

    Attributes:
      delivery_id: the delivery.
      endpoint_id: its endpoint.
      url: where to send it.
      secret: what to sign it with.
      alert_id: the ``webhook-id``.
      alert: what the body says.
      attempt: this attempt's number.
      token: the claim's token (a result recorded with another token changes nothing).
      horizon_at_us: no retry after this.
    """

    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    alert_id: str
    alert: Alert
    attempt: int
    token: str
    horizon_at_us: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt gave, to be recorded: the log's line and the delivery's next state.

    Attributes:
      claim: the claim the attempt was made under.
      attempt: the log's line.
      status: pending (retry at ``next_at_us``), delivered, or failed (the horizon is passed).
      next_at_us: when the retry is due (pending).
    """

    claim: Claim
    attempt: Attempt
    status: DeliveryStatus
    next_at_us: int


def outcome(claim: Claim, attempt: Attempt, draw: float, policy: DeliveryPolicy) -> Outcome:
    """The delivery's next state after ``attempt``: delivered on a 2xx; else a retry with backoff,
    or failed when that retry would fall after the horizon."""
    if attempt.ok:
        return Outcome(claim, attempt, DeliveryStatus.DELIVERED, attempt.at_us)
    failed_at_us = attempt.at_us + (attempt.latency_ms or 0) * 1000
    again_us = retry_at(attempt.attempt, failed_at_us, draw, policy)
    if again_us > claim.horizon_at_us:
        return Outcome(claim, attempt, DeliveryStatus.FAILED, failed_at_us)
    return Outcome(claim, attempt, DeliveryStatus.PENDING, again_us)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How deliveries are tried and when an endpoint is disabled.

    Attributes:
      timeout_s: the longest one request may take, all of it (connecting, sending, the answer).
      backoff_base_s: the first retry's ceiling; each later one doubles it (full jitter: the delay
        is drawn uniformly between 0 and the ceiling).
      backoff_cap_s: the ceiling stops doubling here.
      horizon_s: a delivery is retried until this long after it was made (or replayed).
      lease_s: how long a worker owns a delivery it took; a worker that dies leaves it due again
        after this (longer than ``timeout_s``: a worker takes a delivery only when it can send it
        at once, so its request is over before the lease ends).
      disable_after_failures: an endpoint is disabled after this many failed attempts in a row …
      disable_after_s: … once that run of failures has lasted this long.
    """

    timeout_s: float = 15.0
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 3600.0
    horizon_s: float = 3 * DAY_S
    lease_s: float = 60.0
    disable_after_failures: int = 20
    disable_after_s: float = 5 * DAY_S

    def __post_init__(self) -> None:
        assert 0 < self.timeout_s < self.lease_s, (self.timeout_s, self.lease_s)
        assert 0 < self.backoff_base_s <= self.backoff_cap_s
        assert self.horizon_s >= 0 and self.disable_after_failures >= 1 and self.disable_after_s >= 0


def retry_at(attempt: int, failed_at_us: int, draw: float, policy: DeliveryPolicy) -> int:
    """When attempt ``attempt + 1`` is due after attempt ``attempt`` failed at ``failed_at_us``:
    exponential backoff with full jitter (``draw`` uniform in [0, 1))."""
    assert attempt >= 1 and 0 <= draw < 1
    ceiling_s = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0 ** min(attempt - 1, 60))
    return failed_at_us + int(draw * ceiling_s * US_PER_S)


def should_disable(failures: int, failing_since_us: int | None, at_us: int, policy: DeliveryPolicy) -> bool:
    """Whether an endpoint whose current run of failures is ``failures`` long, begun at
    ``failing_since_us``, is disabled at ``at_us``."""
    return (failing_since_us is not None and failures >= policy.disable_after_failures
            and at_us - failing_since_us >= policy.disable_after_s * US_PER_S)


# -- what the operator gives -------------------------------------------------------------------

def check_url(value: object, field: str = "url") -> str:
    """An endpoint's URL: http or https (in any case), with a host a request can be sent to (its
    name encodes as IDNA, as the resolver needs), at most ``MAX_URL`` characters."""
    text = check_text(value, field, MAX_URL)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise InputError(field, f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InputError(field, f"must be an http:// or https:// URL, got {text[:40]!r}")
    host = parts.hostname
    if not host or any(c.isspace() for c in text):
        raise InputError(field, "must name a host and contain no spaces")
    try:
        host.encode("idna").decode("idna")  # as the resolver will (empty or long labels, bad xn--)
    except UnicodeError:
        raise InputError(field, f"names a host no request can be sent to ({host[:60]!r})") from None
    return text


def check_events(values: Iterable[object] | None, field: str = "events") -> frozenset[AlertType] | None:
    """An endpoint's filter: alert types, at least one (None: every type)."""
    if values is None:
        return None
    found: set[AlertType] = set()
    values = list(values)
    if not values:
        raise InputError(field, "must name at least one event type (leave it out for every type)")
    for n, value in enumerate(values):
        try:
            found.add(AlertType(value))  # type: ignore[arg-type]
        except ValueError:
            raise InputError(f"{field}[{n}]", f"unknown event type {value!r}; one of "
                             f"{', '.join(t.value for t in AlertType)}") from None
    return frozenset(found)


def events_json(events: frozenset[AlertType] | None) -> str | None:
    return None if events is None else orjson.dumps(sorted(t.value for t in events)).decode()


def events_from_json(text: str | None) -> frozenset[AlertType] | None:
    return None if text is None else frozenset(AlertType(t) for t in orjson.loads(text))


def new_secret() -> str:
    """A signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def delivery_id(endpoint_id: str, alert_id: str) -> str:
    digest = hashlib.sha256(orjson.dumps([endpoint_id, alert_id])).digest()
    return DELIVERY_ID_PREFIX + base64.b32encode(digest).decode("ascii")[:26].lower()


# -- signing -----------------------------------------------------------------------------------

def signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256 of ``{msg_id}.{timestamp_s}.{body}``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The headers of one request: Standard Webhooks' three and the content type."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature(secret, msg_id, timestamp_s, body),
            "content-type": "application/json"}
