"""Credit packages (grants) and the balance they add up to."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, readable, short_read, threaded
from creditmeter.api.balance_models import BalanceOut
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.models import (
    GrantIn,
    PackageOut,
)
from creditmeter.api.params import At, fields, instant
from creditmeter.api.responses import json_response
from creditmeter.money import parse_credits

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.post("/accounts/{account_id}/grants", response_model=PackageOut, status_code=201,
             responses=errors_with(409), summary="Put a credit package on an account (operator)")
@threaded
def add_grant(ctx: Ctx, account_id: str, body: GrantIn, who: Operator) -> Response:
    with fields(expires="expires_at", effective="effective_at", amount="amount_credits"):
        package = ctx.engine.add_grant(
            account_id, parse_credits(body.amount_credits, "amount_credits", allow_zero=False),
            body.kind, ctx.clock(), expires_at_us=instant(body.expires_at, "expires_at"),
            effective_at_us=instant(body.effective_at, "effective_at"), priority=body.priority,
            name=body.name, grant_id=body.id, source="api")
    return json_response(present.package(package), 201)


@router.get("/accounts/{account_id}/grants", response_model=list[PackageOut],
            summary="An account's packages in burn-down order")
@short_read
def list_grants(ctx: Ctx, account_id: str, who: Caller,
                at: At = None) -> Response:
    readable(who, account_id)
    balance = ctx.engine.balance(account_id, instant(at, "at") or ctx.clock())
    return json_response([present.package(p) for p in balance.packages])


@router.post("/grants/{grant_id}/void", response_model=PackageOut, responses=errors_with(409),
             summary="Void (refund) what remains of a package (operator)")
@threaded
def void_grant(ctx: Ctx, grant_id: str, who: Operator) -> Response:
    return json_response(present.package(ctx.engine.void_grant(grant_id, ctx.clock())))


@router.get("/accounts/{account_id}/balance", response_model=BalanceOut,
            summary="Available, held, overage and current-period credits, every package, the "
                    "allowances, the limits and the policy when credits run out")
@short_read
def balance(ctx: Ctx, account_id: str, who: Caller,
            at: At = None) -> Response:
    readable(who, account_id)
    return json_response(present.balance(ctx.engine.balance(account_id, instant(at, "at") or ctx.clock())))
