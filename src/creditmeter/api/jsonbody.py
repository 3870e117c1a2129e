"""Reading a request's JSON body strictly.

A body is UTF-8 text (a leading byte order mark is allowed), every string in it and every field
name is valid Unicode (no lone UTF-16 surrogate written as an escape: ``"\\ud800"``), and every
fractional number is read as an exact ``Decimal`` (never a float: amounts are money). A body that
breaks one of these is refused as :class:`BadJSON`, naming where: the field whose value is not
valid text, or ``body``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# A \uD800-\uDFFF escape: the only way a JSON text that is valid UTF-8 can hold a surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class BadJSON(json.JSONDecodeError):
    """A body that is not JSON creditmeter reads; ``field`` names where (``body``: the whole)."""

    def __init__(self, field: str, reason: str, doc: str = "", pos: int = 0) -> None:
        super().__init__(reason, doc, pos)
        self.field = field
        self.reason = reason


def read_json(body: bytes) -> Any:
    """The JSON value of ``body``; raises :class:`BadJSON` when it is not valid JSON text."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadJSON("body", f"is not UTF-8 text (byte {exc.start} is {body[exc.start]:#04x})") from None
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadJSON("body", f"is not valid JSON ({exc.msg} at character {exc.pos})", text, exc.pos) \
            from None
    except RecursionError:
        raise BadJSON("body", "is not valid JSON (nested too deeply)", text) from None
    except ValueError as exc:  # NaN/Infinity, an integer too long to read
        raise BadJSON("body", f"is not valid JSON ({exc})", text) from None
    if _SURROGATE_ESCAPE.search(text):
        _check_text(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_text(value: Any) -> None:
    """Refuse the first string or field name that is not valid Unicode, naming where it is."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if not _valid(item):
                raise BadJSON(_field(path),
                              f"is not valid text: {_shown(item)} holds a lone UTF-16 surrogate")
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not _valid(key):
                    raise BadJSON(_field((*path, key)), "is not a valid field name: it holds a lone "
                                                        "UTF-16 surrogate")
                pending.append((inner, (*path, key)))
        elif isinstance(item, list):
            pending.extend((inner, (*path, str(i))) for i, inner in enumerate(item))


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str) -> str:
    """``text`` as it was written, its surrogates as JSON escapes (at most 60 characters)."""
    return json.dumps(text[:60])


def _field(path: tuple[str, ...]) -> str:
    return ".".join(part.encode("utf-8", "backslashreplace").decode("utf-8") for part in path) or "body"
