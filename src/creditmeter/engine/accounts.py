"""Accounts, and the database the engine runs on: what it is, reaching it, upgrading its schema."""

from __future__ import annotations

from collections.abc import Callable

from creditmeter.domain import Account, AccountId, AccountKind
from creditmeter.engine._unit import EngineBase, _check_instant, _one_of
from creditmeter.errors import Conflict, InputError, Unavailable
from creditmeter.ids import check_id, check_new_id, check_text
from creditmeter.store.base import Transaction, Transient


class AccountCommands(EngineBase):
    """Create and read accounts; the database under them."""

    @property
    def database(self) -> str:
        """The database URL's scheme (``sqlite``, ``postgresql``, ``postgresql+psycopg`` …), for
        people and health checks."""
        return self.store.url.split("://", 1)[0]

    @property
    def database_url(self) -> str:
        return self.store.url

    @property
    def local_reads(self) -> bool:
        """Whether reads are local file reads that never wait on a lock (SQLite in WAL mode):
        an event loop may run them itself rather than hand them to a thread."""
        return self.store.url.startswith("sqlite")

    def checkpoint_in_background(self) -> Callable[[], None]:
        """For a long-running process: on SQLite, the WAL's checkpoints run on a thread of their
        own rather than in the commits of the engine's calls (an event loop running them would
        wait for each). Answers how to stop them."""
        return self.store.background_checkpoints()

    def upgrade_schema(self) -> str:
        """Create or upgrade the database schema; answers the revision it is at now
        (``Unavailable`` if the database cannot be reached)."""
        try:
            self.store.upgrade()
            return self.store.revision() or ""
        except Transient as exc:
            raise Unavailable(f"the database is unreachable now ({exc})") from exc

    def close(self) -> None:
        """Give back the store's connections."""
        self.store.close()

    def create_account(self, account_id: str, at_us: int, name: str | None = None,
                       kind: str = "user") -> Account:
        """Create an account; the same call again returns it (a different one conflicts)."""
        check_new_id(account_id, "id")
        _check_instant(at_us, "at")
        account_kind = _one_of(AccountKind, kind, "kind")
        if name is not None and (not isinstance(name, str) or not check_text(name, "name").strip()):
            raise InputError("name", "must be a string of 1-255 characters")
        account = Account(AccountId(account_id), name or account_id, account_kind, at_us)

        def work(tx: Transaction) -> Account:
            existing = tx.get_account(account_id)
            if existing:
                old = existing[0]
                if old.kind is account_kind and (name is None or old.name == name):
                    return old
                raise Conflict(f"account {account_id!r} already exists with other details")
            tx.insert_account(account)
            return account

        return self._write(work)

    def account(self, account_id: str) -> tuple[Account, int] | None:
        """An account and its overage (µc), or None."""
        check_id(account_id, "account_id")
        with self._read() as tx:
            return tx.get_account(account_id)

    def ping(self) -> None:
        """Reach the database (raises ``Unavailable`` when it cannot be reached)."""
        with self._read() as tx:
            tx.latest_price_version()

    def accounts(self) -> list[tuple[Account, int]]:
        with self._read() as tx:
            return tx.list_accounts()
