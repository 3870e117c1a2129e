"""Enterprise pools and member quota: the records. Pure: no storage, no clock.

An enterprise account holds the pool's grants. An admin adds quota to a member: X credits valid
until T move out of the pool (burn-down order, from pool grants valid until at least T) into a
new ``enterprise`` grant on the member's account, whose id is the allocation's. Revoking voids
what the member has not used and returns it to the pool grants it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from creditmeter.domain import Allocation
from creditmeter.keys import MemberRole


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
