"""The gateway's error answers, in each protocol's own shape (OpenAI's, or Anthropic's for the
Messages API), and the checks of a request body's fields that answer with them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

JSON = "application/json"
ANTHROPIC_PATHS = "/v1/messages"  # the routes whose callers expect Anthropic's error shape
# Anthropic's error type for each status (its SDKs pick the exception class by status).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_credits",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 502: "api_error", 503: "overloaded_error",
                    504: "timeout_error", 529: "overloaded_error"}

# The error types Anthropic's API answers (an upstream's error event of one of them is relayed as is).
ANTHROPIC_ERROR_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "billing_error", "permission_error", "not_found_error",
    "request_too_large", "rate_limit_error", "api_error", "timeout_error", "overloaded_error"})


class GatewayError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", *,
                 code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.headers = code, param, dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def response(self) -> Response:
        return Response(orjson.dumps(self.body()), self.status, self.headers, media_type=JSON)

    def anthropic_body(self) -> dict[str, Any]:
        """Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
        fallback = "api_error" if self.status >= 500 else "invalid_request_error"
        kind = _ANTHROPIC_TYPES.get(self.status, fallback)
        return {"type": "error", "error": {"type": kind, "message": self.message}}

    def anthropic_response(self) -> Response:
        return Response(orjson.dumps(self.anthropic_body()), self.status, self.headers, media_type=JSON)

    def response_for(self, path: str) -> Response:
        """The answer in the shape the callers of ``path`` expect."""
        return self.anthropic_response() if path.startswith(ANTHROPIC_PATHS) else self.response()


def unavailable() -> GatewayError:
    return GatewayError(503, "the credits database could not complete the request now; retry it",
                        "server_error", code="unavailable", headers={"Retry-After": "1"})


def bad(param: str, message: str) -> GatewayError:
    return GatewayError(400, f"{param}: {message}", param=param, code="invalid_value")


def whole(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    """The body's field ``name``, a whole number from ``low`` to ``high``; None when not given."""
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise bad(name, f"must be a whole number from {low} to {high}")
    return value


def streamed(body: Mapping[str, Any]) -> bool:
    """The body's ``stream`` flag (absent: not streamed)."""
    value = body.get("stream")
    if value is not None and not isinstance(value, bool):
        raise bad("stream", "must be true or false")
    return value is True


def check_messages(body: Mapping[str, Any]) -> None:
    """The body's ``messages``: a non-empty list of objects, each with a role."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad(f"messages[{i}]", "must be an object with a role")
