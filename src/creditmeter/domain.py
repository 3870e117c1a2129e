"""The domain's records and enums: immutable, with amounts in µc and instants in µs.

Records built once per event or grant on the hot path (Grant, UsageEvent, Charge, Allocation,
Hold) are NamedTuples: as immutable as frozen dataclasses and several times cheaper to build.
The rest are frozen dataclasses.

Units are the last part of a name: ``amount_uc`` is micro-credits, ``expires_at_us`` is
microseconds since the epoch (UTC), ``ttl_s`` is seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, NewType

from creditmeter.errors import CreditmeterError, let_frames_go

AccountId = NewType("AccountId", str)
GrantId = NewType("GrantId", str)
EventId = NewType("EventId", str)
HoldId = NewType("HoldId", str)

EMPTY: Mapping[str, Any] = MappingProxyType({})


class AccountKind(enum.StrEnum):
    USER = "user"
    ENTERPRISE = "enterprise"


class GrantKind(enum.StrEnum):
    """What a package is. Only ``trial`` gets a different default priority (used first)."""

    TRIAL = "trial"
    SUBSCRIPTION = "subscription"
    ADDON = "addon"
    PACKAGE = "package"
    ENTERPRISE = "enterprise"
    PROMO = "promo"
    ADJUSTMENT = "adjustment"
    ROLLOVER = "rollover"  # what a period's allowance left unused, carried over

    @property
    def default_priority(self) -> int:
        return 0 if self is GrantKind.TRIAL else 50


class GrantStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    DEPLETED = "depleted"
    EXPIRED = "expired"
    VOIDED = "voided"


class HoldStatus(enum.StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"  # its ttl passed before a settle


class EntryKind(enum.StrEnum):
    """Ledger entries other than charges (a charge is the usage event itself, with its parts)."""

    GRANT = "grant"          # +granted
    HOLD = "hold"            # credits set aside for a request in flight
    RELEASE = "release"      # a hold's credits given back (settled, released or timed out)
    PAYOFF = "payoff"        # a grant's credits paying the account's overage
    VOID = "void"            # a grant's remaining removed (refund); history entry
    EXPIRE = "expire"        # a grant's remaining lost at its expiry; history entry, corrected
    ALLOCATE = "allocate"    # a pool grant's credits moved into a member's enterprise grant
    RETURN = "return"        # an allocation's unused credits given back to the pool grant


@dataclass(frozen=True, slots=True)
class Account:
    """An account that holds credit packages.

    Attributes:
      id: the operator's id for it.
      name: shown to people.
      kind: a person (``user``) or an enterprise pool (``enterprise``).
      created_at_us: when it was created.
    """

    id: AccountId
    name: str
    kind: AccountKind
    created_at_us: int


class Grant(NamedTuple):
    """A credit package on an account. Usable while ``effective_at_us <= t < expires_at_us``.

    Attributes:
      seq: creation order, the last tie-breaker of the burn-down order.
      voided_at_us: set once when the grant is voided (refunded); it is usable no more.
      source: where it came from (``cli``, ``api``, a subscription or order id).
    """

    id: GrantId
    account_id: AccountId
    kind: GrantKind
    amount_uc: int
    priority: int
    effective_at_us: int
    expires_at_us: int | None
    name: str
    source: str
    seq: int
    created_at_us: int
    voided_at_us: int | None = None

    def usable_at(self, at_us: int) -> bool:
        """Whether a charge at ``at_us`` may draw on this grant (voiding is final)."""
        return (self.voided_at_us is None and self.effective_at_us <= at_us
                and (self.expires_at_us is None or at_us < self.expires_at_us))


class Allocation(NamedTuple):
    """One part of a charge or hold: ``amount_uc`` taken from ``grant_id``."""

    grant_id: GrantId
    amount_uc: int


class UsageEvent(NamedTuple):
    """A metered piece of usage, as validated. ``fingerprint`` identifies the body for idempotency.

    Each kind of token is counted once: ``cached_input_tokens`` are not also in ``input_tokens``,
    ``reasoning_tokens`` not also in ``output_tokens``, ``cache_write_1h_tokens`` (cache writes
    kept for an hour) not also in ``cache_write_tokens``.

    Attributes:
      timestamp_us: ``None`` when the producer did not state it (it then defaults to now).
      service_tier: the tier the request ran on, ``priority`` or ``flex``; ``None``: standard.
    """

    id: EventId
    account_id: AccountId
    timestamp_us: int | None
    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    quantities: tuple[tuple[str, int], ...] = ()
    metadata: Mapping[str, Any] = EMPTY
    fingerprint: str = ""
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    service_tier: str | None = None


class Charge(NamedTuple):
    """The outcome of a charged event (also what a duplicate answers).

    Attributes:
      status: ``charged`` the first time, ``duplicate`` when the same event came again.
      allocations: the packages that paid, in the order they were drawn.
      overage_uc: the part no package could cover (a debt on the account).
    """

    event_id: EventId
    account_id: AccountId
    status: str
    cost_uc: int
    allocations: tuple[Allocation, ...]
    overage_uc: int
    price_version: int | None
    timestamp_us: int
    hold_id: HoldId | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that was not charged; ``error`` says why (it names the field)."""

    event_id: str | None
    error: CreditmeterError
    status: str = "rejected"

    def __post_init__(self) -> None:
        let_frames_go(self.error)  # a rejection is kept: not the frames its error came through

    @property
    def error_type(self) -> str:
        return self.error.kind

    @property
    def field(self) -> str | None:
        return getattr(self.error, "field", None)

    @property
    def reason(self) -> str:
        reason = getattr(self.error, "reason", None)
        return reason if isinstance(reason, str) else str(self.error)


class Hold(NamedTuple):
    """Credits set aside for a request in flight (a two-phase charge).

    Attributes:
      parts: the grants the credits are held on, in burn-down order.
      expires_at_us: after this instant the hold no longer counts and a settle charges afresh.
      settled_event_id: the usage event that settled it.
    """

    id: HoldId
    account_id: AccountId
    amount_uc: int
    parts: tuple[Allocation, ...]
    created_at_us: int
    expires_at_us: int
    status: HoldStatus
    settled_event_id: EventId | None = None
    key_id: str | None = None  # the key it was made with (a limit per key counts it)
    fallback: bool = False  # made for a fallback model once credits ran out


@dataclass(frozen=True, slots=True)
class Refused:
    """A reservation that was not made: the account cannot cover it."""

    account_id: AccountId
    requested_uc: int
    available_uc: int
    overage_uc: int
    reason: str
    status: str = "refused"
    limit: Any = None  # the creditmeter.limits.LimitStatus a limit_reached refusal names
    fallback_model: str | None = None  # credits ran out and the plan falls back to this model

    @property
    def code(self) -> str:
        """``limit_reached`` or ``insufficient_credits``."""
        return "limit_reached" if self.limit is not None else "insufficient_credits"


@dataclass(frozen=True, slots=True)
class Entry:
    """An append-only ledger entry (see :class:`EntryKind`).

    ``corrects`` points at the entry this one corrects (expiry corrections after a late event).
    """

    kind: EntryKind
    account_id: AccountId
    grant_id: GrantId | None
    amount_uc: int
    at_us: int
    hold_id: HoldId | None = None
    corrects: int | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Package:
    """A grant's figures at an instant. Always granted = used + held + expired + voided + remaining."""

    grant: Grant
    used_uc: int
    held_uc: int
    expired_uc: int
    voided_uc: int
    remaining_uc: int
    status: GrantStatus


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's credits at an instant; ``packages`` in burn-down order."""

    account_id: AccountId
    at_us: int
    available_uc: int
    held_uc: int
    overage_uc: int
    packages: tuple[Package, ...]
    period: Period | None = None
    subscription: Any = None  # the running creditmeter.subscriptions.Subscription, if any
    # What recurs (creditmeter.allowances): AllowanceStatus and LimitStatus each, OutOfCredits.
    allowances: tuple[Any, ...] = ()
    limits: tuple[Any, ...] = ()
    when_out: Any = None


@dataclass(frozen=True, slots=True)
class Period:
    """Current consumption: credits charged for usage in ``[start_us, end_us)``; ``basis`` says
    what the period is: the running subscription's billing period (``subscription``), else the
    UTC calendar month (``calendar_month``)."""

    start_us: int
    end_us: int
    used_uc: int
    basis: str


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A charged event as stored: its body, its charge, and its place in recording order."""

    event: UsageEvent
    charge: Charge
    seq: int


class SummaryRow(NamedTuple):
    """One group of a usage summary: its key (a day's first µs, or a model id) and totals."""

    key: int | str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cache_write_1h_tokens: int
    cost_uc: int


class PageMark(NamedTuple):
    """Where the next page of usage starts: after the event at (``ts_us``, ``seq``), among the
    events recorded up to ``max_seq`` (so paging on while new events arrive neither repeats nor
    skips one)."""

    ts_us: int
    seq: int
    max_seq: int
