"""Enterprises: the pool, members, and the quota handed to them."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, manages, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.enterprise_models import (
    AllocationIn,
    EnterpriseOut,
    MemberIn,
    MemberOut,
    QuotaAllocationOut,
)
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.models import PackageOut
from creditmeter.api.params import At, fields, instant
from creditmeter.api.responses import json_response
from creditmeter.errors import NotFound
from creditmeter.money import parse_credits

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/enterprises/{enterprise_id}", response_model=EnterpriseOut,
            summary="The pool, the members and each member's quota, used and remaining "
                    "(operator or the enterprise's admins)")
@short_read
def show_enterprise(ctx: Ctx, enterprise_id: str, who: Caller, at: At = None) -> Response:
    manages(who, enterprise_id)
    view = ctx.engine.enterprise(enterprise_id, instant(at, "at") or ctx.clock())
    return json_response(present.enterprise(view))


@router.post("/enterprises/{enterprise_id}/members", response_model=MemberOut, status_code=201,
             summary="Add a member or admin, or change their role (operator)")
@threaded
def add_member(ctx: Ctx, enterprise_id: str, body: MemberIn, who: Operator) -> Response:
    member = ctx.engine.add_member(enterprise_id, body.account_id, ctx.clock(), role=body.role)
    ctx.access.forget()  # admin rights changed
    return json_response(present.member(member), 201)


@router.post("/enterprises/{enterprise_id}/members/{account_id}/remove", status_code=204,
             response_class=Response, summary="Remove a member (operator)")
@threaded
def remove_member(ctx: Ctx, enterprise_id: str, account_id: str, who: Operator) -> Response:
    ctx.engine.remove_member(enterprise_id, account_id, ctx.clock())
    ctx.access.forget()
    return Response(status_code=204)


@router.post("/enterprises/{enterprise_id}/allocations", response_model=PackageOut, status_code=201,
             responses=errors_with(409), summary="Add pool credits to a member's quota "
                                             "(operator or the enterprise's admins)")
@threaded
def allocate(ctx: Ctx, enterprise_id: str, body: AllocationIn, who: Caller) -> Response:
    manages(who, enterprise_id)
    with fields(expires="expires_at", amount="amount_credits"):
        package = ctx.engine.allocate(
            enterprise_id, body.account_id, parse_credits(body.amount_credits, "amount_credits",
                                                          allow_zero=False),
            ctx.clock(), expires_at_us=instant(body.expires_at, "expires_at"), allocation_id=body.id)
    return json_response(present.package(package), 201)


@router.post("/enterprises/{enterprise_id}/allocations/{allocation_id}/revoke",
             response_model=QuotaAllocationOut, summary="Revoke quota: the unused part returns to the pool "
                                                   "(operator or the enterprise's admins)")
@threaded
def revoke_allocation(ctx: Ctx, enterprise_id: str, allocation_id: str, who: Caller) -> Response:
    manages(who, enterprise_id)
    if ctx.engine.allocation(allocation_id).enterprise_id != enterprise_id:
        raise NotFound("allocation", allocation_id, "allocation_id")
    return json_response(present.allocation(ctx.engine.revoke_allocation(allocation_id, ctx.clock())))
