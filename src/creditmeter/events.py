"""Usage events in their JSON form (SPEC §5): validation and the idempotency fingerprint.

``{"id", "account_id", "timestamp", "model", "input_tokens", "output_tokens",
"cached_input_tokens", "cache_write_tokens", "quantities": {NAME: N}, "metadata": {...}}``;
absent counts are 0. This is on the hot path of batch ingestion, so it is written plainly.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from creditmeter.domain import MAX_ID_LENGTH, AccountId, EventId, UsageEvent
from creditmeter.errors import InputError
from creditmeter.timeutil import parse_instant

MAX_TOKENS = 10**12
MAX_METADATA_BYTES = 16_384
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
EVENT_FIELDS = frozenset(("id", "account_id", "timestamp", "model", *TOKEN_FIELDS,
                          "quantities", "metadata"))


def check_id(value: object, field: str) -> str:
    """An identifier: a non-empty string of at most 255 characters, no control characters."""
    if not isinstance(value, str):
        raise InputError(field, "is required and must be a string" if value is None
                         else f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise InputError(field, f"must be 1-{MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable():
        raise InputError(field, "must not contain control characters")
    return value


def _count(value: object, field: str) -> int:
    if type(value) is not int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(field, f"must be a whole number, got {value!r}")
    if value < 0:
        raise InputError(field, f"must not be negative, got {value}")
    if value > MAX_TOKENS:
        raise InputError(field, f"must be at most {MAX_TOKENS}")
    return value


def parse_event(data: object) -> UsageEvent:
    """Validate one event's JSON object; raises :class:`InputError` naming the field."""
    if not isinstance(data, dict):
        raise InputError("event", "must be a JSON object")
    if not EVENT_FIELDS.issuperset(data):
        unknown = sorted(set(data) - EVENT_FIELDS)[0]
        raise InputError(unknown, "unknown field")
    event_id = check_id(data.get("id"), "id")
    account_id = check_id(data.get("account_id"), "account_id")
    raw_ts = data.get("timestamp")
    timestamp_us = None if raw_ts is None else parse_instant(raw_ts, "timestamp")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 255):
        raise InputError("model", "must be a model id string of 1-255 characters")
    get = data.get
    tokens = [0, 0, 0, 0]
    for i, name in enumerate(TOKEN_FIELDS):
        value = get(name)
        if value is not None:
            tokens[i] = value if type(value) is int and 0 <= value <= MAX_TOKENS else _count(value, name)
    quantities: tuple[tuple[str, int], ...] = ()
    raw_q = get("quantities")
    if raw_q:
        if not isinstance(raw_q, dict):
            raise InputError("quantities", "must be an object of feature name to a whole number")
        quantities = tuple(sorted((_name(k), _count(v, f"quantities.{k}")) for k, v in raw_q.items()))
    metadata = get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise InputError("metadata", "must be a JSON object")
    if model is None and not quantities:
        raise InputError("model", "is required (or quantities of priced features)")
    return UsageEvent(
        id=EventId(event_id), account_id=AccountId(account_id), timestamp_us=timestamp_us,
        model=model, input_tokens=tokens[0], output_tokens=tokens[1],
        cached_input_tokens=tokens[2], cache_write_tokens=tokens[3], quantities=quantities,
        metadata=metadata, fingerprint=fingerprint(account_id, timestamp_us, model, tokens,
                                                   quantities, metadata),
    )


def _name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InputError("quantities", "feature names must be strings of 1-255 characters")
    return value


def fingerprint(account_id: str, timestamp_us: int | None, model: str | None, tokens: list[int],
                quantities: tuple[tuple[str, int], ...], metadata: dict[str, Any]) -> str:
    """A digest of the event's body as sent (a defaulted timestamp is not part of it)."""
    try:
        body = orjson.dumps((account_id, timestamp_us, model, tokens, quantities, metadata),
                            option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InputError("metadata", f"must be plain JSON: {exc}") from None
    if len(body) > MAX_METADATA_BYTES:
        raise InputError("metadata", f"is too large (at most {MAX_METADATA_BYTES} bytes)")
    return hashlib.blake2b(body, digest_size=16).hexdigest()
