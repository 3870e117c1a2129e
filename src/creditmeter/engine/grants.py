"""Credit packages (grants) on an account, and the account's balance built from them."""

from __future__ import annotations

import uuid

from creditmeter.domain import AccountId, Balance, Grant, GrantId, GrantKind, GrantStatus, Package
from creditmeter.engine._unit import EngineBase, _check_amount, _check_instant, _one_of, _request_fp
from creditmeter.errors import Conflict, InputError, NotFound
from creditmeter.ids import check_id, check_new_id, check_text
from creditmeter.store.base import Transaction
from creditmeter.timeutil import format_instant

# Package ids the engine derives itself (each unique by construction); nobody else may use them.
RESERVED_GRANT_PREFIXES = ("trial:", "sub:", "order:", "alloc:", "rol:")


class GrantCommands(EngineBase):
    """Add and void packages; an account's credits as they stand."""

    def add_grant(self, account_id: str, amount_uc: int, kind: str, at_us: int, *,
                  expires_at_us: int | None = None, effective_at_us: int | None = None,
                  priority: int | None = None, name: str | None = None,
                  grant_id: str | None = None, source: str = "manual") -> Package:
        """Put a credit package on an account. With ``grant_id``, the same call is idempotent
        (a retry answers the same package, even after the time checks would refuse it anew)."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        grant_kind = _one_of(GrantKind, kind, "kind")
        if grant_kind is GrantKind.ROLLOVER:
            raise InputError("kind", "rollover packages are made by a plan's rollover, not added")
        _check_amount(amount_uc)
        for field, value in (("expires", expires_at_us), ("effective", effective_at_us)):
            if value is not None:
                _check_instant(value, field)
        prio = grant_kind.default_priority if priority is None else priority
        if type(prio) is not int or not 0 <= prio <= 100:
            raise InputError("priority", "must be a whole number from 0 to 100")
        if name is not None:
            check_text(name, "name")
        gid = check_new_id(grant_id, "id") if grant_id is not None else f"grt_{uuid.uuid4().hex}"
        if gid.startswith(RESERVED_GRANT_PREFIXES):
            raise InputError("id", f"ids starting with {', '.join(RESERVED_GRANT_PREFIXES)} are kept for "
                             "trials, subscriptions, purchases and enterprise quota")
        label = name or f"{grant_kind.value.capitalize()} credits"
        # The body as given: a defaulted effective time is not part of it, so a retry matches.
        request_fp = _request_fp(account_id, amount_uc, grant_kind.value, effective_at_us,
                                 expires_at_us, prio, label)
        effective = at_us if effective_at_us is None else effective_at_us

        def work(tx: Transaction) -> Package:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_grant(gid)
            if existing is not None:
                if existing.request_fp != request_fp:
                    raise Conflict(f"grant id {gid!r} was already used for another grant")
                return self._package(tx, existing.grant.account_id, existing.grant.id, at_us)
            if expires_at_us is not None:
                if expires_at_us <= effective:
                    raise InputError("expires",
                                     f"must be after the effective time {format_instant(effective)}")
                if expires_at_us <= at_us:
                    raise InputError("expires", "is in the past")
            grant = Grant(GrantId(gid), AccountId(account_id), grant_kind, amount_uc, prio, effective,
                          expires_at_us, label, source, tx.next_grant_seq(), at_us)
            book.add_grant(grant, at_us)
            package = book.package(book.grant(grant.id) or grant, at_us)
            self._persist(tx, [book], at_us, grant_fps={grant.id: request_fp})
            return package

        return self._write(work)

    def void_grant(self, grant_id: str, at_us: int) -> Package:
        """Void (refund) a grant: its remaining credits are removed; what was used stays."""
        check_id(grant_id, "grant_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Package:
            row = tx.get_grant(grant_id)
            if row is None:
                raise NotFound("grant", grant_id, "grant_id")
            book = self._book(tx, row.grant.account_id, at_us)
            grant = book.grant(row.grant.id)
            assert grant is not None
            if grant.voided_at_us is None:
                if book.package(grant, at_us).status is GrantStatus.EXPIRED:
                    raise Conflict(f"grant {grant_id!r} has already expired; nothing remains to void")
                grant = book.void(grant, at_us)
            package = book.package(grant, at_us)
            self._persist(tx, [book], at_us)
            return package

        return self._write(work)

    def balance(self, account_id: str, at_us: int) -> Balance:
        """The account's credits as they stand at ``at_us`` (nothing is written)."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        with self._read() as tx:
            return self._balance(tx, account_id, at_us)
