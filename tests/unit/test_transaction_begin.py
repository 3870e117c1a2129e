"""On PostgreSQL a transaction's BEGIN goes with its first pipeline of reads, not in a round trip
of its own; whatever runs first in it (a SQLAlchemy statement, a plain read, the pipeline that
locks and loads books), everything it runs is in the transaction, undone whole when it fails,
and the connection goes back to the pool as it came (not in autocommit)."""

from __future__ import annotations

import pytest

from creditmeter.domain import Account, AccountId, AccountKind, HoldId
from creditmeter.engine import Engine
from tests.conftest import at

CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")


@pytest.mark.parametrize("first", ["sqlalchemy", "plain-read", "pipeline"])
def test_a_failed_transaction_leaves_nothing_whatever_ran_first(engine: Engine, first: str) -> None:
    engine.create_account("a", T0)
    engine.add_grant("a", 10 * CREDIT, "addon", T0, grant_id="g")
    with pytest.raises(RuntimeError, match="undo"), engine.store.transaction(write=True) as tx:
        if first == "sqlalchemy":
            tx.insert_account(Account(AccountId("b"), "b", AccountKind.USER, T0))
        elif first == "plain-read":
            assert tx.get_hold("none") is None
        book = tx.load_books(["a"], lapsed_by_us=T0)[AccountId("a")]
        book.advance(T0)
        book.reserve(HoldId("h"), CREDIT, 60, T0)
        tx.persist([book], T0)
        tx.insert_account(Account(AccountId("c"), "c", AccountKind.USER, T0))
        raise RuntimeError("undo")
    with engine.store.transaction() as tx:
        assert tx.get_hold("h") is None
        assert tx.get_account("b") is None and tx.get_account("c") is None
    assert engine.balance("a", T0).held_uc == 0
    assert engine.check_invariants() == []
    if not engine.store.is_sqlite:  # type: ignore[attr-defined]
        with engine.store.engine.connect() as conn:  # type: ignore[attr-defined]
            assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
