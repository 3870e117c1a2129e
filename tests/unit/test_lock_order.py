"""On PostgreSQL a write locks its accounts in code point order, the order it takes them in
(sorted in Python, in chunks), whatever the database's collation: two writers that each lock more
accounts than one statement holds then lock them in the same order and cannot deadlock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from creditmeter.engine import Engine
from creditmeter.store.sql import SqlStore
from tests.conftest import Postgres, at

T0 = at("2026-11-02T10:00")
IDS = ["b1", "B1", "a1", "C1", "x-1", "Z9", "c1", "x_1"]


@pytest.fixture
def english_collation(postgres: Postgres | str) -> Iterator[Engine]:
    """An engine on a database whose default collation is ICU English (a < b < B < C)."""
    if isinstance(postgres, str):
        pytest.skip(postgres)
    name = f"cm_icu_{uuid.uuid4().hex[:12]}"
    postgres._run(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                  "LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'")
    store = SqlStore(postgres.url(name))
    try:
        store.upgrade()
        yield Engine(store)
    finally:
        store.close()
        postgres.drop(name)


def test_a_write_locks_its_accounts_in_code_point_order(english_collation: Engine) -> None:
    engine = english_collation
    for account in IDS:
        engine.create_account(account, T0)
    store = engine.store
    with store.transaction() as tx:  # the collation does order them otherwise here
        assert [r[0] for r in tx.conn.exec_driver_sql("SELECT id FROM accounts ORDER BY id")] != sorted(IDS)
    with store.transaction(write=True) as tx:
        assert list(tx.load_books(IDS, lapsed_by_us=T0)) == sorted(IDS)
    with store.transaction(write=True) as tx:
        cache = dict(tx.load_books(IDS, lapsed_by_us=T0))
    with store.transaction(write=True) as tx:  # the accounts' versions read (and locked) first
        assert sorted(tx.load_books(IDS, cache, lapsed_by_us=T0)) == sorted(IDS)
        rows = tx._fetch(f"SELECT id, version FROM accounts WHERE id = ANY(%b::text[]){tx._lock}", (IDS,))
        assert [r[0] for r in rows] == sorted(IDS)
