"""Subscriptions: billing periods, status at an instant, and each period's grant.

Pure: no storage, no clock. A subscription keeps the plan's terms as they were when it was made.
Period ``k`` runs ``[start_k, start_{k+1})`` from the anchor, month-end safe (``plans``); its
allowance is a grant expiring at the period's end whose id is derived from the subscription and
the period's start, so granting a period twice is impossible (grant ids are unique).
A trial is a subscription with a single period of ``valid_days``.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from creditmeter.domain import AccountId, Grant, GrantId
from creditmeter.errors import InputError
from creditmeter.plans import Plan, PlanKind, grant_expiry, period_bounds, period_index_at
from creditmeter.timeutil import format_instant

MAX_SUBSCRIPTION_ID = 200  # leaves room in the derived grant ids (255)
MAX_CATCH_UP = 1_200       # periods a single renewal may grant (100 years of months)


class SubscriptionStatus(enum.StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"  # still running until its period ends
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription of an account to a trial, subscription or enterprise plan.

    Attributes:
      anchor_us: the start of period 0; periods follow month-end safe from it.
      next_period: the first period not granted yet.
      cancel_at_us: when a cancelled subscription ends (its then-current period's end).
    """

    id: str
    account_id: AccountId
    plan: Plan
    seats: int | None
    anchor_us: int
    created_at_us: int
    next_period: int
    cancel_at_us: int | None
    cancelled_at_us: int | None

    @property
    def recurring(self) -> bool:
        return self.plan.kind.recurring

    @property
    def allowance_uc(self) -> int:
        """Credits per period (seats × per-seat credits for an enterprise plan)."""
        return self.plan.credits_uc * (self.seats or 1)

    def period(self, index: int) -> tuple[int, int]:
        if not self.recurring:
            if index != 0:
                raise InputError("period", "a trial has a single period")
            return self.anchor_us, grant_expiry(self.plan, self.anchor_us)
        assert self.plan.period is not None
        return period_bounds(self.anchor_us, self.plan.period, index)

    @property
    def ends_at_us(self) -> int | None:
        """When it ends: a trial at its end, a cancelled subscription at its period's end."""
        if not self.recurring:
            return self.period(0)[1]
        return self.cancel_at_us

    def status(self, at_us: int) -> SubscriptionStatus:
        ends = self.ends_at_us
        if ends is not None and ends <= at_us:
            return SubscriptionStatus.EXPIRED
        if self.cancel_at_us is not None:
            return SubscriptionStatus.CANCELLED
        return SubscriptionStatus.ACTIVE

    def index_at(self, at_us: int) -> int | None:
        """The period running at ``at_us`` (None before the start and after the end)."""
        if at_us < self.anchor_us or self.status(at_us) is SubscriptionStatus.EXPIRED:
            return None
        if not self.recurring:
            return 0
        assert self.plan.period is not None
        return period_index_at(self.anchor_us, self.plan.period, at_us)

    def due(self, at_us: int) -> range:
        """The periods to grant now: from ``next_period`` to the one running at ``at_us``, never
        past the end. Granting late grants every period missed, each with its own dates."""
        last = self.last_period_at(at_us)
        if last is None or last < self.next_period:
            return range(0)
        return range(self.next_period, min(last + 1, self.next_period + MAX_CATCH_UP))

    def last_period_at(self, at_us: int) -> int | None:
        if at_us < self.anchor_us:
            return None
        if not self.recurring:
            return 0
        assert self.plan.period is not None
        end = self.ends_at_us
        moment = at_us if end is None or at_us < end else end - 1
        return period_index_at(self.anchor_us, self.plan.period, moment)

    def next_start_us(self) -> int | None:
        """The start of the first period not granted yet (None when none is left to grant)."""
        if not self.recurring:
            return None if self.next_period > 0 else self.anchor_us
        start = self.period(self.next_period)[0]
        if self.cancel_at_us is not None and start >= self.cancel_at_us:
            return None
        return start

    def grant_id(self, index: int) -> GrantId:
        if self.plan.kind is PlanKind.TRIAL:
            return trial_grant_id(self.account_id)
        return GrantId(f"sub:{self.id}@{format_instant(self.period(index)[0])}")

    def grant(self, index: int, seq: int, at_us: int) -> Grant:
        """The allowance of period ``index``."""
        start, end = self.period(index)
        label = (self.plan.name if not self.recurring
                 else f"{self.plan.name} — {_day(start)} to {_day(end)}")
        return Grant(self.grant_id(index), self.account_id, self.plan.grant_kind, self.allowance_uc,
                     self.plan.priority, start, end, label[:255], f"subscription:{self.id}"[:255], seq,
                     at_us)


def _day(us: int) -> str:
    return (format_instant(us) or "")[:10]


def trial_grant_id(account_id: str) -> GrantId:
    """The one trial grant an account can ever have (grant ids are unique). A long account id is
    hashed behind a ``-``, which no account id starts with (``creditmeter.ids``)."""
    if len(account_id) <= 240:
        return GrantId(f"trial:{account_id}")
    return GrantId(f"trial:-{_digest(account_id)}")


def trial_grant_ids(account_id: str) -> tuple[GrantId, ...]:
    """Every id an account's trial grant may have: :func:`trial_grant_id`, and for a long account
    id also ``trial:#`` and the hash, the form older databases may hold."""
    if len(account_id) <= 240:
        return (trial_grant_id(account_id),)
    return trial_grant_id(account_id), GrantId(f"trial:#{_digest(account_id)}")


def _digest(account_id: str) -> str:
    return hashlib.blake2b(account_id.encode(), digest_size=16).hexdigest()


def current_subscription(subs: list[Subscription], at_us: int) -> Subscription | None:
    """The recurring subscription running at ``at_us`` (else a running trial), if any."""
    running = [s for s in subs if s.anchor_us <= at_us and s.status(at_us) is not SubscriptionStatus.EXPIRED]
    recurring = [s for s in running if s.recurring]
    chosen = recurring or running
    return chosen[-1] if chosen else None
