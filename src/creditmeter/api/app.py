"""The HTTP API (SPEC §10): the engine over JSON, every call scoped by the caller's key.

Roles: the operator (``CREDITMETER_ADMIN_KEY`` or an operator key) may do everything; an account
key sees its own account (and the enterprises it administers) and may manage its own keys. A
role that may never do something gets 403 before anything is looked up; an object the caller
may not see is 404, exactly like one that does not exist.
"""

import inspect
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from creditmeter import present
from creditmeter.api import metrics
from creditmeter.api.models import (
    AccountIn,
    AccountOut,
    AccountSubscriptionsOut,
    AllocationIn,
    BalanceOut,
    ChargeOut,
    EnterpriseOut,
    ErrorBody,
    GrantIn,
    HealthOut,
    HoldIn,
    HoldOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    MemberIn,
    MemberOut,
    MeOut,
    PackageOut,
    PlanCatalogOut,
    PlanOut,
    PlansIn,
    PricesIn,
    PricesOut,
    PriceVersionOut,
    PurchaseIn,
    QuotaAllocationOut,
    ReconcileOut,
    SettleIn,
    SubscriptionIn,
    SubscriptionOut,
    SummaryOut,
    TickOut,
    UsageBatchIn,
    UsagePageOut,
    UsageResultsOut,
)
from creditmeter.console import create_console
from creditmeter.domain import Charge, Refused, Rejected
from creditmeter.engine import Engine, Usage, open_engine
from creditmeter.errors import CreditmeterError, InputError, NotFound
from creditmeter.gateway import Gateway, gateway_routes
from creditmeter.ingest import csv_chunks, csv_filename
from creditmeter.keys import ENV_OPERATOR_KEY_ID, Principal, Role, check_admin_key, digest, same_digest
from creditmeter.money import format_credits, parse_credits
from creditmeter.plans import parse_plans
from creditmeter.pricing import parse_catalog
from creditmeter.subscriptions import current_subscription
from creditmeter.timeutil import format_instant, parse_instant

DEFAULT_MAX_BODY = 2 * 1024 * 1024
STATUS = {"invalid_input": 400, "not_found": 404, "conflict": 409, "schema": 503, "unavailable": 503}
Clock = Callable[[], int]


# The annotation of an endpoint's ``who``: any valid key, or the operator only (see ``scoped``).
Caller = Annotated[Principal, "any key"]
Operator = Annotated[Principal, "operator only"]
At = Annotated[str | None, Query(description="ISO 8601 (default: now)")]
Member = Annotated[str | None, Query(max_length=255, description="Enterprise accounts: one member's usage")]
From = Annotated[str | None, Query(alias="from", description="ISO 8601, inclusive")]
To = Annotated[str | None, Query(description="ISO 8601, exclusive")]
Model = Annotated[str | None, Query(max_length=255, description="Only this model's usage")]


def system_clock() -> int:
    return time.time_ns() // 1000


class Forbidden(CreditmeterError):
    kind = "forbidden"


class Unauthorized(CreditmeterError):
    kind = "unauthorized"


class TooLarge(CreditmeterError):
    kind = "too_large"


class InsufficientCredits(CreditmeterError):
    kind = "insufficient_credits"

    def __init__(self, refused: Refused) -> None:
        super().__init__(f"insufficient credits: {refused.reason} (requested "
                         f"{format_credits(refused.requested_uc)}, available "
                         f"{format_credits(refused.available_uc)})")
        self.refused = refused

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "field": "amount_credits",
                "requested_credits": format_credits(self.refused.requested_uc),
                "available_credits": format_credits(self.refused.available_uc)}


HTTP_STATUS = {**STATUS, "forbidden": 403, "unauthorized": 401, "too_large": 413,
               "insufficient_credits": 402}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


# What callers are told when the database fails; the details (host, port, the server's own
# words, the URL) go to the server log only.
SERVER_SIDE = {"unavailable": "the database could not complete the request now; retrying it with the same "
                              "ids is safe",
               "schema": "the database schema is not the one this server needs; the operator must run "
                         "'creditmeter db upgrade'"}
log = logging.getLogger("creditmeter.api")


def error_response(error: CreditmeterError) -> Response:
    status = HTTP_STATUS.get(error.kind, 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = error.to_dict()
    if error.kind in SERVER_SIDE:
        log.warning("%s: %s", error.kind, error)
        body = {"type": error.kind, "message": SERVER_SIDE[error.kind]}
        headers = {"Retry-After": "1"}
    return json_response({"error": body}, status, headers)


class ExactJSONRequest(Request):
    """Reads JSON bodies with every fractional number as an exact Decimal, never a float."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # NaN/Infinity, an integer too long to read
                raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
        return self._json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class ExactJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            response: Response = await handler(ExactJSONRequest(request.scope, request.receive))
            return response

        return run


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input; `field` names it."},
    401: {"model": ErrorBody, "description": "No key, or an unknown or revoked key."},
    403: {"model": ErrorBody, "description": "This key's role may not do this."},
    404: {"model": ErrorBody, "description": "Unknown, or not this key's to see."},
    413: {"model": ErrorBody, "description": "The body is over the size limit."},
    422: {"model": ErrorBody, "description": "A body or parameter of the wrong shape; `field` names it."},
    503: {"model": ErrorBody, "description": "The database could not complete it now; retrying is safe."},
}


def _errors(*extra: int) -> dict[int | str, dict[str, Any]]:
    conflict = {409: {"model": ErrorBody, "description": "An id reused for something else, or a state "
                                                         "that forbids it."},
                402: {"model": ErrorBody, "description": "Not enough credits for the reservation."}}
    return {**ERRORS, **{code: conflict[code] for code in extra}}


@contextmanager
def fields(**names: str) -> Iterator[None]:
    """Report an engine error under the field name the API uses (``expires`` → ``expires_at``)."""
    try:
        yield
    except InputError as exc:
        if exc.field in names:
            raise InputError(names[exc.field], exc.reason) from None
        raise


def _instant(value: str | None, field: str) -> int | None:
    return None if value is None else parse_instant(value, field)


def _range(from_: str | None, to: str | None) -> tuple[int | None, int | None]:
    start, end = _instant(from_, "from"), _instant(to, "to")
    if start is not None and end is not None and end <= start:
        raise InputError("to", "must be after from")
    return start, end


def create_app(engine: Engine, *, admin_key: str | None = None, clock: Clock = system_clock,
               max_body_bytes: int = DEFAULT_MAX_BODY, threads: int = 8,
               key_cache_s: float = 1.0, tick_interval_s: float = 0,
               gateway: Gateway | None = None) -> FastAPI:
    """The API over ``engine``; ``admin_key`` is an operator key taken from the environment.

    ``key_cache_s``: how long a checked key is trusted without asking the database again. A key
    revoked through this app stops working at once; one revoked elsewhere (another worker, the
    CLI) within that time. 0 checks every request against the database.
    ``tick_interval_s``: run ``Engine.tick`` this often in the background (0: never; ``serve``
    runs it every 60 s by default). Ticks are idempotent, so every worker may run its own.
    ``gateway``: the models the OpenAI-compatible ``/v1`` gateway serves (none: no gateway).
    """
    admin_key = check_admin_key(admin_key)
    admin_digest = digest(admin_key) if admin_key else None
    bearer = HTTPBearer(auto_error=False, description="An operator key or an account key.")

    key_cache = KeyCache(key_cache_s)

    def principal_for(secret: str) -> Principal | None:
        """Who ``secret`` is (through the key cache); None for an unknown or revoked key."""
        presented = digest(secret)
        if admin_digest is not None and same_digest(presented, admin_digest):
            return Principal(Role.OPERATOR, None, ENV_OPERATOR_KEY_ID)
        principal = key_cache.get(presented)
        if principal is None:
            generation = key_cache.generation
            principal = engine.authenticate(secret)
            if principal is None:
                return None
            key_cache.put(presented, principal, generation)
        return principal

    def authenticate(authorization: str | None) -> Principal:
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("missing key: send 'Authorization: Bearer KEY'")
        principal = principal_for(secret.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked key")
        return principal

    # SQLite reads are local file reads that never wait on a lock (WAL): they run on the event
    # loop, which is several times cheaper than a hand-off to a thread. Writes, and every call
    # on a networked database, run on worker threads so the loop never waits.
    inline_reads = engine.local_reads

    class KeyedRoute(ExactJSONRoute):
        """Checks the caller's key (and role) before anything else, the body included: a
        caller without the right is refused the same way whatever it sent."""

        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()
            operator_only: bool | None = getattr(self.endpoint, "operator_only", None)
            if operator_only is None:  # a public route
                return handler

            async def run(request: Request) -> Response:
                header = request.headers.get("authorization")
                who = (authenticate(header) if inline_reads
                       else await run_in_threadpool(authenticate, header))
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

    def scoped(fn: Callable[..., Response], read: bool) -> Callable[..., Awaitable[Response]]:
        """Make ``fn(who, ...)`` an endpoint of a ``KeyedRoute``; ``fn`` runs in one call on the
        loop or on one worker thread (see above). ``who: Operator`` lets only the operator in
        (403 for anyone else, before anything is looked up)."""
        signature = inspect.signature(fn)
        params = [p.replace(annotation=Who) if p.name == "who" else p
                  for p in signature.parameters.values()]
        inline = read and inline_reads

        async def endpoint(**kwargs: Any) -> Response:
            if inline:
                return fn(**kwargs)
            return await run_in_threadpool(lambda: fn(**kwargs))

        endpoint.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        endpoint.operator_only = signature.parameters["who"].annotation is Operator  # type: ignore[attr-defined]
        return endpoint

    def short_read(fn: Callable[..., Response]) -> Callable[..., Awaitable[Response]]:
        """A read that takes a bounded, short time (one account, one page)."""
        return scoped(fn, read=True)

    def threaded(fn: Callable[..., Response]) -> Callable[..., Awaitable[Response]]:
        """A write, or a read that may take long (a whole ledger, a long range)."""
        return scoped(fn, read=False)

    def readable(who: Principal, account_id: str) -> None:
        if not who.can_read(account_id):
            raise NotFound("account", account_id, "account_id")

    api = APIRouter(prefix="/api", route_class=KeyedRoute, responses=ERRORS)

    # -- who am I, accounts, keys ---------------------------------------------------------------

    @api.get("/me", response_model=MeOut, summary="The caller's key, role and account")
    @short_read
    def me(who: Caller) -> Response:
        account = None
        if who.account_id is not None:
            found = engine.account(who.account_id)
            account = present.account(*found) if found else None
        return json_response({"role": who.role.value, "key_id": who.key_id, "account_id": who.account_id,
                              "admin_of": sorted(who.admin_of), "account": account})

    @api.post("/accounts", response_model=AccountOut, status_code=201, responses=_errors(409),
              summary="Create an account (operator)")
    @threaded
    def create_account(body: AccountIn, who: Operator) -> Response:
        account = engine.create_account(body.id, clock(), name=body.name, kind=body.kind)
        return json_response(present.account(account, 0), 201)

    @api.get("/accounts", response_model=list[AccountOut], summary="Every account (operator)")
    @threaded
    def list_accounts(who: Operator) -> Response:
        return json_response([present.account(a, o) for a, o in engine.accounts()])

    @api.get("/accounts/{account_id}", response_model=AccountOut, summary="One account")
    @short_read
    def get_account(account_id: str, who: Caller) -> Response:
        readable(who, account_id)
        found = engine.account(account_id)
        if found is None:
            raise NotFound("account", account_id, "account_id")
        return json_response(present.account(*found))

    @api.post("/accounts/{account_id}/keys", response_model=KeyCreated, status_code=201,
              summary="Create a key for an account (the operator, or the account itself)")
    @threaded
    def create_key(account_id: str, body: KeyIn, who: Caller) -> Response:
        if not who.can_manage_keys(account_id):
            raise NotFound("account", account_id, "account_id")
        key, secret = engine.create_key(account_id, clock(), name=body.name)
        return json_response({**present.key(key), "key": secret}, 201)

    @api.get("/accounts/{account_id}/keys", response_model=list[KeyOut],
             summary="An account's keys (never the keys themselves)")
    @short_read
    def list_keys(account_id: str, who: Caller) -> Response:
        if not who.can_manage_keys(account_id):
            raise NotFound("account", account_id, "account_id")
        return json_response([present.key(k) for k in engine.keys(account_id)])

    @api.post("/keys/{key_id}/revoke", response_model=KeyOut,
              summary="Revoke a key; it stops working at once")
    @threaded
    def revoke_key(key_id: str, who: Caller) -> Response:
        key = engine.get_key(key_id)
        if not who.can_manage_keys(key.account_id):
            raise NotFound("key", key_id, "key_id")
        revoked = engine.revoke_key(key_id, clock())
        key_cache.clear()
        return json_response(present.key(revoked))

    # -- grants and balance ---------------------------------------------------------------------

    @api.post("/accounts/{account_id}/grants", response_model=PackageOut, status_code=201,
              responses=_errors(409), summary="Put a credit package on an account (operator)")
    @threaded
    def add_grant(account_id: str, body: GrantIn, who: Operator) -> Response:
        with fields(expires="expires_at", effective="effective_at", amount="amount_credits"):
            package = engine.add_grant(
                account_id, parse_credits(body.amount_credits, "amount_credits", allow_zero=False),
                body.kind, clock(), expires_at_us=_instant(body.expires_at, "expires_at"),
                effective_at_us=_instant(body.effective_at, "effective_at"), priority=body.priority,
                name=body.name, grant_id=body.id, source="api")
        return json_response(present.package(package), 201)

    @api.get("/accounts/{account_id}/grants", response_model=list[PackageOut],
             summary="An account's packages in burn-down order")
    @short_read
    def list_grants(account_id: str, who: Caller,
                    at: At = None) -> Response:
        readable(who, account_id)
        balance = engine.balance(account_id, _instant(at, "at") or clock())
        return json_response([present.package(p) for p in balance.packages])

    @api.post("/grants/{grant_id}/void", response_model=PackageOut, responses=_errors(409),
              summary="Void (refund) what remains of a package (operator)")
    @threaded
    def void_grant(grant_id: str, who: Operator) -> Response:
        return json_response(present.package(engine.void_grant(grant_id, clock())))

    @api.get("/accounts/{account_id}/balance", response_model=BalanceOut,
             summary="Available, held, overage and current-period credits, and every package")
    @short_read
    def balance(account_id: str, who: Caller,
                at: At = None) -> Response:
        readable(who, account_id)
        return json_response(present.balance(engine.balance(account_id, _instant(at, "at") or clock())))

    # -- usage ----------------------------------------------------------------------------------

    @api.post("/usage", response_model=UsageResultsOut, responses=_errors(409),
              summary="Record up to 1,000 usage events (operator); a result per event")
    @threaded
    def post_usage(body: UsageBatchIn, who: Operator) -> Response:
        results = engine.record_batch(body.events, clock())
        metrics.count_results(results)
        return json_response(_results(results))

    @api.get("/accounts/{account_id}/usage", response_model=UsagePageOut,
             summary="Usage, newest first, with the packages that paid; cursor pagination")
    @short_read
    def usage(account_id: str, who: Caller,
              from_: From = None, to: To = None, model: Model = None,
              member: Member = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              cursor: Annotated[str | None, Query(max_length=200)] = None) -> Response:
        readable(who, account_id)
        start, end = _range(from_, to)
        page, mark = engine.usage_page(account_id, from_us=start, to_us=end, model=model,
                                       member=member, limit=limit, after=present.page_mark(cursor))
        return json_response({"events": [present.event(e) for e in page],
                              "next_cursor": present.cursor(mark)})

    @api.get("/accounts/{account_id}/usage/summary", response_model=SummaryOut,
             summary="Requests, tokens and credits per day or per model")
    @threaded
    def usage_summary(account_id: str, who: Caller,
                      group_by: Annotated[str, Query(pattern="^(day|model)$")] = "day",
                      from_: From = None, to: To = None, model: Model = None,
                      member: Member = None) -> Response:
        readable(who, account_id)
        start, end = _range(from_, to)
        rows = engine.usage_summary(account_id, group_by, from_us=start, to_us=end, model=model,
                                    member=member)
        current = present.balance(engine.balance(account_id, clock()))
        return json_response({"account_id": account_id, "group_by": group_by,
                              "groups": [present.summary_row(r, group_by) for r in rows],
                              "total_credits": format_credits(sum(r.cost_uc for r in rows)),
                              "subscription": current["subscription"], "period": current["period"],
                              "period_used_credits": current["period_used_credits"]})

    @api.get("/accounts/{account_id}/usage.csv", summary="Usage as CSV, full precision, streamed",
             response_class=Response,
             responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                              "description": "One row per event, newest first."}})
    @short_read
    def usage_csv(account_id: str, who: Caller,
                  from_: From = None, to: To = None, model: Model = None,
                  member: Member = None) -> Response:
        readable(who, account_id)
        start, end = _range(from_, to)
        stream = engine.usage(account_id, from_us=start, to_us=end, model=model, member=member)
        return StreamingResponse(
            iterate_in_threadpool(chunk.encode() for chunk in csv_chunks(stream)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{csv_filename(account_id)}"'})

    # -- plans, subscriptions, purchases ----------------------------------------------------------

    @api.get("/plans", response_model=list[PlanOut], summary="The plan catalog")
    @short_read
    def list_plans(who: Caller) -> Response:
        return json_response(engine.plans().to_dict()["plans"])

    @api.post("/plans", response_model=PlanCatalogOut, status_code=201,
              summary="Load a plan catalog (operator; running subscriptions keep their terms)")
    @threaded
    def load_plans(body: PlansIn, who: Operator) -> Response:
        catalog = parse_plans({"plans": body.plans}, "plans")
        version = engine.load_plans(catalog, clock(), source="api")
        return json_response({"version": version, "plans": len(catalog.plans)}, 201)

    @api.post("/accounts/{account_id}/subscriptions", response_model=SubscriptionOut, status_code=201,
              responses=_errors(409), summary="Subscribe an account to a trial, subscription or "
                                              "enterprise plan (operator)")
    @threaded
    def subscribe(account_id: str, body: SubscriptionIn, who: Operator) -> Response:
        now = clock()
        sub = engine.subscribe(account_id, body.plan_id, now, subscription_id=body.id, seats=body.seats)
        return json_response(present.subscription(sub, now), 201)

    @api.post("/subscriptions/{subscription_id}/cancel", response_model=SubscriptionOut,
              responses=_errors(409), summary="Cancel at the end of the current period (operator)")
    @threaded
    def cancel_subscription(subscription_id: str, who: Operator) -> Response:
        now = clock()
        return json_response(present.subscription(engine.cancel_subscription(subscription_id, now), now))

    @api.get("/accounts/{account_id}/subscription", response_model=AccountSubscriptionsOut,
             summary="The account's current subscription, and every one it had")
    @short_read
    def account_subscription(account_id: str, who: Caller, at: At = None) -> Response:
        readable(who, account_id)
        at_us = _instant(at, "at") or clock()
        subs = engine.subscriptions(account_id)
        current = current_subscription(subs, at_us)
        return json_response({"account_id": account_id,
                              "current": present.subscription(current, at_us) if current else None,
                              "subscriptions": [present.subscription(x, at_us) for x in subs]})

    @api.post("/accounts/{account_id}/purchases", response_model=PackageOut, status_code=201,
              responses=_errors(409), summary="Buy a one-off pack, idempotent by order id (operator)")
    @threaded
    def purchase(account_id: str, body: PurchaseIn, who: Operator) -> Response:
        return json_response(present.package(engine.purchase(account_id, body.pack_id, clock(),
                                                             order_id=body.id)), 201)

    # -- enterprises ----------------------------------------------------------------------------

    def manages(who: Principal, enterprise_id: str) -> None:
        """The operator, or an admin of this enterprise; anyone else is told it does not exist."""
        if not (who.is_operator or enterprise_id in who.admin_of):
            raise NotFound("enterprise", enterprise_id, "enterprise_id")

    @api.get("/enterprises/{enterprise_id}", response_model=EnterpriseOut,
             summary="The pool, the members and each member's quota, used and remaining "
                     "(operator or the enterprise's admins)")
    @short_read
    def show_enterprise(enterprise_id: str, who: Caller, at: At = None) -> Response:
        manages(who, enterprise_id)
        view = engine.enterprise(enterprise_id, _instant(at, "at") or clock())
        return json_response(present.enterprise(view))

    @api.post("/enterprises/{enterprise_id}/members", response_model=MemberOut, status_code=201,
              summary="Add a member or admin, or change their role (operator)")
    @threaded
    def add_member(enterprise_id: str, body: MemberIn, who: Operator) -> Response:
        member = engine.add_member(enterprise_id, body.account_id, clock(), role=body.role)
        key_cache.clear()  # admin rights changed
        return json_response(present.member(member), 201)

    @api.post("/enterprises/{enterprise_id}/members/{account_id}/remove", status_code=204,
              response_class=Response, summary="Remove a member (operator)")
    @threaded
    def remove_member(enterprise_id: str, account_id: str, who: Operator) -> Response:
        engine.remove_member(enterprise_id, account_id, clock())
        key_cache.clear()
        return Response(status_code=204)

    @api.post("/enterprises/{enterprise_id}/allocations", response_model=PackageOut, status_code=201,
              responses=_errors(409), summary="Add pool credits to a member's quota "
                                              "(operator or the enterprise's admins)")
    @threaded
    def allocate(enterprise_id: str, body: AllocationIn, who: Caller) -> Response:
        manages(who, enterprise_id)
        with fields(expires="expires_at", amount="amount_credits"):
            package = engine.allocate(
                enterprise_id, body.account_id, parse_credits(body.amount_credits, "amount_credits",
                                                              allow_zero=False),
                clock(), expires_at_us=_instant(body.expires_at, "expires_at"), allocation_id=body.id)
        return json_response(present.package(package), 201)

    @api.post("/enterprises/{enterprise_id}/allocations/{allocation_id}/revoke",
              response_model=QuotaAllocationOut, summary="Revoke quota: the unused part returns to the pool "
                                                    "(operator or the enterprise's admins)")
    @threaded
    def revoke_allocation(enterprise_id: str, allocation_id: str, who: Caller) -> Response:
        manages(who, enterprise_id)
        if engine.allocation(allocation_id).enterprise_id != enterprise_id:
            raise NotFound("allocation", allocation_id, "allocation_id")
        return json_response(present.allocation(engine.revoke_allocation(allocation_id, clock())))

    # -- holds ----------------------------------------------------------------------------------

    @api.post("/accounts/{account_id}/holds", response_model=HoldOut, status_code=201,
              responses=_errors(402, 409), summary="Reserve credits for a request in flight (operator)")
    @threaded
    def reserve(account_id: str, body: HoldIn, who: Operator) -> Response:
        with fields(amount="amount_credits", ttl="ttl_seconds"):
            result = engine.reserve(account_id, parse_credits(body.amount_credits, "amount_credits",
                                                              allow_zero=False),
                                    clock(), ttl_s=body.ttl_seconds, hold_id=body.id)
        if isinstance(result, Refused):
            raise InsufficientCredits(result)
        return json_response(present.hold(result), 201)

    @api.post("/holds/{hold_id}/settle", response_model=ChargeOut, responses=_errors(409),
              summary="Charge a held request's actual usage; the rest is released (operator)")
    @threaded
    def settle(hold_id: str, body: SettleIn, who: Operator) -> Response:
        usage = Usage(body.model, body.input_tokens, body.output_tokens, body.cached_input_tokens,
                      body.cache_write_tokens, tuple(sorted(body.quantities.items())), body.metadata)
        charge = engine.settle(hold_id, usage, clock(), event_id=body.id)
        metrics.count_results([charge])
        return json_response(present.charge(charge))

    @api.post("/holds/{hold_id}/release", response_model=HoldOut, responses=_errors(409),
              summary="Give a hold's credits back (operator)")
    @threaded
    def release(hold_id: str, who: Operator) -> Response:
        return json_response(present.hold(engine.release(hold_id, clock())))

    # -- prices and maintenance -----------------------------------------------------------------

    @api.get("/prices", response_model=PricesOut, summary="The price version in effect, and every version")
    @short_read
    def get_prices(who: Caller, at: At = None) -> Response:
        at_us = _instant(at, "at") or clock()
        return json_response(present.prices(engine.price_book(), at_us))

    @api.post("/prices", response_model=PriceVersionOut, status_code=201,
              summary="Load a catalog as a new price version (operator)")
    @threaded
    def post_prices(body: PricesIn, who: Operator) -> Response:
        now = clock()
        effective = _instant(body.effective_at, "effective_at") or now
        catalog = parse_catalog(body.catalog, "catalog")
        with fields(effective="effective_at"):
            version = engine.load_prices(catalog, effective, now, source="api")
        return json_response({"version": version.version, "effective_at": format_instant(effective),
                              "models": len(catalog.models), "features": len(catalog.features)}, 201)

    @api.post("/tick", response_model=TickOut,
              summary="Time out holds, record expiries, pay overage (operator; safe to repeat)")
    @threaded
    def tick(who: Operator) -> Response:
        now = clock()
        return json_response(present.tick(engine.tick(now), now))

    @api.get("/reconcile", response_model=ReconcileOut, summary="Check every invariant (operator)")
    @threaded
    def reconcile(who: Operator) -> Response:
        problems = engine.check_invariants()
        return json_response({"ok": not problems, "violations": problems})

    # -- the app --------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Few threads: engine calls are short, and many threads only fight over the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        async with anyio.create_task_group() as tasks:
            if tick_interval_s > 0:
                tasks.start_soon(tick_forever)
            yield
            tasks.cancel_scope.cancel()
        if gateway is not None:
            await gateway.aclose()

    async def tick_forever() -> None:
        # A random start spreads the workers' ticks; a failed tick is logged and tried again later.
        await anyio.sleep(random.uniform(0, tick_interval_s))
        while True:
            try:
                report = await run_in_threadpool(engine.tick, clock())
                if report.renewed or report.entries:
                    log.info("tick: %s subscriptions renewed, %s holds timed out, %s entries",
                             report.renewed, report.holds_expired, report.entries)
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("tick failed; trying again in %s s", tick_interval_s)
            await anyio.sleep(tick_interval_s)

    app = FastAPI(title="creditmeter", version=_version(), lifespan=lifespan,
                  description="Credits for AI products: prices, packages, burn-down, holds, usage. "
                              "Amounts are credits strings (up to 6 decimal places); times ISO 8601 UTC.",
                  openapi_tags=[{"name": "api"}])
    app.include_router(api)
    ops = APIRouter(route_class=KeyedRoute)

    @app.get("/healthz", response_model=HealthOut, responses={503: ERRORS[503]},
             summary="Whether the service can reach its database")
    def healthz() -> Response:
        engine.ping()
        return json_response({"status": "ok", "database": engine.database})

    @ops.get("/metrics", response_class=Response, responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}},
              "description": "Prometheus text format."}, 401: ERRORS[401], 403: ERRORS[403]},
        summary="Prometheus metrics (operator)")
    @short_read
    def get_metrics(who: Operator) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.include_router(ops)
    app.include_router(create_console(engine, clock=clock, authenticate=principal_for))
    if gateway is not None:
        # First in the route list: the gateway's requests are the most frequent by far.
        app.router.routes[:0] = (gateway_routes(engine, gateway, clock=clock, authenticate=principal_for,
                                                inline=inline_reads))

    @app.exception_handler(CreditmeterError)
    async def on_error(request: Request, exc: CreditmeterError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ())
               if part not in ("body", "query", "path") and not _type_tag(part)]
        field = ".".join(loc) or "body"
        message = first.get("msg", "invalid")
        if first.get("type") == "json_invalid":
            field, message = "body", f"is not valid JSON ({first.get('ctx', {}).get('error', message)})"
        elif field == "body" and "json" not in request.headers.get("content-type", ""):
            message = "must be a JSON object, sent with 'Content-Type: application/json'"
        return json_response({"error": {"type": "invalid_input", "message": f"{field}: {message}",
                                        "field": field}}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if request.url.path.startswith("/v1/"):  # the gateway's callers expect OpenAI's shape
            return json_response({"error": {"message": str(exc.detail), "type": "invalid_request_error",
                                            "param": None, "code": kind}}, exc.status_code,
                                 dict(exc.headers or {}))
        return json_response({"error": {"type": kind, "message": str(exc.detail)}}, exc.status_code,
                             dict(exc.headers or {}))

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware)
    return app


class KeyCache:
    """Keys checked in the last ``ttl_s`` seconds (by digest), at most ``size`` of them."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: dict[str, tuple[float, Principal]] = {}
        self.generation = 0  # bumped by clear(): a lookup that began before it is not kept

    def get(self, key_digest: str) -> Principal | None:
        entry = self._entries.get(key_digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key_digest, None)
            return None
        return entry[1]

    def put(self, key_digest: str, principal: Principal, generation: int) -> None:
        """Keep what a lookup found, unless the cache was cleared since it began."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key_digest] = (time.monotonic() + self.ttl_s, principal)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


# Pydantic names the member of a union that failed (``amount_credits.str``); the field is the
# part before it.
_TYPE_TAGS = {"str", "int", "float", "bool", "decimal", "none", "list", "dict", "constrained-str",
              "constrained-int", "lax-or-strict", "json-or-python", "nullable"}


def _type_tag(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or ("[" in part and part.endswith("]")))


def _results(results: list[Charge | Rejected]) -> dict[str, Any]:
    rows = [present.rejected(r) if isinstance(r, Rejected) else present.charge(r) for r in results]
    counts = {"charged": 0, "duplicate": 0, "rejected": 0}
    for row in rows:
        counts[row["status"]] += 1
    return {"results": rows, **counts}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("creditmeter")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


class BodyLimit:
    """413 for a body over ``limit`` bytes, whether or not it declares its length."""

    def __init__(self, app: metrics.ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: metrics.Scope, receive: metrics.Receive, send: metrics.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a GET): nothing to measure
            return
        openai = scope["path"].startswith("/v1/")  # the gateway answers in OpenAI's error shape
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send, openai)
            return
        body = bytearray()
        more = True
        messages: list[metrics.Message] = []
        while more:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _too_large(self.limit, send, openai)
                return
            more = message.get("more_body", False)
        replay: AsyncIterator[metrics.Message] = _replay(bytes(body), messages, receive)

        async def receive_again() -> metrics.Message:
            return await replay.__anext__()

        await self.app(scope, receive_again, send)


async def _replay(body: bytes, extra: list[metrics.Message],
                  receive: metrics.Receive) -> AsyncIterator[metrics.Message]:
    yield {"type": "http.request", "body": body, "more_body": False}
    for message in extra:
        yield message
    while True:
        yield await receive()


async def _too_large(limit: int, send: metrics.Send, openai: bool = False) -> None:
    message = f"body: is over the limit of {limit} bytes"
    error = ({"message": message, "type": "invalid_request_error", "param": None, "code": "too_large"}
             if openai else {"type": "too_large", "field": "body", "message": message})
    body = orjson.dumps({"error": error})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app_from_env() -> FastAPI:
    """The app ``creditmeter serve`` runs in each worker, configured from the environment."""
    from creditmeter import serverconfig
    from creditmeter.cli import settings_from_env

    path = os.environ.get("CREDITMETER_CONFIG")
    loaded = serverconfig.load(Path(path) if path else None, os.environ)  # serve checked it first
    config = loaded.server
    engine = open_engine(config.database or "sqlite:///creditmeter.db", settings_from_env())
    gateway = Gateway(loaded.gateway, os.environ) if loaded.gateway.models else None
    return create_app(engine, admin_key=os.environ.get("CREDITMETER_ADMIN_KEY") or None,
                      max_body_bytes=config.max_body_bytes, threads=config.threads,
                      key_cache_s=config.key_cache_s, tick_interval_s=config.tick_interval_s,
                      gateway=gateway)
