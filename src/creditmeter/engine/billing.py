"""Plans and what accounts get from them: subscriptions, their periods' grants and renewals, and
purchases of one-off packs."""

from __future__ import annotations

import uuid
from dataclasses import replace

from creditmeter.alerts import Alert, AlertType
from creditmeter.domain import AccountId, AccountKind, Grant, GrantId, Package
from creditmeter.engine._unit import EngineBase, _check_instant, _first, _read_locked, _request_fp
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound, Unavailable
from creditmeter.ids import check_id, check_new_id
from creditmeter.ledger import Book
from creditmeter.money import MAX_UC, format_credits
from creditmeter.plans import MAX_SEATS, PlanCatalog, PlanKind, default_plans, grant_expiry
from creditmeter.store.base import Transaction
from creditmeter.subscriptions import (
    MAX_SUBSCRIPTION_ID,
    Subscription,
    SubscriptionStatus,
    trial_grant_ids,
)
from creditmeter.timeutil import format_instant

MAX_ORDER_ID = 240  # leaves room for the "order:" of its grant id (255)


class SubscriptionCommands(EngineBase):
    """The plan catalog, subscriptions to its plans, their renewals, and purchases of packs."""

    def load_plans(self, catalog: PlanCatalog, at_us: int, source: str = "") -> int:
        """Make ``catalog`` the plan catalog (a new version; running subscriptions keep their
        terms)."""
        _check_instant(at_us, "at")
        for index, plan in enumerate(catalog.plans):
            check_new_id(plan.id, f"plans[{index}].id")
        return self._write(lambda tx: tx.insert_plan_catalog(catalog, at_us, source))

    def plans(self) -> PlanCatalog:
        """The plan catalog loaded last, or the shipped default while none was loaded."""
        with self._read() as tx:
            return plan_catalog(tx)

    def subscribe(self, account_id: str, plan_id: str, at_us: int, *,
                  subscription_id: str | None = None, seats: int | None = None) -> Subscription:
        """Subscribe an account to a trial, subscription or enterprise plan from ``at_us``, and
        grant its first period. The same id again with the same details answers the same
        subscription. A trial is granted once per account, ever; an account has one running
        subscription at a time."""
        check_id(account_id, "account_id")
        check_id(plan_id, "plan")
        _check_instant(at_us, "at")
        sid = (check_new_id(subscription_id, "id", MAX_SUBSCRIPTION_ID) if subscription_id is not None
               else f"sub_{uuid.uuid4().hex}")
        plan = self.plans().get(plan_id)
        if not plan.kind.recurring and plan.kind is not PlanKind.TRIAL:
            raise InputError("plan", f"{plan_id!r} is a one-off {plan.kind.value} pack: buy it as a purchase")
        if seats is not None and plan.kind is not PlanKind.ENTERPRISE:
            raise InputError("seats", "only enterprise plans have seats")
        if plan.kind is PlanKind.ENTERPRISE:
            seats = plan.seats_default or 1 if seats is None else seats
            if type(seats) is not int or not 1 <= seats <= MAX_SEATS:
                raise InputError("seats", f"must be a whole number from 1 to {MAX_SEATS}")
            if plan.credits_uc * seats > MAX_UC:
                raise InputError("seats", "seats × credits per seat is over 10^12 credits")
        request_fp = _request_fp(account_id, plan.to_dict(), seats)
        sub = Subscription(sid, AccountId(account_id), plan, seats, at_us, at_us, 0, None, None)

        def work(tx: Transaction) -> Subscription:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_subscription(sid)
            if existing is not None:
                if existing[1] != request_fp:
                    raise Conflict(f"subscription id {sid!r} was already used for another subscription")
                return existing[0]
            enterprise = book.account.kind is AccountKind.ENTERPRISE
            if enterprise != (plan.kind is PlanKind.ENTERPRISE):
                raise InputError("plan", f"{plan_id!r} is not for {book.account.kind.value} accounts")
            if plan.kind is PlanKind.TRIAL:
                if any(tx.get_grant(gid) is not None for gid in trial_grant_ids(account_id)):
                    raise Conflict(f"account {account_id!r} already had its trial")
            else:
                for other in tx.list_subscriptions(account_id):
                    if other.recurring and other.status(at_us) is not SubscriptionStatus.EXPIRED:
                        raise Conflict(f"account {account_id!r} already has subscription {other.id!r} "
                                       f"({other.status(at_us).value}); cancel it first")
            tx.insert_subscription(sub, request_fp)
            self._refresh_terms(tx, book)
            self._mark(book, at_us)  # its plan's alert rules watch what its packages pay from now on
            self._provide(tx, book, at_us)  # its allowances' first periods
            return self._grant_due(tx, book, sub, at_us)

        return self._write(work)

    def _grant_due(self, tx: Transaction, book: Book, sub: Subscription, at_us: int) -> Subscription:
        """Grant every period of ``sub`` due by ``at_us`` and record how far it got."""
        due = sub.due(at_us)
        if not due:
            if book.has_changes:
                self._persist(tx, [book], at_us)
            return sub
        for index in due:
            grant = sub.grant(index, tx.next_grant_seq(), at_us)
            if book.grant(grant.id) is None:
                book.add_grant(grant, at_us)
        book.advance(at_us)
        self._persist(tx, [book], at_us)
        sub = replace(sub, next_period=due.stop)
        tx.update_subscription(sub)
        return sub

    def cancel_subscription(self, subscription_id: str, at_us: int) -> Subscription:
        """Cancel at the end of the period running at ``at_us`` (nothing is renewed after it).
        Cancelling again changes nothing; an ended subscription cannot be cancelled."""
        check_id(subscription_id, "subscription_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> Subscription:
            sub, books = _read_locked(tx, lambda: tx.get_subscription(subscription_id),
                                      lambda found: [found.account_id],
                                      ("subscription", subscription_id, "subscription_id"), at_us)
            if not sub.recurring:
                raise Conflict(f"subscription {subscription_id!r} is a trial: it ends by itself")
            if sub.status(at_us) is SubscriptionStatus.EXPIRED:
                raise Conflict(f"subscription {subscription_id!r} has already ended")
            if sub.cancel_at_us is not None:
                return sub  # cancelling again changes nothing
            index = sub.index_at(at_us)
            end = sub.period(0 if index is None else index)[1]
            sub = replace(sub, cancel_at_us=end, cancelled_at_us=at_us)
            tx.update_subscription(sub)
            tx.insert_alert(Alert(sub.account_id, AlertType.SUBSCRIPTION_CANCELLED, f"cancelled:{sub.id}",
                                  at_us, {"subscription_id": sub.id, "plan_id": sub.plan.id,
                                          "ends_at": format_instant(end)}), at_us)
            self._refresh_terms(tx, books[sub.account_id])  # its allowances end with it
            return sub

        return self._write(work)

    def subscriptions(self, account_id: str) -> list[Subscription]:
        """An account's subscriptions, oldest first (the trial included)."""
        check_id(account_id, "account_id")
        with self._read() as tx:
            if tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            return tx.list_subscriptions(account_id)

    def get_subscription(self, subscription_id: str) -> Subscription:
        return self._lookup(lambda tx: _first(tx.get_subscription(subscription_id)), "subscription",
                            subscription_id, "subscription_id")

    def renew(self, at_us: int) -> int:
        """Grant every subscription period due by ``at_us``; returns how many subscriptions
        were renewed. Idempotent: each period's grant id is unique, so running it twice, late, or
        from two processes at once grants nothing twice. One that fails does not stop the others;
        the failures are raised (``Unavailable``) once all were tried."""
        renewed, failed = self._renew(at_us)
        _raise_failed(failed)
        return renewed

    def _renew(self, at_us: int) -> tuple[int, list[str]]:
        _check_instant(at_us, "at")
        with self._read() as tx:
            due = tx.subscriptions_due(at_us)
        renewed = 0
        failed: list[str] = []
        for account_id, sid in due:
            def work(tx: Transaction, sid: str = sid, account_id: str = account_id) -> bool:
                book = self._book(tx, account_id, at_us)  # locks the account first
                found = tx.get_subscription(sid)
                if found is None or not found[0].due(at_us):
                    return False  # another process got there first
                self._grant_due(tx, book, found[0], at_us)
                return True

            try:
                renewed += self._write(work)
            except CreditmeterError as exc:  # one subscription's trouble does not stop the others
                failed.append(f"{sid}: {exc}")
        return renewed, failed

    def purchase(self, account_id: str, pack_id: str, at_us: int, *,
                 order_id: str | None = None) -> Package:
        """Buy a one-off pack (add-on or resource package): a grant of its credits valid its
        days from ``at_us``. Idempotent by order id (what a payment webhook retries with)."""
        check_id(account_id, "account_id")
        check_id(pack_id, "pack")
        _check_instant(at_us, "at")
        oid = (check_new_id(order_id, "id", MAX_ORDER_ID) if order_id is not None
               else f"ord_{uuid.uuid4().hex}")
        try:
            plan = self.plans().get(pack_id)
        except NotFound:
            raise NotFound("pack", pack_id, "pack") from None
        if plan.kind not in (PlanKind.ADDON, PlanKind.PACKAGE):
            raise InputError("pack", f"{pack_id!r} is a {plan.kind.value} plan, not a pack: subscribe to it")
        gid = GrantId(f"order:{oid}")
        source = f"purchase:{pack_id}"[:255]

        def work(tx: Transaction) -> Package:
            book = self._book(tx, account_id, at_us)  # locked first: then nothing changes under us
            existing = tx.get_grant(gid)
            if existing is not None:  # a retry; or the payment of a pack auto top-up granted early
                if existing.grant.account_id != account_id or existing.grant.source not in (
                        source, f"topup:{pack_id}"[:255]):
                    raise Conflict(f"order id {oid!r} was already used for another purchase")
                tx.insert_alert(_purchased(existing.grant, pack_id, oid, at_us), at_us)
                return self._package(tx, existing.grant.account_id, gid, at_us)
            if book.account.kind is AccountKind.ENTERPRISE:
                raise InputError("pack", "packs are bought by user accounts; enterprises subscribe")
            grant = Grant(gid, AccountId(account_id), plan.grant_kind, plan.credits_uc, plan.priority, at_us,
                          grant_expiry(plan, at_us), plan.name, source, tx.next_grant_seq(), at_us)
            book.add_grant(grant, at_us)
            package = book.package(book.grant(gid) or grant, at_us)
            tx.insert_alert(_purchased(grant, pack_id, oid, at_us), at_us)
            self._persist(tx, [book], at_us)
            return package

        return self._write(work)


def plan_catalog(tx: Transaction) -> PlanCatalog:
    """The plan catalog loaded last, as ``tx`` reads it, or the shipped default while none was."""
    latest = tx.latest_plan_catalog()
    return latest[1] if latest else default_plans()


def _purchased(grant: Grant, pack_id: str, order_id: str, at_us: int) -> Alert:
    """``purchase.completed``, once per order (a retry raises nothing more)."""
    return Alert(grant.account_id, AlertType.PURCHASE_COMPLETED, f"purchase:{order_id}", at_us,
                 {"pack_id": pack_id, "order_id": order_id, "grant_id": grant.id,
                  "credits": format_credits(grant.amount_uc),
                  "expires_at": None if grant.expires_at_us is None else format_instant(grant.expires_at_us)})


def _raise_failed(failed: list[str]) -> None:
    if failed:
        raise Unavailable(f"{len(failed)} renewal(s) did not go through (the rest of the work did; "
                          f"run it again): {'; '.join(failed[:3])}")
