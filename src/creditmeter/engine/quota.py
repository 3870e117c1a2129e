"""Enterprises: their members, and the quota moved from an enterprise's pool to its members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from creditmeter.alerts import Alert, AlertType
from creditmeter.domain import (
    Account,
    AccountId,
    AccountKind,
    Balance,
    Grant,
    GrantId,
    GrantKind,
    GrantStatus,
    Package,
)
from creditmeter.engine._unit import (
    EngineBase,
    _check_amount,
    _check_instant,
    _first,
    _one_of,
    _read_locked,
    _request_fp,
)
from creditmeter.enterprise import Member, QuotaAllocation, allocation_grant_id, source_of
from creditmeter.errors import Conflict, InputError, NotFound
from creditmeter.ids import check_id, check_new_id
from creditmeter.keys import MemberRole
from creditmeter.money import format_credits
from creditmeter.store.base import Transaction
from creditmeter.timeutil import format_instant


@dataclass(frozen=True, slots=True)
class EnterpriseView:
    """An enterprise at an instant: its pool, members, allocations and each member's quota
    packages (the grants its allocations put on them)."""

    account: Account
    pool: Balance
    members: list[Member]
    allocations: list[QuotaAllocation]
    quota: dict[str, list[Package]]

    @property
    def allocated_uc(self) -> int:
        """Quota moved out of the pool to members, less what revoking gave back: the share of the
        pool packages' ``used`` that members were handed, used by them or not."""
        return sum(a.amount_uc - a.returned_uc for a in self.allocations)

    @property
    def members_used_uc(self) -> int:
        """What members have used of the quota this enterprise gave them."""
        return sum(p.used_uc for packages in self.quota.values() for p in packages)


class EnterpriseCommands(EngineBase):
    """Members of an enterprise, quota allocations to them, and the enterprise's view of both."""

    def _enterprise(self, tx: Transaction, enterprise_id: str) -> Account:
        found = tx.get_account(enterprise_id)
        if found is None or found[0].kind is not AccountKind.ENTERPRISE:
            raise NotFound("enterprise", enterprise_id, "enterprise_id")
        return found[0]

    def add_member(self, enterprise_id: str, account_id: str, at_us: int,
                   role: str = "member") -> Member:
        """Make a user account a member (or admin) of an enterprise; again changes the role."""
        check_id(enterprise_id, "enterprise_id")
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        member_role = _one_of(MemberRole, role, "role")

        def work(tx: Transaction) -> Member:
            self._enterprise(tx, enterprise_id)
            found = tx.get_account(account_id)
            if found is None:
                raise NotFound("account", account_id, "account_id")
            if found[0].kind is not AccountKind.USER:
                raise InputError("account_id", "members are user accounts")
            member = Member(enterprise_id, account_id, member_role, at_us)
            tx.upsert_member(member)
            return next(m for m in tx.list_members(enterprise_id) if m.account_id == account_id)

        return self._write(work)

    def remove_member(self, enterprise_id: str, account_id: str, at_us: int) -> None:
        """Remove a member. The quota already added stays theirs until revoked or expired."""
        check_id(enterprise_id, "enterprise_id")
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> None:
            self._enterprise(tx, enterprise_id)
            self._book(tx, enterprise_id, at_us)  # serialised with the enterprise's allocations
            if not tx.delete_member(enterprise_id, account_id):
                raise NotFound("member", account_id, "account_id")

        self._write(work)

    def allocate(self, enterprise_id: str, member_id: str, amount_uc: int, at_us: int, *,
                 expires_at_us: int | None = None, allocation_id: str | None = None) -> Package:
        """Add quota to a member: ``amount_uc`` moves out of the pool, in burn-down
        order, from pool grants valid until at least ``expires_at_us``, into a new ``enterprise``
        grant on the member expiring then. Without ``expires_at_us`` the quota lasts as long as
        the pool credits it came from (the earliest expiry among them). Idempotent by id."""
        check_id(enterprise_id, "enterprise_id")
        check_id(member_id, "account_id")
        _check_instant(at_us, "at")
        _check_amount(amount_uc)
        if expires_at_us is not None:
            _check_instant(expires_at_us, "expires")
            if expires_at_us <= at_us:
                raise InputError("expires", "is in the past")
        key = check_new_id(allocation_id, "id") if allocation_id is not None else uuid.uuid4().hex
        # The member's grant id lives in the allocations' own namespace, per enterprise: an
        # admin's id can never take (or reveal) another tenant's package id.
        aid = allocation_grant_id(enterprise_id, key)
        request_fp = _request_fp(enterprise_id, member_id, amount_uc, expires_at_us)

        def existing(tx: Transaction) -> Package | None:
            found = tx.get_allocation(aid)
            if found is None:
                return None
            if found[1] != request_fp:
                raise Conflict(f"allocation id {aid!r} was already used for another allocation")
            return self._package(tx, member_id, GrantId(aid), at_us)

        def work(tx: Transaction) -> Package:
            enterprise = self._enterprise(tx, enterprise_id)
            done = existing(tx)  # a retry answers what the first call made
            if done is not None:
                return done
            # Not a member (existing or not: an admin learns nothing about other accounts).
            if tx.member_role(enterprise_id, member_id) is None:
                raise InputError("account_id", f"{member_id!r} is not a member of {enterprise_id!r}")
            books = tx.load_books([enterprise_id, member_id], lapsed_by_us=at_us)  # both locked, in id order
            pool, member = books[AccountId(enterprise_id)], books[AccountId(member_id)]
            done = existing(tx)  # made meanwhile, by a call that held the lock first
            if done is not None:
                return done
            if tx.member_role(enterprise_id, member_id) is None:  # again, under the lock
                raise InputError("account_id", f"{member_id!r} is not a member of {enterprise_id!r}")
            self._bring(tx, pool, at_us)
            self._bring(tx, member, at_us)
            until = expires_at_us
            if until is None:  # as long as the pool credits last: the earliest drawn grant's expiry
                parts = pool.allocate_out(amount_uc, 0, at_us, aid)  # from any usable pool grant
                if parts is None:
                    raise InputError("amount", f"the pool of {enterprise_id!r} has only "
                                     f"{format_credits(pool.available_uc(at_us))} credits available")
                ends = [g.expires_at_us for g in pool.grants
                        if g.expires_at_us is not None and any(p.grant_id == g.id for p in parts)]
                until = min(ends) if ends else None
            else:
                parts = pool.allocate_out(amount_uc, until, at_us, aid)
                if parts is None:
                    lasting = sum(amount for gid, amount in pool.drawable(at_us)
                                  if _lasts_until(pool.grant(gid), until))
                    raise InputError("amount", f"the pool of {enterprise_id!r} has only "
                                     f"{format_credits(lasting)} credits valid until "
                                     f"{format_instant(until)}")
            grant = Grant(GrantId(aid), AccountId(member_id), GrantKind.ENTERPRISE, amount_uc,
                          GrantKind.ENTERPRISE.default_priority, at_us, until,
                          f"{enterprise.name} quota"[:255], source_of(enterprise_id), tx.next_grant_seq(),
                          at_us)
            member.add_grant(grant, at_us)
            self._persist(tx, [pool, member], at_us)
            tx.insert_allocation(QuotaAllocation(aid, enterprise_id, member_id, amount_uc, tuple(parts),
                                                 at_us), request_fp)
            tx.insert_alert(Alert(member_id, AlertType.ALLOCATION_ADDED, f"allocation:{aid}", at_us,
                                  {"allocation_id": aid, "enterprise_id": enterprise_id,
                                   "amount": format_credits(amount_uc),
                                   "expires_at": None if until is None else format_instant(until)}), at_us)
            return member.package(member.grant(grant.id) or grant, at_us)

        return self._write(work)

    def revoke_allocation(self, allocation_id: str, at_us: int) -> QuotaAllocation:
        """Revoke quota: what the member has not used (nor holds) is voided on the member's grant
        and returned to the pool grants it came from. Revoking again changes nothing."""
        check_id(allocation_id, "grant_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> QuotaAllocation:
            allocation, books = _read_locked(tx, lambda: tx.get_allocation(allocation_id),
                                             lambda found: [found.enterprise_id, found.member_id],
                                             ("allocation", allocation_id, "grant_id"), at_us)
            if allocation.revoked_at_us is not None:
                return allocation
            pool, member = books[AccountId(allocation.enterprise_id)], books[AccountId(allocation.member_id)]
            self._bring(tx, pool, at_us)
            self._bring(tx, member, at_us)
            grant = member.grant(GrantId(allocation.id))
            assert grant is not None
            unused = 0
            package = member.package(grant, at_us)
            if package.held_uc:
                raise Conflict(f"{format_credits(package.held_uc)} credits of this quota are held by "
                               "requests in flight; revoke once they are settled or released")
            if package.status not in (GrantStatus.EXPIRED, GrantStatus.VOIDED):  # else: nothing left
                unused = package.remaining_uc
                member.void(grant, at_us)
            if unused:
                pool.return_in(allocation.parts, unused, at_us, allocation.id)
                pool.pay_overage(at_us)
            self._persist(tx, [pool, member], at_us)
            tx.revoke_allocation(allocation.id, at_us, unused)
            tx.insert_alert(Alert(allocation.member_id, AlertType.ALLOCATION_REVOKED,
                                  f"revoked:{allocation.id}", at_us,
                                  {"allocation_id": allocation.id, "enterprise_id": allocation.enterprise_id,
                                   "returned": format_credits(unused)}), at_us)
            return replace(allocation, revoked_at_us=at_us, returned_uc=unused)

        return self._write(work)

    def member_role(self, enterprise_id: str, account_id: str) -> MemberRole | None:
        """The account's role in the enterprise; None when it is not a member."""
        check_id(enterprise_id, "enterprise_id")
        check_id(account_id, "account_id")
        with self._read() as tx:
            return tx.member_role(enterprise_id, account_id)

    def allocation(self, allocation_id: str) -> QuotaAllocation:
        return self._lookup(lambda tx: _first(tx.get_allocation(allocation_id)), "allocation",
                            allocation_id, "allocation_id")

    def enterprise(self, enterprise_id: str, at_us: int) -> EnterpriseView:
        """An enterprise's pool, members and allocations, and each member's quota figures."""
        check_id(enterprise_id, "enterprise_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            account = self._enterprise(tx, enterprise_id)
            pool = self._balance(tx, enterprise_id, at_us)
            members = tx.list_members(enterprise_id)
            allocations = tx.list_allocations(enterprise_id)
            books = tx.load_books([m.account_id for m in members] + [a.member_id for a in allocations],
                                  lapsed_by_us=at_us)
        source = source_of(enterprise_id)
        quota: dict[str, list[Package]] = {}
        for member_id, book in books.items():
            self._bring(tx, book, at_us, write=False)
            quota[member_id] = [book.package(g, at_us) for g in book.grants if g.source == source]
        return EnterpriseView(account, pool, members, allocations, quota)


def _lasts_until(grant: Grant | None, until_us: int) -> bool:
    return grant is not None and (grant.expires_at_us is None or grant.expires_at_us >= until_us)
