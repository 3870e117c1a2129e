"""The enterprise edge's request and response bodies: members, quota allocations and the pool."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from creditmeter.api.models import (
    NEW_ID_RULE,
    AllocationOut,
    Body,
    Credits,
    CreditsIn,
    Id,
    Instant,
    NewId,
    Out,
    PackageOut,
    SubscriptionOut,
)


class MemberIn(Body):
    account_id: Id = Field(examples=["user-42"])
    role: Literal["admin", "member"] = "member"


class MemberOut(Out):
    enterprise_id: str
    account_id: str
    role: Literal["admin", "member"]
    added_at: Instant


class AllocationIn(Body):
    account_id: Id = Field(examples=["user-42"], description="The member receiving the quota.")
    amount_credits: CreditsIn = Field(examples=["500"])
    expires_at: Instant | None = Field(None, description="Default: as long as the pool credits last.")
    id: NewId | None = Field(None, description=f"Idempotency key ({NEW_ID_RULE}).")


class QuotaAllocationOut(Out):
    allocation_id: str
    enterprise_id: str
    account_id: str
    amount_credits: Credits
    created_at: Instant
    revoked_at: Instant | None
    returned_credits: Credits
    parts: list[AllocationOut] = Field(description="The pool grants it came from.")


class MemberQuotaOut(Out):
    account_id: str
    role: Literal["admin", "member"] | None = Field(description="None: no longer a member.")
    quota_credits: Credits
    used_credits: Credits
    held_credits: Credits
    remaining_credits: Credits
    expired_credits: Credits
    returned_credits: Credits
    packages: list[PackageOut]


class PoolOut(Out):
    account_id: str
    at: Instant
    available_credits: Credits
    held_credits: Credits
    overage_credits: Credits
    allocated_credits: Credits = Field(
        description="Quota moved from the pool to members, less what revoking returned. A pool "
                    "package's used_credits counts what was allocated from it (and any usage "
                    "charged to the enterprise account itself).")
    members_used_credits: Credits = Field(
        description="What members have used of the quota this enterprise gave them.")
    subscription: SubscriptionOut | None = None
    packages: list[PackageOut]


class EnterpriseOut(Out):
    enterprise_id: str
    name: str
    pool: PoolOut
    members: list[MemberQuotaOut]
    allocations: list[QuotaAllocationOut]
