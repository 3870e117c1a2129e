"""Enterprise pools and member quota: the records. Pure: no storage, no clock.

An enterprise account holds the pool's grants. An admin adds quota to a member: X credits valid
until T move out of the pool (burn-down order, from pool grants valid until at least T) into a
new ``enterprise`` grant on the member's account, whose id is the allocation's. Revoking voids
what the member has not used and returns it to the pool grants it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace

from creditmeter.domain import Allocation, StoredEvent, SummaryRow
from creditmeter.keys import MemberRole
from creditmeter.timeutil import DAY_US


@dataclass(frozen=True, slots=True)
class Member:
    enterprise_id: str
    account_id: str
    role: MemberRole
    added_at_us: int


@dataclass(frozen=True, slots=True)
class QuotaAllocation:
    """Quota an enterprise added to a member (the member's grant has the same id).

    Attributes:
      parts: the pool grants it came from, in the order drawn.
      returned_uc: what a revoke gave back to the pool.
    """

    id: str
    enterprise_id: str
    member_id: str
    amount_uc: int
    parts: tuple[Allocation, ...]
    created_at_us: int
    revoked_at_us: int | None = None
    returned_uc: int = 0


def allocation_grant_id(enterprise_id: str, key: str) -> str:
    """The member grant's id for allocation ``key`` of an enterprise: in a namespace of its own
    (``alloc:``) and per enterprise, so it can meet no other package's id."""
    digest = hashlib.blake2b(f"{enterprise_id}\0{key}".encode(), digest_size=16).hexdigest()
    return f"alloc:{digest}"


def source_of(enterprise_id: str) -> str:
    """The ``source`` of every grant an enterprise's allocations put on members."""
    return f"enterprise:{enterprise_id}"[:255]


# -- member usage as the enterprise paid for it ------------------------------------------------


def enterprise_share(stored: StoredEvent, quota_ids: Collection[str]) -> StoredEvent | None:
    """A member's event as their enterprise sees it: only the parts paid from the enterprise's
    quota (``quota_ids``, its allocations' grants on the member), and a cost that is their sum.

    What the member's own packages paid, and any overage (the member's debt), are left out;
    the event's body (model, tokens, quantities, metadata) is kept, since the enterprise paid
    for part of it. ``None`` when the enterprise paid nothing of it.
    """
    charge = stored.charge
    parts = tuple(p for p in charge.allocations if p.grant_id in quota_ids)
    if not parts:
        return None
    shared = charge._replace(cost_uc=sum(p.amount_uc for p in parts), allocations=parts, overage_uc=0)
    return replace(stored, charge=shared)


def share_summary(shares: Iterable[StoredEvent], group_by: str) -> list[SummaryRow]:
    """Requests, tokens and credits per UTC day (``day``) or per model (``model``), in key
    order, of events already cut to their enterprise share (the same rows a store summary
    gives for an account's own events)."""
    groups: dict[int | str, list[int]] = {}
    for stored in shares:
        e = stored.event
        ts = stored.charge.timestamp_us
        key: int | str = ts - ts % DAY_US if group_by == "day" else e.model or ""
        row = groups.setdefault(key, [0] * 8)
        for i, value in enumerate((1, e.input_tokens, e.output_tokens, e.cached_input_tokens,
                                   e.cache_write_tokens, e.reasoning_tokens, e.cache_write_1h_tokens,
                                   stored.charge.cost_uc)):
            row[i] += value
    return [SummaryRow(key, *groups[key]) for key in sorted(groups)]
