"""The SQL store's public names, where callers have always imported them from.

The store itself lives in ``connection`` (connecting, schema, transactions), ``reads``,
``writes`` with one writer per dialect, and ``reconcile``.
"""

from creditmeter.store.connection import SCHEMA_REVISION, SqlStore, SqlTransaction, _driver_url, open_store

__all__ = ["SCHEMA_REVISION", "SqlStore", "SqlTransaction", "_driver_url", "open_store"]
