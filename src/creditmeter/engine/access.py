"""API keys: creating, listing and revoking them, and who a presented key stands for."""

from __future__ import annotations

import uuid

from creditmeter.engine._unit import EngineBase, _check_instant
from creditmeter.errors import NotFound
from creditmeter.ids import check_id, check_text
from creditmeter.keys import ApiKey, Principal, Role, digest, new_secret, same_digest
from creditmeter.store.base import Transaction


class KeyCommands(EngineBase):
    """Keys of accounts and operators; their secrets are never stored."""

    def create_key(self, account_id: str | None, at_us: int, name: str | None = None) -> tuple[ApiKey, str]:
        """A new key for an account (or, with ``account_id=None``, an operator key).

        Returns the stored key and its secret; the secret is not kept and cannot be shown again.
        """
        if account_id is not None:
            check_id(account_id, "account_id")
        _check_instant(at_us, "at")
        if name is not None:
            check_text(name, "name")
        secret = new_secret()
        role = Role.ACCOUNT if account_id else Role.OPERATOR
        key = ApiKey(f"key_{uuid.uuid4().hex[:16]}", secret[:10], role, account_id, name or "", at_us, None)

        def work(tx: Transaction) -> ApiKey:
            if account_id is not None and tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            tx.insert_key(key, digest(secret))
            return key

        return self._write(work), secret

    def keys(self, account_id: str | None = None) -> list[ApiKey]:
        """Stored keys (never their secrets): an account's, or every key."""
        with self._read() as tx:
            if account_id is not None and tx.get_account(account_id) is None:
                raise NotFound("account", account_id, "account_id")
            return tx.list_keys(account_id)

    def get_key(self, key_id: str) -> ApiKey:
        return self._lookup(lambda tx: tx.get_key(key_id), "key", key_id, "key_id")

    def revoke_key(self, key_id: str, at_us: int) -> ApiKey:
        """Revoke a key; it stops working at once. Revoking again changes nothing."""
        check_id(key_id, "key_id")
        _check_instant(at_us, "at")

        def work(tx: Transaction) -> ApiKey:
            if tx.get_key(key_id) is None:
                raise NotFound("key", key_id, "key_id")
            tx.revoke_key(key_id, at_us)
            key = tx.get_key(key_id)
            assert key is not None
            return key

        return self._write(work)

    def authenticate(self, secret: str) -> Principal | None:
        """The caller a presented key stands for; None for an unknown or revoked key."""
        if not secret.startswith("cm_") or len(secret) > 255:
            return None
        presented = digest(secret)
        with self._read() as tx:
            found = tx.find_key(presented)
            if found is None or not same_digest(found[1], presented) or found[0].revoked_at_us is not None:
                return None
            key = found[0]
            admin_of = frozenset(tx.administered(key.account_id)) if key.account_id else frozenset()
        return Principal(key.role, key.account_id, key.id, admin_of)
