"""Each alert type in plain words: the fields the alert carries when present, a general sentence
for the type when they are missing or unusable; and who a reader is."""

from __future__ import annotations

import pytest

from creditmeter.alerts import AlertType as A
from creditmeter.keys import ENV_OPERATOR_KEY_ID, Principal, Role
from creditmeter.notices import _GENERIC, notice_text, reader_of
from tests.conftest import at

NOW = at("2026-12-27T12:00:00Z")

CASES = [
    (A.USAGE_REACHED, {"percent": 80, "package_name": "Professional (monthly)",
                       "period_end": "2026-12-30T00:00:00Z"},
     "You have used 80% of Professional (monthly) credits for the period that ends 2026-12-30"),
    (A.USAGE_REACHED, {"percent": 100, "limit_id": "x", "window": "7d", "credits": "50"},
     "You have used 100% of your 7-day usage limit of 50 credits"),
    (A.PACKAGE_EXPIRING, {"package_name": "Trial credits", "remaining": "12.5",
                          "expires_at": "2026-12-30T12:00:00Z"},
     "Your trial credits (12.5 left) expire in 3 days, on 2026-12-30"),
    (A.PACKAGE_EXPIRING, {"package_name": "Spring pack", "expires_at_us": NOW + 2 * 3_600_000_000},
     "Your Spring pack credits expire in 2 hours"),
    (A.PACKAGE_EXPIRING, {"remaining_uc": 1_500_000, "expires_at": "2026-12-26"},
     "Your credits (1.5 left) expired on 2026-12-26"),
    (A.LIMIT_REACHED, {"limit_id": "plan-1", "window": "rolling 5h", "credits": "300",
                       "frees_at": "2026-12-27T17:00:00Z"},
     "You reached your 5-hour usage limit of 300 credits; it frees up at 2026-12-27 17:00 UTC"),
    (A.LIMIT_REACHED, {"limit_id": "daily-cap", "window": "1d", "credits": "120"},
     "You reached your daily usage limit of 120 credits"),
    (A.LIMIT_REACHED, {"limit_id": "cap", "window": "sometimes"}, "You reached your usage limit cap"),
    (A.BALANCE_LOW, {"credits": "100", "remaining": "99.5"}, "Your credits are below 100 (99.5 left)"),
    (A.DEPLETED, {"anything": 1}, "Your credits are used up"),
    (A.OVERAGE, {}, "Credits are being used in overage"),
    (A.TOPUP_REQUESTED, {"pack_id": "P"}, "Auto top-up: pack P requested"),
    (A.SUBSCRIPTION_RENEWED, {"plan_id": "pro", "period_end": "2027-01-27T00:00:00Z"},
     "Your subscription to pro was renewed; it runs until 2027-01-27"),
    (A.SUBSCRIPTION_CANCELLED, {"plan_id": "pro", "ends_at": "2027-01-27T00:00:00Z"},
     "Your subscription to pro was cancelled; it ends on 2027-01-27"),
    (A.SUBSCRIPTION_ENDED, {"plan_id": "pro"}, "Your subscription to pro has ended"),
    (A.PURCHASE_COMPLETED, {"pack_id": "addon-1000", "credits": "1000", "order_id": "o1"},
     "Purchase of pack addon-1000 completed (1000 credits)"),
    (A.ALLOCATION_ADDED, {"amount": "300", "enterprise_id": "acme"},
     "Enterprise quota of 300 credits added by acme"),
    (A.ALLOCATION_REVOKED, {"amount_uc": 5_500_000}, "Enterprise quota of 5.5 credits revoked"),
]


@pytest.mark.parametrize(("kind", "data", "text"), CASES,
                         ids=[c[0].value + str(i) for i, c in enumerate(CASES)])
def test_the_words_of_each_type(kind: A, data: dict[str, object], text: str) -> None:
    assert notice_text(kind, data, NOW) == text


@pytest.mark.parametrize("kind", list(A))
def test_missing_or_unusable_fields_fall_back(kind: A) -> None:
    assert notice_text(kind, {}, NOW) == _GENERIC[kind]
    junk = {"percent": {"x": 1}, "package_name": ["a"], "remaining": True, "expires_at": "soon",
            "window": 5, "pack_id": "\x00", "plan_id": None, "amount": 1.5, "credits": ""}
    said = notice_text(kind, junk, NOW)  # never fails, always says something
    assert said and "None" not in said and "\x00" not in said, said


def test_readers() -> None:
    assert reader_of(Principal(Role.ACCOUNT, "alice", "key_a")) == "account:alice"
    assert reader_of(Principal(Role.ACCOUNT, "alice", "key_b", frozenset({"acme"}))) == "account:alice"
    assert reader_of(Principal(Role.OPERATOR, None, "key_ops")) == "key:key_ops"
    assert reader_of(Principal(Role.OPERATOR, None, ENV_OPERATOR_KEY_ID)) == "operator"


def test_the_words_of_alerts_as_the_engine_raises_them() -> None:
    """Data shaped by the raisers themselves, not written here."""
    from creditmeter.alert_rules import Figures, parse_alert_rules
    from creditmeter.alert_rules import crossings as raise_crossings

    rules = parse_alert_rules([{"balance_below": 100}], "alerts")
    period = ((at("2026-03-01"), at("2026-04-01")), None)
    raised = raise_crossings("a", rules, Figures(150_000_000, 0, {}), Figures(0, 5_000_000, {}),
                             at("2026-03-02"), lambda: period)
    words = {alert.type: notice_text(alert.type, alert.data, at("2026-03-02")) for alert in raised}
    assert words == {A.BALANCE_LOW: "Your credits are below 100 (0 left)",
                     A.DEPLETED: "Your credits are used up (5 credits in overage)",
                     A.OVERAGE: "Credits are being used in overage (5 so far)"}
    assert notice_text(A.ALLOCATION_REVOKED, {"allocation_id": "q1", "enterprise_id": "initech",
                                              "returned": "10"}, 0) == \
        "Enterprise quota of 10 credits revoked by initech"
    assert notice_text(A.TOPUP_REQUESTED, {"pack_id": "addon-1000", "granted": True}, 0).startswith(
        "Auto top-up: pack addon-1000 added to your credits")
