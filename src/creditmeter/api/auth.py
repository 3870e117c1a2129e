"""Who may call what: every API route checks the caller's key (and role) before anything else,
the body included, so a caller without the right is refused the same way whatever it sent.

Roles: the operator (``CREDITMETER_ADMIN_KEY`` or an operator key) may do everything; an account
key sees its own account (and the enterprises it administers) and may manage its own keys. A role
that may never do something gets 403 before anything is looked up; an object the caller may not
see is 404, exactly like one that does not exist.

A route is written as ``def fn(ctx: Ctx, who: Caller | Operator, ...) -> Response`` and wrapped
with :func:`short_read` or :func:`threaded`, which say where it runs.
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from creditmeter.api import context
from creditmeter.api.errors import Forbidden, Unauthorized
from creditmeter.api.responses import ExactJSONRoute
from creditmeter.errors import NotFound
from creditmeter.keys import Principal
from creditmeter.web.access import bearer_secret

# The annotation of a route's ``who``: any valid key, or the operator only.
Caller = Annotated[Principal, "any key"]
Operator = Annotated[Principal, "operator only"]

bearer = HTTPBearer(auto_error=False, description="An operator key or an account key.")


def authenticate(ctx: context.ApiContext, authorization: str | None) -> Principal:
    secret = bearer_secret(authorization)
    if secret is None:
        raise Unauthorized("missing key: send 'Authorization: Bearer KEY'")
    principal = ctx.access.principal(secret)
    if principal is None:
        raise Unauthorized("unknown or revoked key")
    return principal


class KeyedRoute(ExactJSONRoute):
    """Checks the caller's key (and role) before anything else, the body included."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        operator_only: bool | None = getattr(self.endpoint, "operator_only", None)
        if operator_only is None:  # a public route
            return handler

        async def run(request: Request) -> Response:
            ctx = context.of(request)
            header = request.headers.get("authorization")
            who = (authenticate(ctx, header) if ctx.engine.local_reads
                   else await run_in_threadpool(authenticate, ctx, header))
            if operator_only and not who.is_operator:
                raise Forbidden("only the operator may do this")
            request.scope["creditmeter.caller"] = who
            response: Response = await handler(request)
            return response

        return run


async def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                          Depends(bearer)]) -> Principal:
    """The caller ``KeyedRoute`` checked (``bearer`` puts the scheme in the OpenAPI document)."""
    principal: Principal = request.scope["creditmeter.caller"]
    return principal


Who = Annotated[Principal, Depends(caller)]


def _scoped(fn: Callable[..., Response], read: bool) -> Callable[..., Awaitable[Response]]:
    """Make ``fn(ctx, who, ...)`` an endpoint of a ``KeyedRoute``; ``fn`` runs in one call on the
    loop or on one worker thread. ``who: Operator`` lets only the operator in (403 for anyone
    else, before anything is looked up).

    SQLite reads are local file reads that never wait on a lock (WAL): they run on the event
    loop, which is several times cheaper than a hand-off to a thread. Writes, and every call on a
    networked database, run on worker threads so the loop never waits.
    """
    signature = inspect.signature(fn)
    params = [p.replace(annotation=Who) if p.name == "who" else p for p in signature.parameters.values()]

    async def endpoint(**kwargs: Any) -> Response:
        if read and kwargs["ctx"].engine.local_reads:
            return fn(**kwargs)
        return await run_in_threadpool(lambda: fn(**kwargs))

    endpoint.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    endpoint.operator_only = signature.parameters["who"].annotation is Operator  # type: ignore[attr-defined]
    return endpoint


def short_read(fn: Callable[..., Response]) -> Callable[..., Awaitable[Response]]:
    """A read that takes a bounded, short time (one account, one page)."""
    return _scoped(fn, read=True)


def threaded(fn: Callable[..., Response]) -> Callable[..., Awaitable[Response]]:
    """A write, or a read that may take long (a whole ledger, a long range)."""
    return _scoped(fn, read=False)


def readable(who: Principal, account_id: str) -> None:
    """The caller may see this account, or is told it does not exist."""
    if not who.can_read(account_id):
        raise NotFound("account", account_id, "account_id")


def manages(who: Principal, enterprise_id: str) -> None:
    """The operator, or an admin of this enterprise; anyone else is told it does not exist."""
    if not who.can_manage(enterprise_id):
        raise NotFound("enterprise", enterprise_id, "enterprise_id")
