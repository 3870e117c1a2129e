"""Identifiers: the one rule for the ids that name stored objects, and the looser one for the ids
other systems send.

An id that names something creditmeter keeps — an account (an enterprise is one), a package
(grant), a hold, a subscription, an order, a quota allocation, a plan — is made of
``ID_CHARACTERS``: it starts with a letter or digit and goes on with letters, digits and
``. _ : @ -``, 255 characters at most. Such an id works unescaped in a URL path segment, a file
name, a CSV cell and a log line. The rule applies when the object is made; an object made before
the rule keeps its id and stays readable by it (lookups check only :func:`check_id`).

A usage event's id is the producer's idempotency key (a request id, a UUID, a path...): it never
appears in a URL path, so it may be any printable text of 1-255 characters (:func:`check_id`).
"""

from __future__ import annotations

import re

from creditmeter.errors import InputError

MAX_ID_LENGTH = 255
ID_CHARACTERS = "letters, digits and . _ : @ - (starting with a letter or digit)"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$"
_NEW_ID = re.compile(ID_PATTERN)
_FIRST = re.compile(r"[A-Za-z0-9]")
_REST = re.compile(r"[A-Za-z0-9._:@-]")
# Control characters (NUL among them, which PostgreSQL cannot store) and lone UTF-16 surrogates
# (what undecodable bytes become in a command's arguments): not text anyone meant to keep.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_id(value: object, field: str) -> str:
    """An identifier as given to look something up, or an event id: a string of 1-255 printable
    characters."""
    if not isinstance(value, str):
        raise InputError(field, "is required and must be a string" if value is None
                         else f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise InputError(field, f"must be 1-{MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable():
        raise InputError(field, "must not contain control characters")
    return value


def check_new_id(value: object, field: str, max_length: int = MAX_ID_LENGTH) -> str:
    """The id of an object being made: 1-``max_length`` characters of ``ID_CHARACTERS``."""
    check_id(value, field)
    assert isinstance(value, str)
    if len(value) > max_length:
        raise InputError(field, f"must be at most {max_length} characters, got {len(value)}")
    if _NEW_ID.fullmatch(value) is None:
        if _FIRST.fullmatch(value[0]) is None:
            raise InputError(field, f"must start with a letter or digit (A-Z, a-z, 0-9), not {value[0]!r}")
        bad = next(c for c in value if _REST.fullmatch(c) is None)
        raise InputError(field, f"must be made of {ID_CHARACTERS}; {bad!r} is not allowed")
    return value


def check_text(value: object, field: str, max_length: int = MAX_ID_LENGTH) -> str:
    """Free text kept as given (a name, a model id): a string of at most ``max_length``
    characters with no control character and no lone surrogate."""
    if not isinstance(value, str):
        raise InputError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InputError(field, f"must be at most {max_length} characters, got {len(value)}")
    bad = _NOT_TEXT.search(value)
    if bad is not None:
        raise InputError(field, f"must be text without control characters or lone surrogates "
                                f"(U+{ord(bad.group()):04X} at {bad.start()})")
    return value
