"""The alerts outbox on both stores: an alert is kept once per (account, dedupe key), inside the
transaction that raised it, and goes if that transaction is rolled back."""

from __future__ import annotations

import re

import orjson
import pytest

from creditmeter.alerts import Alert, AlertType, alert_body, alert_id
from creditmeter.domain import Account, AccountKind
from tests.conftest import EngineFactory, at

T0 = at("2026-03-01T12:00:00Z")


def _alert(key: str = "balance_below:100:2026-03", account: str = "acme", **data: object) -> Alert:
    return Alert(account, AlertType.BALANCE_LOW, key, T0, data)


def test_an_alert_is_kept_once_and_read_back(make_engine: EngineFactory) -> None:
    store = make_engine().store
    with store.transaction(write=True) as tx:
        assert tx.insert_alert(_alert(balance_credits="99.5"), T0 + 1) is True
        assert tx.insert_alert(_alert(balance_credits="12"), T0 + 2) is False  # the same crossing
        # The duplicate did not fail the transaction: the next statements run and commit.
        assert tx.insert_alert(_alert("depleted", account="other"), T0 + 3) is True
    with store.transaction() as tx:
        found = tx.alerts_since(None, 0, 10)
        mine = tx.alerts_since("acme", 0, 10)
        later = tx.alerts_since(None, found[0][0], 10)
    assert [(a.account_id, a.dedupe_key) for _, _, a, _ in found] == [
        ("acme", "balance_below:100:2026-03"), ("other", "depleted")]
    seq, ident, alert, recorded = mine[0]
    assert len(mine) == 1 and recorded == T0 + 1
    assert ident == alert_id("acme", "balance_below:100:2026-03")
    assert alert == _alert(balance_credits="99.5")
    assert [a.account_id for _, _, a, _ in later] == ["other"]
    assert later[0][0] > seq


def test_a_rolled_back_transaction_leaves_no_alert(make_engine: EngineFactory) -> None:
    store = make_engine().store
    with pytest.raises(RuntimeError), store.transaction(write=True) as tx:
        tx.insert_account(Account("acme", "Acme", AccountKind.USER, T0))
        assert tx.insert_alert(_alert(), T0)
        raise RuntimeError("the change that raised it failed")
    with store.transaction(write=True) as tx:
        assert tx.alerts_since(None, 0, 10) == []
        assert tx.get_account("acme") is None
        assert tx.insert_alert(_alert(), T0) is True  # the key was never taken


def test_the_limit_and_the_order(make_engine: EngineFactory) -> None:
    store = make_engine().store
    with store.transaction(write=True) as tx:
        for n in range(5):
            tx.insert_alert(_alert(f"k{n}"), T0 + n)
    with store.transaction() as tx:
        first = tx.alerts_since(None, 0, 2)
        rest = tx.alerts_since(None, first[-1][0], 10)
    assert [a.dedupe_key for _, _, a, _ in first + rest] == ["k0", "k1", "k2", "k3", "k4"]


def test_the_id_is_stable_and_the_body_canonical() -> None:
    ident = alert_id("acme", "k")
    assert ident == alert_id("acme", "k") and re.fullmatch(r"msg_[a-z2-7]{26}", ident)
    assert alert_id("acme", "k2") != ident and alert_id("acme2", "k") != ident
    assert alert_id("a\x00b", "c") != alert_id("a", "b\x00c")
    alert = Alert("acme", AlertType.DEPLETED, "k", T0, {"z": 1, "a": ["x"]})
    assert alert_body(alert) == (b'{"data":{"a":["x"],"account_id":"acme","z":1},'
                                 b'"timestamp":"2026-03-01T12:00:00Z","type":"credits.depleted"}')
    assert orjson.loads(alert_body(alert))["type"] == "credits.depleted"


def test_the_types_are_the_spec_s() -> None:
    assert {t.value for t in AlertType} == {
        "credits.usage_reached", "credits.balance_low", "credits.depleted", "credits.overage",
        "package.expiring", "limit.reached", "subscription.renewed", "subscription.cancelled",
        "subscription.ended", "purchase.completed", "allocation.added", "allocation.revoked",
        "topup.requested"}
