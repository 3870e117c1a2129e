"""Who a presented key stands for: the operator's key from the environment, or a stored key
checked against the database and then trusted for a short while (``KeyCache``).

One ``Access`` serves the API, the console and the gateway of an app, so a key revoked through the
API stops working in all three at once.
"""

from __future__ import annotations

import time

from creditmeter.engine import Engine
from creditmeter.keys import ENV_OPERATOR_KEY_ID, Principal, Role, check_admin_key, digest, same_digest


def bearer_secret(authorization: str | None) -> str | None:
    """The key an ``Authorization: Bearer KEY`` header presents; None when it presents none."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


class KeyCache:
    """Keys checked in the last ``ttl_s`` seconds (by digest), at most ``size`` of them."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: dict[str, tuple[float, Principal]] = {}
        self.generation = 0  # bumped by clear(): a lookup that began before it is not kept

    def get(self, key_digest: str) -> Principal | None:
        entry = self._entries.get(key_digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key_digest, None)
            return None
        return entry[1]

    def put(self, key_digest: str, principal: Principal, generation: int) -> None:
        """Keep what a lookup found, unless the cache was cleared since it began."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key_digest] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


class Access:
    """The key check of one app. ``admin_key`` is an operator key taken from the environment;
    ``key_cache_s`` how long a checked key is trusted without asking the database again (a key
    revoked through this app stops working at once; one revoked elsewhere within that time)."""

    def __init__(self, engine: Engine, admin_key: str | None, key_cache_s: float) -> None:
        self.engine = engine
        admin_key = check_admin_key(admin_key)
        self._admin_digest = digest(admin_key) if admin_key else None
        self.cache = KeyCache(key_cache_s)

    def principal(self, secret: str) -> Principal | None:
        """Who ``secret`` is (through the key cache); None for an unknown or revoked key."""
        presented = digest(secret)
        if self._admin_digest is not None and same_digest(presented, self._admin_digest):
            return Principal(Role.OPERATOR, None, ENV_OPERATOR_KEY_ID)
        principal = self.cache.get(presented)
        if principal is None:
            generation = self.cache.generation
            principal = self.engine.authenticate(secret)
            if principal is None:
                return None
            self.cache.put(presented, principal, generation)
        return principal

    def forget(self) -> None:
        """Drop every cached key: one was revoked, or someone's rights changed."""
        self.cache.clear()
