"""Where messages go: NATS subject patterns, and the check that a consumer never reads its own
dead letters."""

from __future__ import annotations

from creditmeter.errors import InputError


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a NATS subject pattern (``*`` one token, ``>`` the rest) matches a literal subject."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def check_subject(subject: str, field: str, *, literal: bool) -> None:
    """A well-formed subject (no empty token, no space); ``literal``: no wildcard either."""
    tokens = subject.split(".")
    if not subject or any(not t or any(c.isspace() for c in t) for t in tokens):
        raise InputError(field, f"{subject!r} is not a subject: dot-separated tokens, no spaces")
    if literal and any(t in ("*", ">") for t in tokens):
        raise InputError(field, f"{subject!r} must be a subject without wildcards")
    if any(t == ">" for t in tokens[:-1]):
        raise InputError(field, f"{subject!r}: '>' may only be the last token")


def check_dead_letter(reads: str, dead_letter: str) -> None:
    """Refuse a dead-letter subject the consumer itself reads: its dead letters would come back to
    it, be rejected again, and go round for ever."""
    check_subject(reads, "subject", literal=False)
    check_subject(dead_letter, "dead-letter", literal=True)
    if subject_matches(reads, dead_letter):
        raise InputError("dead-letter", f"{dead_letter!r} is read by this consumer (it reads "
                         f"{reads!r}): dead letters must go to a subject it does not read")


def check_durable(durable: str) -> None:
    """A durable consumer's (or Kafka group's) name: not empty, no ``.``, ``*``, ``>``, ``/``,
    ``\\`` or whitespace (NATS uses it in subjects)."""
    if not durable or any(c in ".*>/\\" or c.isspace() for c in durable):
        raise InputError("durable", f"{durable!r} is not a durable name: not empty, and no '.', "
                         "'*', '>', '/', '\\' or whitespace")
