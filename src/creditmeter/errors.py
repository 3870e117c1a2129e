"""The errors creditmeter raises at its edges, one small hierarchy.

Expected outcomes (a duplicate event, a refused reservation) are values, not exceptions.
What is raised is always one of these::

    CreditmeterError            anything the caller did that cannot be carried out
     ├── InputError             a bad value: names the field and the reason   (HTTP 400/422, exit 2)
     ├── NotFound               an unknown (or another tenant's) object        (HTTP 404, exit 3)
     ├── Conflict               an id reused with a different body, a hold   (HTTP 409, exit 4)
     │                          already settled or released
     ├── SchemaError            the database is missing or behind its migrations (exit 5)
     └── Unavailable            the store could not complete the write now; retry (HTTP 503, exit 7)

Nothing is written when one of these is raised: every command runs in one transaction.

What the operating system refuses (a file that cannot be read or written, a full disk, a closed
pipe, an address the server cannot listen on) is not one of these: the command says so in a line
and exits ``EXIT_SYSTEM``.
"""

from __future__ import annotations

EXIT_SYSTEM = 8


class CreditmeterError(Exception):
    """Base of every error creditmeter raises on purpose."""

    exit_code = 1
    kind = "error"

    def to_dict(self) -> dict[str, str]:
        return {"type": self.kind, "message": str(self)}


class InputError(CreditmeterError):
    """A bad input value. ``field`` names it (dotted for nested fields), ``reason`` says why."""

    exit_code = 2
    kind = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        return {"type": self.kind, "message": str(self), "field": self.field}


class NotFound(CreditmeterError):
    """An object that does not exist (or that the caller may not see)."""

    exit_code = 3
    kind = "not_found"

    def __init__(self, what: str, ident: str, field: str | None = None) -> None:
        self.reason = f"unknown {what} {ident!r}"
        super().__init__(f"{field}: {self.reason}" if field else self.reason)
        self.what = what
        self.ident = ident
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"type": self.kind, "message": str(self)}
        if self.field:
            out["field"] = self.field
        return out


class Conflict(CreditmeterError):
    """An idempotency key reused with a different body, or a state that forbids the operation."""

    exit_code = 4
    kind = "conflict"


class SchemaError(CreditmeterError):
    """The database has no schema yet, or an older one: run ``creditmeter db upgrade``."""

    exit_code = 5
    kind = "schema"


class Unavailable(CreditmeterError):
    """The store could not complete the command now (contention, a lost connection).

    Retrying with the same ids is safe: a write either committed whole (a retry answers
    duplicate) or not at all.
    """

    exit_code = 7
    kind = "unavailable"


def let_frames_go(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the errors chained to it, keeping their types and
    messages. An error kept after it was caught (a rejected event's, a retried write's) holds,
    through its traceback, the frames it passed through and all they held (a whole batch), and
    those frames hold the error back: a reference cycle, freed only by the cycle collector,
    which bulk imports pause (see ``creditmeter.collector``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        err.__traceback__ = None
        todo += [err.__cause__, err.__context__]
