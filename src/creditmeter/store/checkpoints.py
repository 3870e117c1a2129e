"""SQLite's WAL checkpoints on a thread of their own, for a long-running process (the server).

By default SQLite checkpoints inside the commit that grows the WAL past 1,000 pages: that commit
copies the pages into the database file and syncs it, some milliseconds, and in the server that
commit runs on the event loop, holding up every request in flight. With :class:`Checkpointer`
the store's connections checkpoint only past a far larger WAL (a bound, should this thread stall),
and this thread runs a passive checkpoint every ``interval_s`` on a connection of its own: it
never takes the write lock, so writers go on appending meanwhile, and the next write after a
complete checkpoint starts the WAL from its beginning again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("creditmeter.store")

INTERVAL_S = 0.25
# Pages (4 KiB) the WAL may reach before a commit checkpoints it anyway (SQLite's default: 1,000).
FALLBACK_PAGES = 16_000


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on the database at ``path``
    every ``interval_s`` seconds, until ``stop``."""

    def __init__(self, path: str, interval_s: float = INTERVAL_S) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0  # passive checkpoints run (some found nothing to copy)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="creditmeter-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint under way, if any (the last one is the database's own, when its
        last connection closes)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.error("WAL checkpoints: cannot open %s (%s); commits checkpoint past %s pages",
                      self.path, exc, FALLBACK_PAGES)
            return
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # tried again at the next interval
                    log.warning("WAL checkpoint of %s failed (%s)", self.path, exc)
        finally:
            conn.close()
