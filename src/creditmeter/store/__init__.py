"""Storage: one narrow interface (:class:`Store` / :class:`Transaction`) and its SQL implementation.

The engine only talks to a :class:`Transaction`: it loads books, reads events and prices, and
writes what a command changed, all inside one transaction that commits or rolls back whole.
Helpers never commit. SQLite is the embedded default; the SQL implementation is written in
SQLAlchemy Core so that other databases plug in behind the same interface.
"""

from creditmeter.store.base import Store, Transaction
from creditmeter.store.connection import SqlStore, open_store

__all__ = ["SqlStore", "Store", "Transaction", "open_store"]
