"""Notices: an account's alerts as its people read them, in plain words, each marked read per reader.

A notice is a stored :class:`~creditmeter.alerts.Alert` seen by one *reader*: whether that reader
marked it read, and a sentence saying what happened (:func:`notice_text`). Read marks are the
reader's own, so one person marking a notice read leaves it unread for everyone else.

Who a reader is (:func:`reader_of`): a person signs in with a key, and the person behind an account
key is its account, so every key of an account shares its marks (``account:alice``); an operator
key stands for whoever holds it (``key:key_…``); the operator key from the environment and the
command line are the machine's operator (``operator``). An enterprise admin reads the enterprise's
notices as the admin's own account, so each admin has marks of their own.

The sentence is built from what the raiser put in the alert's data, field by field when present,
and falls back to a general sentence for the type, so a notice always reads; amounts are the
decimal strings the data carries, instants ISO 8601 strings (or whole µs). Pure: no I/O, no clock
(``at_us``, "now", is passed in for "in 3 days").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from creditmeter.alerts import AlertType
from creditmeter.errors import InputError
from creditmeter.keys import ENV_OPERATOR_KEY_ID, Principal
from creditmeter.money import format_credits
from creditmeter.recurrence import parse_window
from creditmeter.timeutil import DAY_US, MAX_US, MIN_US, parse_instant, to_datetime

OPERATOR_READER = "operator"  # the command line and the environment's operator key
MAX_PAGE = 200
MAX_SEQ = 2**63 - 1  # a seq is a BIGINT


def reader_of(principal: Principal) -> str:
    """The reader whose marks a caller sees and sets (see the module's docstring)."""
    if not principal.is_operator:
        assert principal.account_id is not None
        return f"account:{principal.account_id}"
    if principal.key_id == ENV_OPERATOR_KEY_ID:
        return OPERATOR_READER
    return f"key:{principal.key_id}"


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert as a reader sees it.

    Attributes:
      seq: its place among all alerts (later is larger): the cursor of the pages.
      id: the alert's id (``msg_…``), the same its webhooks carry.
      type: what it tells.
      at_us: the instant of the change that raised it.
      data: what the alert carries besides its account.
      read: whether this reader marked it read.
      text: the plain-words sentence.
    """

    seq: int
    id: str
    type: AlertType
    at_us: int
    data: Mapping[str, object]
    read: bool
    text: str


@dataclass(frozen=True, slots=True)
class NoticePage:
    """A page of an account's notices, newest first.

    Attributes:
      notices: the page.
      unread: how many of the account's notices this reader has not marked read (all of them,
        not only this page's).
      next_before: the ``before`` of the next (older) page; None when this is the last.
    """

    notices: list[Notice]
    unread: int
    next_before: int | None


# -- the words ------------------------------------------------------------------------------------


def notice_text(kind: AlertType, data: Mapping[str, object], at_us: int) -> str:
    """What an alert of ``kind`` with ``data`` says to the account's people at ``at_us``."""
    words = _WORDS.get(kind)
    text = words(_Fields(data, at_us)) if words is not None else None
    return text or _GENERIC[kind]


_GENERIC = {
    AlertType.USAGE_REACHED: "You have used a large part of your credits for this period",
    AlertType.BALANCE_LOW: "Your credits are running low",
    AlertType.DEPLETED: "Your credits are used up",
    AlertType.OVERAGE: "Credits are being used in overage",
    AlertType.PACKAGE_EXPIRING: "Some of your credits expire soon",
    AlertType.LIMIT_REACHED: "You reached a usage limit",
    AlertType.SUBSCRIPTION_RENEWED: "Subscription renewed",
    AlertType.SUBSCRIPTION_CANCELLED: "Subscription cancelled",
    AlertType.SUBSCRIPTION_ENDED: "Subscription ended",
    AlertType.PURCHASE_COMPLETED: "Purchase completed",
    AlertType.ALLOCATION_ADDED: "Enterprise quota added",
    AlertType.ALLOCATION_REVOKED: "Enterprise quota revoked",
    AlertType.TOPUP_REQUESTED: "Auto top-up requested",
}
assert set(_GENERIC) == set(AlertType)

# Package labels the engine gives when none is set ("Trial credits"): said "your trial credits".
_KIND_LABELS = frozenset(f"{kind} credits" for kind in
                         ("trial", "promo", "subscription", "package", "allocation", "rollover"))


class _Fields:
    """An alert's data read defensively: each getter is None for a missing or unusable field."""

    def __init__(self, data: Mapping[str, object], at_us: int) -> None:
        self.data = data
        self.at_us = at_us

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip() and value.isprintable():
            return value.strip()[:200]
        return None

    def credits(self, key: str) -> str | None:
        """An amount: the decimal string given (``credits``), else whole µc (``credits_uc``)."""
        given = self.text(key)
        if given is not None:
            return given
        uc = self.data.get(f"{key}_uc")
        return format_credits(uc) if type(uc) is int else None

    def instant(self, key: str) -> int | None:
        value = self.data.get(key, self.data.get(f"{key}_us"))
        if type(value) is int:
            return value if MIN_US <= value <= MAX_US else None
        try:
            return parse_instant(value, key) if isinstance(value, str) else None
        except InputError:
            return None

    def day(self, key: str) -> str | None:
        at = self.instant(key)
        return None if at is None else to_datetime(at).strftime("%Y-%m-%d")

    def moment(self, key: str) -> str | None:
        at = self.instant(key)
        return None if at is None else to_datetime(at).strftime("%Y-%m-%d %H:%M UTC")

    def package(self) -> str | None:
        """The package's name as "X credits" ("your trial credits", "Professional credits")."""
        name = self.text("package_name")
        if name is None:
            return None
        if name.lower() in _KIND_LABELS:
            return name.lower()
        return name if name.lower().endswith("credits") else f"{name} credits"


def _usage_reached(f: _Fields) -> str | None:
    percent = f.text("percent")
    if percent is None:
        return None
    limit = _limit_name(f)
    if limit is not None:
        return f"You have used {percent}% of your {limit}"
    package = f.package()
    text = f"You have used {percent}% of {package or 'your credits'}"
    end = f.day("period_end")
    return text + (f" for the period that ends {end}" if end else " for this period")


def _balance_low(f: _Fields) -> str | None:
    remaining = f.credits("available") or f.credits("remaining")
    below = f.credits("threshold") or f.credits("credits")
    if remaining is None and below is None:
        return None
    text = f"Your credits are below {below}" if below is not None else "Your credits are running low"
    return text + (f" ({remaining} left)" if remaining is not None else "")


def _expiring(f: _Fields) -> str | None:
    expires = f.instant("expires_at")
    package, remaining = f.package(), f.credits("remaining")
    if expires is None and package is None:
        return None
    text = f"Your {package or 'credits'}" + (f" ({remaining} left)" if remaining is not None else "")
    if expires is None:
        return text + " expire soon"
    left_us = expires - f.at_us
    if left_us <= 0:
        return text + f" expired on {f.day('expires_at')}"
    if left_us < DAY_US:
        hours = -(-left_us // (DAY_US // 24))
        return text + f" expire in {hours} hour{'s' if hours != 1 else ''}"
    days = -(-left_us // DAY_US)
    return text + f" expire in {days} days, on {f.day('expires_at')}"


def _limit_name(f: _Fields) -> str | None:
    """"5-hour usage limit of 300 credits", from the limit's window and credits."""
    window, limit_id, limit_credits = f.text("window"), f.text("limit_id"), f.credits("credits")
    words = _window_words(window) if window is not None else None
    if words is None and limit_id is None:
        return None
    name = f"{words} usage limit" if words else f"usage limit {limit_id}"
    return name + (f" of {limit_credits} credits" if limit_credits is not None else "")


def _window_words(window: str) -> str | None:
    """``rolling 5h`` → "5-hour", ``1d`` → "daily", ``1mo`` → "monthly", ``total`` → "total"."""
    try:
        parsed = parse_window(window, "window")
    except InputError:
        return None
    if parsed.every is None:
        return "total"
    single = {"h": "hourly", "d": "daily", "w": "weekly", "mo": "monthly", "y": "yearly"}
    unit = {"h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}[parsed.every.unit]
    if parsed.every.count == 1 and not parsed.rolling:
        return single[parsed.every.unit]
    return f"{parsed.every.count}-{unit}"


def _limit_reached(f: _Fields) -> str | None:
    name = _limit_name(f)
    if name is None:
        return None
    frees = f.moment("frees_at")
    return f"You reached your {name}" + (f"; it frees up at {frees}" if frees else "")


def _subscription(done: str) -> Callable[[_Fields], str | None]:
    def words(f: _Fields) -> str | None:
        plan = f.text("plan_name") or f.text("plan_id")
        if plan is None:
            return None
        if done == "ended":
            return f"Your subscription to {plan} has ended"
        text = f"Your subscription to {plan} was {done}"
        if done == "renewed":
            until = f.day("period_end")
            return text + (f"; it runs until {until}" if until else "")
        ends = f.day("ends_at") or f.day("period_end")
        return text + (f"; it ends on {ends}" if ends else "")
    return words


def _purchase(f: _Fields) -> str | None:
    what = f.text("package_name") or (f"pack {f.text('pack_id')}" if f.text("pack_id") else None)
    amount = f.credits("credits") or f.credits("amount")
    if what is None and amount is None:
        return None
    bought = what if what is not None else f"{amount} credits"
    return f"Purchase of {bought} completed" + (f" ({amount} credits)" if what and amount else "")


def _allocation(done: str) -> Callable[[_Fields], str | None]:
    def words(f: _Fields) -> str | None:
        amount = f.credits("amount") or f.credits("returned") or f.credits("credits")
        if amount is None:
            return None
        source = f.text("enterprise_id")
        return f"Enterprise quota of {amount} credits {done}" + (f" by {source}" if source else "")
    return words


def _topup(f: _Fields) -> str | None:
    pack = f.text("pack_id")
    if pack is None:
        return None
    if f.data.get("granted") is True:
        return f"Auto top-up: pack {pack} added to your credits (its payment is being confirmed)"
    return f"Auto top-up: pack {pack} requested"


def _depleted(f: _Fields) -> str | None:
    overage = f.credits("overage")
    return "Your credits are used up" + (f" ({overage} credits in overage)" if overage not in (None, "0")
                                         else "")


def _overage(f: _Fields) -> str | None:
    overage = f.credits("overage")
    return None if overage is None else f"Credits are being used in overage ({overage} so far)"


_WORDS: dict[AlertType, Callable[[_Fields], str | None]] = {
    AlertType.USAGE_REACHED: _usage_reached,
    AlertType.BALANCE_LOW: _balance_low,
    AlertType.DEPLETED: _depleted,
    AlertType.OVERAGE: _overage,
    AlertType.PACKAGE_EXPIRING: _expiring,
    AlertType.LIMIT_REACHED: _limit_reached,
    AlertType.SUBSCRIPTION_RENEWED: _subscription("renewed"),
    AlertType.SUBSCRIPTION_CANCELLED: _subscription("cancelled"),
    AlertType.SUBSCRIPTION_ENDED: _subscription("ended"),
    AlertType.PURCHASE_COMPLETED: _purchase,
    AlertType.ALLOCATION_ADDED: _allocation("added"),
    AlertType.ALLOCATION_REVOKED: _allocation("revoked"),
    AlertType.TOPUP_REQUESTED: _topup,
}
