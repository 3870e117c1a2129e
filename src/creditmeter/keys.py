"""API keys and who holds them: keys and roles.

A key is 256 random bits shown once; only its SHA-256 is stored. A fast hash is right here: the
key has full entropy, so there is nothing to stretch, and lookups stay cheap on every request.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from creditmeter.errors import InputError

KEY_PREFIX = "cm_"
MIN_ADMIN_KEY_LENGTH = 32


class Role(enum.StrEnum):
    OPERATOR = "operator"  # everything
    ACCOUNT = "account"    # its own account's data and the gateway


class MemberRole(enum.StrEnum):
    ADMIN = "admin"    # manages the enterprise's pool and members
    MEMBER = "member"  # uses the quota the enterprise adds


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the secret itself)."""

    id: str
    prefix: str
    role: Role
    account_id: str | None
    name: str
    created_at_us: int
    revoked_at_us: int | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, or an account (and the enterprises it administers)."""

    role: Role
    account_id: str | None
    key_id: str
    admin_of: frozenset[str] = frozenset()

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    def can_read(self, account_id: str) -> bool:
        """Whether this caller may see ``account_id``'s data (its own, or an enterprise it
        administers; the operator sees everything)."""
        return self.is_operator or account_id == self.account_id or account_id in self.admin_of

    def can_manage(self, enterprise_id: str) -> bool:
        """Whether this caller may manage an enterprise's members and quota (the operator, or one
        of its admins)."""
        return self.is_operator or enterprise_id in self.admin_of

    def can_manage_keys(self, account_id: str | None) -> bool:
        return self.is_operator or (account_id is not None and account_id == self.account_id)


# The key id of the operator key given in the environment (it is not stored, so not revocable).
ENV_OPERATOR_KEY_ID = "env:CREDITMETER_ADMIN_KEY"


def check_admin_key(value: str | None) -> str | None:
    """The operator key from the environment, if set; too short a one is refused."""
    if value is not None and len(value) < MIN_ADMIN_KEY_LENGTH:
        raise InputError("CREDITMETER_ADMIN_KEY", f"must be at least {MIN_ADMIN_KEY_LENGTH} characters")
    return value or None


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode(), b.encode())
