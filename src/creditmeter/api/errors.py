"""The API's errors: the kinds only the HTTP edge has (401, 403, 413, 402, 429), the status of
every kind, the error body, and the handlers the app installs.

Every error answer is ``{"error": {"type", "message", "field"?}}``; a refused hold adds what it
was refused for (402: the credits; 429: the limit, and ``Retry-After``). What callers are told
when the database fails is fixed text; the details (host, port, the server's own words, the URL)
go to the server log only.
"""

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from creditmeter import present
from creditmeter.api.balance_models import RefusalBody
from creditmeter.api.jsonbody import BadJSON
from creditmeter.api.models import ErrorBody
from creditmeter.api.responses import json_response
from creditmeter.domain import Refused
from creditmeter.errors import CreditmeterError
from creditmeter.money import format_credits
from creditmeter.timeutil import format_instant

STATUS = {"invalid_input": 400, "not_found": 404, "conflict": 409, "schema": 503, "unavailable": 503}
log = logging.getLogger("creditmeter.api")


class Forbidden(CreditmeterError):
    kind = "forbidden"


class Unauthorized(CreditmeterError):
    kind = "unauthorized"


class InsufficientCredits(CreditmeterError):
    kind = "insufficient_credits"

    def __init__(self, refused: Refused) -> None:
        super().__init__(f"insufficient credits: {refused.reason} (requested "
                         f"{format_credits(refused.requested_uc)}, available "
                         f"{format_credits(refused.available_uc)})")
        self.refused = refused

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**super().to_dict(), "field": "amount_credits",
                               "requested_credits": format_credits(self.refused.requested_uc),
                               "available_credits": format_credits(self.refused.available_uc)}
        if self.refused.fallback_model is not None:
            out["fallback_model"] = self.refused.fallback_model
        return out


class LimitReached(CreditmeterError):
    """A hold that would pass one of the account's limits (``refused.limit``), refused at
    ``at_us``: ``retry_after_s`` is how long until enough frees up, in whole seconds rounded up
    (None when waiting alone will not free enough)."""

    kind = "limit_reached"

    def __init__(self, refused: Refused, at_us: int) -> None:
        status = refused.limit
        assert status is not None
        frees = status.frees_at_us
        when = (f"enough frees up at {format_instant(frees)}" if frees is not None
                else "waiting alone will not free enough")
        super().__init__(f"{refused.reason}: {format_credits(status.used_uc)} used and "
                         f"{format_credits(status.held_uc)} held, {format_credits(refused.requested_uc)} "
                         f"requested; {when}")
        self.refused = refused
        self.retry_after_s = None if frees is None else max(1, -(-(frees - at_us) // 1_000_000))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": "amount_credits",
                "requested_credits": format_credits(self.refused.requested_uc),
                "available_credits": format_credits(self.refused.available_uc),
                "limit": present.limit(self.refused.limit)}


HTTP_STATUS = {**STATUS, "forbidden": 403, "unauthorized": 401, "too_large": 413,
               "insufficient_credits": 402, "limit_reached": 429}
SERVER_SIDE = {"unavailable": "the database could not complete the request now; retrying it with the same "
                              "ids is safe",
               "schema": "the database schema is not the one this server needs; the operator must run "
                         "'creditmeter db upgrade'"}
HTTP_KINDS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input; `field` names it."},
    401: {"model": ErrorBody, "description": "No key, or an unknown or revoked key."},
    403: {"model": ErrorBody, "description": "This key's role may not do this."},
    404: {"model": ErrorBody, "description": "Unknown, or not this key's to see."},
    413: {"model": ErrorBody, "description": "The body is over the size limit."},
    422: {"model": ErrorBody, "description": "A body or parameter of the wrong shape; `field` names it."},
    503: {"model": ErrorBody, "description": "The database could not complete it now; retrying is safe."},
}
_MORE = {409: {"model": ErrorBody, "description": "An id reused for something else, or a state "
                                                 "that forbids it."},
         402: {"model": RefusalBody, "description": "Not enough credits for the reservation "
                                                    "(`fallback_model`: the model the policy falls "
                                                    "back to)."},
         429: {"model": RefusalBody, "description": "The hold would pass one of the account's "
                                                    "limits (`limit`, with `frees_at`).",
               "headers": {"Retry-After": {
                   "description": "Whole seconds until enough frees up (absent when waiting alone "
                                  "will not free enough).", "schema": {"type": "integer"}}}}}


def errors_with(*extra: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route: the common ones and ``extra`` (409, 402, 429)."""
    return {**ERRORS, **{code: _MORE[code] for code in extra}}


def error_response(error: CreditmeterError) -> Response:
    status = HTTP_STATUS.get(error.kind, 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(error, LimitReached) and error.retry_after_s is not None:
        headers = {"Retry-After": str(error.retry_after_s)}
    body = error.to_dict()
    if error.kind in SERVER_SIDE:
        log.warning("%s: %s", error.kind, error)
        body = {"type": error.kind, "message": SERVER_SIDE[error.kind]}
        headers = {"Retry-After": "1"}
    return json_response({"error": body}, status, headers)


def too_large(message: str) -> Response:
    return json_response({"error": {"type": "too_large", "field": "body", "message": message}}, 413)


def http_kind(status: int) -> str:
    """The error type of a plain HTTP error (an unknown path, a method not allowed …)."""
    return HTTP_KINDS.get(status, "http_error")


async def on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CreditmeterError)
    return error_response(exc)


async def on_invalid(request: Request, exc: Exception) -> Response:
    """A body or parameter of the wrong shape: 422 naming the field (never pydantic's own words
    for where it was: ``body``, ``query`` and union member tags are left out)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ())
           if part not in ("body", "query", "path") and not _type_tag(part)]
    field = ".".join(loc) or "body"
    message = first.get("msg", "invalid")
    if isinstance(exc.__cause__, BadJSON):  # a body that is not valid JSON text (``jsonbody``)
        field, message = exc.__cause__.field, exc.__cause__.reason
    elif first.get("type") == "json_invalid":
        field, message = "body", f"is not valid JSON ({first.get('ctx', {}).get('error', message)})"
    elif field == "body" and "json" not in request.headers.get("content-type", ""):
        message = "must be a JSON object, sent with 'Content-Type: application/json'"
    return json_response({"error": {"type": "invalid_input", "message": f"{field}: {message}",
                                    "field": field}}, 422)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return json_response({"error": {"type": http_kind(exc.status_code), "message": str(exc.detail)}},
                         exc.status_code, dict(exc.headers or {}))


# Pydantic names the member of a union that failed (``amount_credits.str``); the field is the
# part before it.
_TYPE_TAGS = {"str", "int", "float", "bool", "decimal", "none", "list", "dict", "constrained-str",
              "constrained-int", "lax-or-strict", "json-or-python", "nullable"}


def _type_tag(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or ("[" in part and part.endswith("]")))
