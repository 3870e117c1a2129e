"""Which rejected events a consumer dead-letters and which it asks for again later.

An event rejected for a reason that retrying cannot fix — malformed JSON, not an object, a schema or
field error, an unknown model or account, a timestamp older than the lateness window, an id reused
with a different body — is permanent: it goes to the dead letters. One whose timestamp is ahead of
now by more than the engine's ``max_future_s`` becomes chargeable by waiting (the producer's clock
runs ahead, or it stamped a time a moment later than the consumer's): it is handed back with a delay
until it falls inside the window — unless it is further ahead than ``MAX_AHEAD_S``, which no clock
skew explains, and is dead-lettered like the others.

An unknown account is permanent here: the consumer cannot know whether the account will ever be
made, and a message waiting for it would be delivered again for ever. Its dead letter keeps the
message as it was: once the account exists, publish it again (docs/stream.md).
"""

from __future__ import annotations

from typing import Any

from creditmeter.errors import CreditmeterError, InputError
from creditmeter.timeutil import parse_instant

US_PER_S = 1_000_000
MAX_AHEAD_S = 86_400  # further ahead than a day: a wrong timestamp, not a clock running ahead
MIN_WAIT_S = 1.0
MAX_WAIT_S = 300.0  # asked again at least this often, so a long wait shows in the counts


def wait_for(error: CreditmeterError, event: dict[str, Any] | None, at_us: int,
             max_future_s: int) -> float | None:
    """Seconds to wait before the event may be charged, or None if it never can (dead letter)."""
    if not isinstance(error, InputError) or error.field != "timestamp" or event is None:
        return None
    try:
        ts = parse_instant(event.get("timestamp"), "timestamp")
    except InputError:
        return None
    ahead_us = ts - at_us
    if ahead_us <= max_future_s * US_PER_S or ahead_us > MAX_AHEAD_S * US_PER_S:
        return None
    seconds = (ahead_us - max_future_s * US_PER_S) / US_PER_S + MIN_WAIT_S
    return min(MAX_WAIT_S, max(MIN_WAIT_S, seconds))
