"""Usage events in their JSON form: validation and the idempotency fingerprint.

``{"id", "account_id", "timestamp", "model", "input_tokens", "output_tokens",
"cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cache_write_1h_tokens",
"service_tier", "quantities": {NAME: N}, "metadata": {...}}``; absent counts are 0. Each kind of
token is stated once: cache reads are not also input, reasoning tokens not also output, 1-hour
cache writes not also cache writes. ``service_tier`` is ``priority`` or ``flex``; absent, null,
``default``, ``standard`` and ``auto`` all mean the standard tier (``None``).

This is on the hot path of batch ingestion, so it is written plainly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from creditmeter.domain import EMPTY, UsageEvent
from creditmeter.errors import InputError
from creditmeter.ids import MAX_ID_LENGTH, check_text
from creditmeter.ids import check_id as check_id  # event ids are checked with it
from creditmeter.timeutil import parse_instant

MAX_TOKENS = 10**12
MAX_METADATA_BYTES = 16_384
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                "reasoning_tokens", "cache_write_1h_tokens")
EVENT_FIELDS = frozenset(("id", "account_id", "timestamp", "model", *TOKEN_FIELDS, "service_tier",
                          "quantities", "metadata"))
SERVICE_TIERS = ("priority", "flex")  # priced at their own rates; anything else is refused
STANDARD_TIER = "standard"  # how the standard tier (None) is shown
STANDARD_TIER_NAMES = ("default", STANDARD_TIER, "auto")  # what producers call the standard tier


def integral(value: object) -> object:
    """A number written with a zero fraction (``60.0``, read as a float or a Decimal) as the whole
    number it is; any other value as it is. One rule for every JSON count, whichever reader read it."""
    if isinstance(value, float | Decimal) and not isinstance(value, bool):
        # Compared before it is made an int: 1e999999999 is whole, and far too large to expand.
        if value.is_finite() if isinstance(value, Decimal) else math.isfinite(value):
            if _size(value) <= MAX_TOKENS and value == int(value):
                return int(value)
    return value


def _size(value: float | Decimal) -> float | Decimal:
    return value.copy_abs() if isinstance(value, Decimal) else abs(value)  # no context: no overflow


def as_written(value: object) -> str:
    """A JSON value as it was written (a number's digits as sent, in positional notation), for an
    error message."""
    if isinstance(value, Decimal | float):
        number = value if isinstance(value, Decimal) else Decimal(repr(value))
        return format(number, "f") if number.is_finite() and -30 <= number.adjusted() <= 30 else str(number)
    try:
        return orjson.dumps(value).decode()[:60]
    except TypeError:
        return type(value).__name__


def _count(value: object, field: str) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        value = integral(value)
        if type(value) is not int:
            if isinstance(value, Decimal | float) and value < 0:
                raise InputError(field, f"must not be negative, got {as_written(value)}")
            if isinstance(value, Decimal | float) and _size(value) > MAX_TOKENS:
                raise InputError(field, f"must be at most {MAX_TOKENS}")
            raise InputError(field, f"must be a whole number, got {as_written(value)}")
    if value < 0:
        raise InputError(field, f"must not be negative, got {value}")
    if value > MAX_TOKENS:
        raise InputError(field, f"must be at most {MAX_TOKENS}")
    return value


def parse_event(data: object) -> UsageEvent:
    """Validate one event's JSON object; raises :class:`InputError` naming the field.

    The common case (well-formed values) takes one type test per field; anything unusual
    goes through the checks that explain what is wrong.
    """
    if type(data) is not dict:
        raise InputError("event", "must be a JSON object")
    if not EVENT_FIELDS.issuperset(data):
        raise InputError(sorted(set(data) - EVENT_FIELDS)[0], "unknown field")
    get = data.get
    event_id = get("id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH or not event_id.isprintable():
        check_id(event_id, "id")
    account_id = get("account_id")
    if (type(account_id) is not str or not 0 < len(account_id) <= MAX_ID_LENGTH
            or not account_id.isprintable()):
        check_id(account_id, "account_id")
    raw_ts = get("timestamp")
    timestamp_us = None if raw_ts is None else parse_instant(raw_ts, "timestamp")
    model = get("model")
    if model is not None and (type(model) is not str or not check_text(model, "model")):
        raise InputError("model", "must be a model id string of 1-255 characters")
    # The counts are checked one by one rather than in a loop: this runs once per event.
    i_tok = get("input_tokens", 0)
    if type(i_tok) is not int or not 0 <= i_tok <= MAX_TOKENS:
        i_tok = _count(i_tok, "input_tokens")
    o_tok = get("output_tokens", 0)
    if type(o_tok) is not int or not 0 <= o_tok <= MAX_TOKENS:
        o_tok = _count(o_tok, "output_tokens")
    c_tok = get("cached_input_tokens", 0)
    if type(c_tok) is not int or not 0 <= c_tok <= MAX_TOKENS:
        c_tok = _count(c_tok, "cached_input_tokens")
    w_tok = get("cache_write_tokens", 0)
    if type(w_tok) is not int or not 0 <= w_tok <= MAX_TOKENS:
        w_tok = _count(w_tok, "cache_write_tokens")
    # Most events state neither of the later kinds: absent is the first thing looked for.
    r_tok = get("reasoning_tokens")
    if r_tok is None:
        r_tok = 0
    elif type(r_tok) is not int or not 0 <= r_tok <= MAX_TOKENS:
        r_tok = _count(r_tok, "reasoning_tokens")
    h_tok = get("cache_write_1h_tokens")
    if h_tok is None:
        h_tok = 0
    elif type(h_tok) is not int or not 0 <= h_tok <= MAX_TOKENS:
        h_tok = _count(h_tok, "cache_write_1h_tokens")
    tier = get("service_tier")
    if tier is not None:
        tier = parse_service_tier(tier)
    quantities: tuple[tuple[str, int], ...] = ()
    raw_q = get("quantities")
    if raw_q is not None:
        if type(raw_q) is not dict:
            raise InputError("quantities", "must be an object of feature name to a whole number")
        quantities = tuple(sorted((_name(k), _count(v, f"quantities.{k}")) for k, v in raw_q.items()))
    metadata = get("metadata")
    if metadata is None:
        metadata = EMPTY
    elif type(metadata) is not dict:
        raise InputError("metadata", "must be a JSON object")
    if model is None and not quantities:
        raise InputError("model", "is required (or quantities of priced features)")
    tokens = [i_tok, o_tok, c_tok, w_tok]
    return UsageEvent(event_id, account_id, timestamp_us, model, i_tok, o_tok, c_tok, w_tok,  # type: ignore[arg-type]
                      quantities, metadata,
                      fingerprint(account_id, timestamp_us, model, tokens, quantities, metadata,  # type: ignore[arg-type]
                                  r_tok, h_tok, tier),
                      r_tok, h_tok, tier)


def parse_service_tier(value: object, field: str = "service_tier") -> str | None:
    """The service tier a request ran on: ``priority``, ``flex``, or None for the standard tier
    (stated as null, ``default``, ``standard`` or ``auto``); anything else names ``field``."""
    if value is None or (type(value) is str and value in STANDARD_TIER_NAMES):
        return None
    if type(value) is str and value in SERVICE_TIERS:
        return value
    raise InputError(field, "must be priority, flex or standard (default, auto and null mean "
                     f"standard), got {as_written(value)}")


def checked(event: UsageEvent) -> UsageEvent:
    """An event made in Python rather than read from JSON, with the checks ``parse_event`` makes
    of its counts and its tier (the tier's other names read as standard)."""
    for name in TOKEN_FIELDS:
        value = getattr(event, name)
        if type(value) is not int or not 0 <= value <= MAX_TOKENS:
            raise InputError(name, f"must be a whole number from 0 to {MAX_TOKENS}, got {value!r}")
    tier = parse_service_tier(event.service_tier)
    return event if tier == event.service_tier else event._replace(service_tier=tier)


def check_something_used(event: UsageEvent) -> None:
    """Refuse an event that records no usage: no token, no feature unit (its cost would be 0
    unless its model is priced per request, which is then what it records)."""
    if not (event.input_tokens or event.output_tokens or event.cached_input_tokens
            or event.cache_write_tokens or event.reasoning_tokens or event.cache_write_1h_tokens
            or any(count for _, count in event.quantities)):
        raise InputError("event", "records no usage: give at least one of input_tokens, output_tokens, "
                         "cached_input_tokens, cache_write_tokens, reasoning_tokens, "
                         "cache_write_1h_tokens or quantities (or a model priced per request)")


def _name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InputError("quantities", "feature names must be strings of 1-255 characters")
    return check_text(value, "quantities")


def fingerprint(account_id: str, timestamp_us: int | None, model: str | None, tokens: list[int],
                quantities: tuple[tuple[str, int], ...], metadata: Mapping[str, Any],
                reasoning_tokens: int = 0, cache_write_1h_tokens: int = 0,
                service_tier: str | None = None) -> str:
    """A digest of the event's body as sent (a defaulted timestamp is not part of it).

    ``tokens`` are the first four counts (input, output, cached input, cache write). The later
    fields join the digest only when they say something, so an event without them has the
    digest it had before they existed (and is still known when it is sent again).
    """
    parts: tuple[Any, ...] = (account_id, timestamp_us, model, tokens, quantities,
                              metadata if type(metadata) is dict else dict(metadata))
    if reasoning_tokens or cache_write_1h_tokens or service_tier is not None:
        parts += ((reasoning_tokens, cache_write_1h_tokens, service_tier),)
    try:
        body = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InputError("metadata", f"must be plain JSON: {exc}") from None
    if len(body) > MAX_METADATA_BYTES:
        raise InputError("metadata", f"is too large (at most {MAX_METADATA_BYTES} bytes)")
    return hashlib.blake2b(body, digest_size=16).hexdigest()
