"""On PostgreSQL the accounts a write loads stay locked until the write ends, whatever ran first
in its transaction (the pipeline that loads them, a plain read, a SQLAlchemy statement): the
BEGIN sent ahead must not leave the lock to a pipeline of its own, let go at once."""

from __future__ import annotations

import psycopg
import pytest

from creditmeter.domain import Account, AccountId, AccountKind, HoldId
from creditmeter.engine import Engine
from tests.conftest import at

CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")


def _locked_elsewhere(engine: Engine, account_id: str) -> bool:
    """Whether another session finds the account's row locked (NOWAIT: no waiting)."""
    url = engine.store.url.replace("postgresql+psycopg://", "postgresql://")  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as other:
        try:
            other.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE NOWAIT", (account_id,))
        except psycopg.errors.LockNotAvailable:
            return True
    return False


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
@pytest.mark.parametrize("first", ["pipeline", "plain-read", "sqlalchemy"])
@pytest.mark.parametrize("load", ["books", "book_of_hold"])
def test_the_accounts_a_write_loads_stay_locked_till_it_ends(engine: Engine, first: str, load: str) -> None:
    engine.create_account("a", T0)
    engine.add_grant("a", 10 * CREDIT, "addon", T0, grant_id="g")
    engine.reserve("a", CREDIT, T0, hold_id="h", ttl_s=60)
    with engine.store.transaction(write=True) as tx:
        if first == "plain-read":
            assert tx.get_hold("none") is None
        elif first == "sqlalchemy":
            tx.insert_account(Account(AccountId("b"), "b", AccountKind.USER, T0))
        if load == "books":
            book = tx.load_books(["a"], lapsed_by_us=T0)[AccountId("a")]
        else:
            found = tx.load_book_of_hold("h", lapsed_by_us=T0)
            assert found is not None
            book = found
        assert _locked_elsewhere(engine, "a")
        book.advance(T0)
        book.reserve(HoldId("h2"), CREDIT, 60, T0)
        tx.persist([book], T0)
        assert _locked_elsewhere(engine, "a")
    assert not _locked_elsewhere(engine, "a")
