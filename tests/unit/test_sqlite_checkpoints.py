"""SQLite in a long-running process: write transactions share one kept connection, and the WAL's
checkpoints run on a thread of their own (the commits no longer copy and sync pages into the
database file themselves), on a real database file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from creditmeter.store.checkpoints import FALLBACK_PAGES
from creditmeter.store.sql import SqlStore

ROW = 3_000  # bytes a row: one page of the WAL each, about
ROWS = 300  # fewer pages than SQLite's own threshold for a commit to checkpoint (1,000)


def _write(store: SqlStore, rows: int) -> None:
    for _ in range(rows):
        with store.transaction(write=True) as tx:
            tx.conn.exec_driver_sql("INSERT INTO filler (data) VALUES (randomblob(?))", (ROW,))


def _copied(path: Path) -> bool:
    """Whether the rows' pages are in the database file itself (a checkpoint copied them there
    from the WAL)."""
    return path.stat().st_size > ROWS * ROW


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    made = SqlStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with made.transaction(write=True) as tx:
        tx.conn.exec_driver_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
    return made


def test_write_transactions_share_one_connection_and_survive_a_failed_one(store: SqlStore) -> None:
    seen = set()
    for _ in range(3):
        with store.transaction(write=True) as tx:
            seen.add(id(tx.conn.connection.driver_connection))
    assert len(seen) == 1
    with pytest.raises(ZeroDivisionError), store.transaction(write=True) as tx:
        tx.conn.exec_driver_sql("INSERT INTO filler (data) VALUES (x'00')")
        _ = 1 // 0
    _write(store, 1)
    with store.transaction() as tx:
        assert tx.conn.exec_driver_sql("SELECT count(*) FROM filler").scalar() == 1  # rolled back
    store.close()


def test_the_thread_checkpoints_what_commits_leave(store: SqlStore, tmp_path: Path) -> None:
    stop = store.background_checkpoints(interval_s=0.05)
    with store.transaction(write=True) as tx:
        autocheckpoint = tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert autocheckpoint == FALLBACK_PAGES  # the commits checkpoint only past this many pages
    _write(store, ROWS)
    deadline = time.monotonic() + 10
    while not _copied(tmp_path / "db.sqlite") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _copied(tmp_path / "db.sqlite")
    checkpointer = store._checkpointer
    assert checkpointer is not None and checkpointer.checkpoints > 0
    stop()
    assert store._checkpointer is None and not checkpointer._thread.is_alive()
    _write(store, 1)  # writes go on without it
    store.close()


def test_without_the_thread_nothing_is_copied_below_sqlites_threshold(store: SqlStore,
                                                                       tmp_path: Path) -> None:
    _write(store, ROWS)
    time.sleep(0.3)
    assert not _copied(tmp_path / "db.sqlite")  # every page still only in the WAL
    store.close()
