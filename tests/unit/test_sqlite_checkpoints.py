"""SQLite in a long-running process: write transactions share one kept connection, and the WAL's
checkpoints run on a thread of their own (the commits no longer copy and sync pages into the
database file themselves), on a real database file."""

from __future__ import annotations

import sys
import threading
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
    checkpointer = store._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 10
    # The thread counts a checkpoint once it has returned: the file may grow a moment before.
    while time.monotonic() < deadline:
        if _copied(tmp_path / "db.sqlite") and checkpointer.checkpoints:
            break
        time.sleep(0.05)
    assert _copied(tmp_path / "db.sqlite")
    assert checkpointer.checkpoints > 0
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


def test_threads_opening_connections_while_the_thread_starts(tmp_path: Path) -> None:
    """A server's other threads (deliveries, pending settles) open connections while its
    checkpoints are moved to their own thread: none of them fails, and every connection opened
    after it checkpoints only past the fallback."""
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the window is narrow
    errors: list[str] = []
    try:
        for attempt in range(25):
            store = SqlStore(f"sqlite:///{tmp_path / f'race{attempt}.sqlite'}")
            go = threading.Event()

            def reader(store: SqlStore = store, go: threading.Event = go) -> None:
                go.wait()
                for _ in range(20):
                    try:
                        with store.engine.connect() as conn:  # a fresh connection each time
                            conn.exec_driver_sql("SELECT 1")
                        store.engine.dispose()
                    except Exception as exc:  # noqa: BLE001 - any failure is the finding
                        errors.append(repr(exc)[:120])

            threads = [threading.Thread(target=reader) for _ in range(4)]
            for thread in threads:
                thread.start()
            go.set()
            stop = store.background_checkpoints()
            for thread in threads:
                thread.join()
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == FALLBACK_PAGES
            stop()
            store.close()
    finally:
        sys.setswitchinterval(old_interval)
    assert not errors, errors[:3]
