"""Raising alerts, always in the transaction of the change that raises them.

- **Thresholds a command crosses**: each book a write loads is marked with its figures once it is
  brought to the command's instant (``_mark``); when the command writes it, the figures after are
  compared with the mark (``alert_rules.crossings``): usage reached P% of an allowance package,
  balance below N credits or P% of the period's allowance, credits depleted, overage started,
  and auto top-up. The rules are the server's defaults (``Settings.alert_rules``) and the running
  plan's.
- **Renewals**: the package of a new period of a subscription's own credits, made by any command.
- **Events**: a purchase completed, a subscription cancelled, quota allocated or revoked, a hold
  refused by a limit — raised by those commands (``limit_alert`` builds the last).
- **Time**: ``tick`` raises ``package.expiring`` (a package with credits left expires within a
  rule's time) and ``subscription.ended`` (``_time_alerts``).

Each alert's dedupe key makes a second raise of the same crossing a no-op in the store, so a
retried transaction, a second worker or a repeated tick raises nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from creditmeter.alert_rules import (
    AlertRule,
    AutoTopup,
    Figures,
    PackageUse,
    PeriodOf,
    RuleKind,
    crossings,
    expiring,
    parse_auto_topup,
    topup_crossed,
)
from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.allowances import LimitStatus
from creditmeter.domain import AccountId, AccountKind, Grant, GrantId
from creditmeter.engine._unit import _check_instant
from creditmeter.engine.billing import SubscriptionCommands, plan_catalog
from creditmeter.errors import InputError, NotFound
from creditmeter.ids import check_id
from creditmeter.ledger import PERIOD_PREFIX, Book
from creditmeter.money import format_credits
from creditmeter.plans import PlanKind, grant_expiry
from creditmeter.store.base import Transaction
from creditmeter.terms import Terms, terms_from_json
from creditmeter.timeutil import MIN_US, format_instant, month_bounds

TOPUP_SOURCE = "topup:"  # a pack granted by auto top-up before its payment was confirmed


class AlertCommands(SubscriptionCommands):
    """Alerts raised by the engine's commands, and the account's auto top-up."""

    # -- auto top-up ---------------------------------------------------------------------------

    def set_auto_topup(self, account_id: str, topup: object, at_us: int) -> AutoTopup | None:
        """Set the account's auto top-up (``{below, pack, max_per_month, grant_now?}``), or turn
        it off (None). The pack must be an add-on or resource pack of the plan catalog."""
        check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        rule = None if topup is None else parse_auto_topup(topup, "auto_topup")
        if rule is not None:
            try:
                plan = self.plans().get(rule.pack_id)
            except NotFound:
                raise NotFound("pack", rule.pack_id, "auto_topup.pack") from None
            if plan.kind not in (PlanKind.ADDON, PlanKind.PACKAGE):
                raise InputError("auto_topup.pack",
                                 f"{rule.pack_id!r} is a {plan.kind.value} plan, not a pack")

        def work(tx: Transaction) -> AutoTopup | None:
            book = self._book(tx, account_id, at_us)
            if rule is not None and book.account.kind is AccountKind.ENTERPRISE:
                raise InputError("auto_topup.pack", "packs are bought by user accounts; an enterprise "
                                 "adds credits to its pool by its subscription")
            self._refresh_terms(tx, book, own_topup=rule)
            self._persist(tx, [book], at_us)
            return rule

        return self._write(work)

    def auto_topup(self, account_id: str) -> AutoTopup | None:
        check_id(account_id, "account_id")
        with self._read() as tx:
            book = tx.load_books([account_id], lapsed_by_us=MIN_US).get(AccountId(account_id))
        if book is None:
            raise NotFound("account", account_id, "account_id")
        terms: Terms | None = book.terms
        return None if terms is None else terms.own_topup

    # -- crossings -----------------------------------------------------------------------------

    @property
    def _lateness_us(self) -> int:
        return self.settings.lateness_window_s * 1_000_000

    def _rules(self, book: Book, at_us: int) -> tuple[AlertRule, ...]:
        return merged_rules(self.settings.alert_rules, book.terms, at_us)

    def _mark(self, book: Book, at_us: int) -> None:
        # Every book is marked: depleted and overage started are raised without any rule. What
        # each grant had used is noted only while a rule could watch it (a server default, the
        # plan's); marked again once a command gives the account terms that could.
        if book.mark is None:
            book.mark = Figures(book.available_uc(at_us), book.overage_uc, {})
        if book.used_before is None and (self.settings.alert_rules
                                         or (book.terms is not None and book.terms.may_alert)):
            book.used_before = {}  # from now on the book notes what each grant had used

    def _raise_alerts(self, tx: Transaction, books: list[Book], at_us: int) -> list[Alert]:
        raised: list[Alert] = []
        for book in books:
            before: Figures | None = book.mark
            alerts = list(_renewals(book))
            if before is not None and book.has_changes:
                rules = self._rules(book, at_us)
                after = Figures(book.available_uc(at_us), book.overage_uc, {})
                if any(rule.kind is RuleKind.USAGE_REACHED for rule in rules):
                    was, now = touched(book, at_us, self._lateness_us)
                    before, after = replace(before, packages=was), replace(after, packages=now)
                alerts += crossings(book.account.id, rules, before, after, at_us, period_of(book, at_us))
                terms: Terms | None = book.terms
                topup = None if terms is None else terms.own_topup
                if book.raised is None and topup is not None and topup_crossed(topup, before, after):
                    alerts += self._topup(tx, book, topup, after, at_us)
            alerts += book.raised or ()
            book.mark = book.used_before = book.raised = None
            raised += alerts
        return raised

    def _charged(self, tx: Transaction, book: Book, before_uc: int, at_us: int) -> None:
        """The auto top-up a charge of a batch crossed, decided then (its pack, with
        ``grant_now``, usable by the next charge): a batch tops up as its events recorded one by
        one would, whichever of them share it. Kept in ``book.raised``; the command's own check of
        the top-up then stands aside."""
        terms: Terms = book.terms
        topup = terms.own_topup
        raised = book.raised = book.raised if book.raised is not None else []
        after = Figures(book.available_uc(at_us), book.overage_uc, {})
        if topup is not None and topup_crossed(topup, Figures(before_uc, 0, {}), after):
            raised += self._topup(tx, book, topup, after, at_us)

    def _topup(self, tx: Transaction, book: Book, topup: AutoTopup, after: Figures,
               at_us: int) -> list[Alert]:
        """The ``topup.requested`` of a crossing, unless the month's top-ups are used up; with
        ``grant_now`` the pack is granted at once (its source says it is not paid yet)."""
        aid = book.account.id
        start, end = month_bounds(at_us)
        count = tx.topups_between(aid, start, end) + sum(  # and those of this command so far
            a.type is AlertType.TOPUP_REQUESTED for a in book.raised or ())
        if count >= topup.max_per_month:
            return []
        key = f"topup:{(format_instant(start) or '')[:7]}:{count + 1}"
        order_id = "topup_" + alert_id(aid, key).removeprefix("msg_")
        data: dict[str, object] = {
            "pack_id": topup.pack_id, "order_id": order_id, "below": format_credits(topup.below_uc),
            "available": format_credits(after.available_uc), "count": count + 1,
            "max_per_month": topup.max_per_month, "granted": False}
        if topup.grant_now:
            catalog = plan_catalog(tx)
            plan = catalog.get(topup.pack_id) if topup.pack_id in catalog else None
            gid = GrantId(f"order:{order_id}")
            if plan is not None and book.grant(gid) is None and tx.get_grant(gid) is None:
                book.add_grant(Grant(gid, AccountId(aid), plan.grant_kind, plan.credits_uc, plan.priority,
                                     at_us, grant_expiry(plan, at_us), plan.name,
                                     f"{TOPUP_SOURCE}{topup.pack_id}"[:255], tx.next_grant_seq(), at_us),
                               at_us)
                data["granted"] = True
                data["grant_id"] = gid
        return [Alert(aid, AlertType.TOPUP_REQUESTED, key, at_us, data)]

    # -- events and time -----------------------------------------------------------------------

    def _time_alerts(self, tx: Transaction, books: dict[AccountId, Book], at_us: int) -> None:
        """What time passing raised by ``at_us``: packages expiring soon (read from the stored
        packages, no book loaded), subscriptions ended."""
        ahead = self._expiring_lookahead(tx)
        for aid, gid, name, expires, left, terms_json in (tx.expiring_grants(at_us, at_us + ahead)
                                                          if ahead else ()):
            for rule in merged_rules(self.settings.alert_rules, terms_from_json(terms_json), at_us):
                if rule.kind is RuleKind.EXPIRING and expires <= at_us + rule.value:
                    tx.insert_alert(expiring(aid, rule, gid, name, left, expires, at_us), at_us)
        for aid, sid, plan_id, end in tx.subscriptions_ending(at_us - self._lateness_us, at_us):
            tx.insert_alert(Alert(aid, AlertType.SUBSCRIPTION_ENDED, f"ended:{sid}", end,
                                  {"subscription_id": sid, "plan_id": plan_id}), at_us)

    def _expiring_lookahead(self, tx: Transaction) -> int:
        """The longest ``expiring_within`` of the defaults and the plans on sale (0: none)."""
        rules = list(self.settings.alert_rules)
        for plan in plan_catalog(tx).plans:
            rules += plan.alerts
        return max((r.value for r in rules if r.kind is RuleKind.EXPIRING), default=0)


def merged_rules(defaults: tuple[AlertRule, ...], terms: Terms | None, at_us: int) -> tuple[AlertRule, ...]:
    """The server's rules, then those of the plan running at ``at_us`` that are not among them."""
    if terms is None:
        return defaults
    keys = {rule.key for rule in defaults}
    return defaults + tuple(r for r in terms.alert_rules(at_us) if r.key not in keys)


def _window_key(tx: Transaction, account_id: str, status: LimitStatus, at_us: int,
                prefix: str) -> str | None:
    """The part of a limit alert's dedupe key that names its window: the calendar window's start,
    ``total``, or for a rolling window the instant — None while an alert with ``prefix`` was raised
    less than one length of the window ago."""
    rule = status.rule
    every = rule.window.every
    if every is None:
        return "total"
    if rule.window.rolling:
        step = every.fixed_us
        assert step is not None
        last = tx.last_alert_at(account_id, prefix)
        return None if last is not None and at_us - last < step else str(at_us)
    return format_instant(status.window_start_us) or ""


def limit_alert(tx: Transaction, account_id: str, status: LimitStatus, at_us: int) -> Alert | None:
    """``limit.reached`` for a hold a limit refused: once per calendar window (or ever, for a
    ``total`` limit); for a rolling window, not again until one length of it after the last."""
    rule = status.rule
    prefix = f"limit:{rule.id}:"
    window = _window_key(tx, account_id, status, at_us, prefix)
    if window is None:
        return None
    frees = None if status.frees_at_us is None else format_instant(status.frees_at_us)
    return Alert(account_id, AlertType.LIMIT_REACHED, prefix + window, at_us,
                 {"limit_id": rule.id, "window": rule.window.text, "scope": rule.scope.value,
                  "limit": rule.describe(), "credits": format_credits(rule.credits_uc),
                  "used": format_credits(status.used_uc), "held": format_credits(status.held_uc),
                  "frees_at": frees})


def limit_usage_alerts(tx: Transaction, account_id: str, rules: tuple[AlertRule, ...],
                       status: LimitStatus, adding_uc: int, at_us: int) -> list[Alert]:
    """``credits.usage_reached`` for each ``usage_reached_percent`` a hold of ``adding_uc`` takes
    a limit's used and held credits past, once per window as for ``limit.reached``."""
    rule = status.rule
    before = status.used_uc + status.held_uc
    after = before + adding_uc
    out = []
    for watch in rules:
        if watch.kind is not RuleKind.USAGE_REACHED or not (
                before * 100 < watch.value * rule.credits_uc <= after * 100):
            continue
        prefix = f"{watch.key}:limit:{rule.id}:"
        window = _window_key(tx, account_id, status, at_us, prefix)
        if window is not None:
            out.append(Alert(account_id, AlertType.USAGE_REACHED, prefix + window, at_us,
                             {"rule": watch.key, "percent": watch.value, "limit_id": rule.id,
                              "window": rule.window.text, "limit": rule.describe(),
                              "used": format_credits(after), "credits": format_credits(rule.credits_uc)}))
    return out


def touched(book: Book, at_us: int, lateness_us: int) -> tuple[dict[str, PackageUse], dict[str, PackageUse]]:
    """The allowance packages the command used credits of (those a late event may still charge
    too: over less than ``lateness_us`` ago), before it and now. What a rollover carried out of a
    package is not counted as used."""
    was: dict[str, PackageUse] = {}
    now: dict[str, PackageUse] = {}
    made = {g.id for g in book.new_grants}
    for gid, used_before in (book.used_before or {}).items():
        g = book.grant(gid)
        if (g is None or not gid.startswith(PERIOD_PREFIX) or g.voided_at_us is not None
                or g.expires_at_us is None or g.expires_at_us <= at_us - lateness_us or g.amount_uc <= 0):
            continue
        rolled = book.rolled.get(gid)
        carried = book.grant(rolled) if rolled is not None else None
        out = carried.amount_uc if carried is not None else 0
        was[gid] = PackageUse(used_before - (0 if rolled in made else out), g.amount_uc, g.name,
                              g.expires_at_us)
        now[gid] = PackageUse(book.counters[gid].used_uc - out, g.amount_uc, g.name, g.expires_at_us)
    return was, now


def period_of(book: Book, at_us: int) -> PeriodOf:
    """The period of ``book``'s figures at ``at_us`` and its own allowance (see ``PeriodOf``)."""
    def work() -> tuple[tuple[int, int], int | None]:
        terms: Terms | None = book.terms
        sub = None if terms is None else terms.running(at_us)
        if terms is not None and sub is not None:
            for schedule in terms.schedules:
                if schedule.main and schedule.subscription_id == sub.id:
                    period = schedule.period(at_us)
                    if period is not None:
                        return period, schedule.allowance.credits_uc
        return month_bounds(at_us), None

    return work


def _renewals(book: Book) -> Iterator[Alert]:
    """``subscription.renewed`` for each package of a new period of a subscription's own credits
    the command made (the first period's is the subscription itself)."""
    terms: Terms | None = book.terms
    if terms is None or not book.new_grants:
        return
    mains = {s.subscription_id: s for s in terms.schedules if s.main}
    for g in book.new_grants:
        if not g.id.startswith(PERIOD_PREFIX):
            continue
        schedule = mains.get(g.id[len(PERIOD_PREFIX):].partition("@")[0])
        if (schedule is None or g.effective_at_us <= schedule.anchor_us
                or schedule.grant_id(g.effective_at_us) != g.id):
            continue
        sub = next(s for s in terms.subscriptions if s.id == schedule.subscription_id)
        yield Alert(book.account.id, AlertType.SUBSCRIPTION_RENEWED, f"renewed:{g.id}", g.effective_at_us,
                    {"subscription_id": sub.id, "plan_id": sub.plan.id, "grant_id": g.id,
                     "credits": format_credits(g.amount_uc),
                     "period_start": format_instant(g.effective_at_us),
                     "period_end": format_instant(g.expires_at_us) if g.expires_at_us else None})
