"""Limits on an account's consumption, and what its requests meet when its credits run out.

Who sees and sets what: the operator, everything (its limits are the ``operator``'s);
the account's own key sees all of its limits and the policy, and sets and removes limits on the
account's keys (the ``owner``'s); an enterprise admin sees, sets and removes the limits on what
its enterprise's quota pays of a member's usage (the ``admin``'s), and of the member nothing else.
A limit on the whole account and the policy are the operator's alone. An account the caller may
not see is "not found"; a limit it sees but may not change is 403.
"""

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from creditmeter import present
from creditmeter.allowances import LimitRule, Scope
from creditmeter.api.auth import Caller, KeyedRoute, Operator, short_read, threaded
from creditmeter.api.balance_models import LimitIn, LimitOut, LimitsOut, PolicyIn, WhenOutOut
from creditmeter.api.context import PREFIX, ApiContext, Ctx
from creditmeter.api.errors import ERRORS, Forbidden, errors_with
from creditmeter.api.params import At, fields, instant
from creditmeter.api.responses import json_response
from creditmeter.errors import Conflict, NotFound
from creditmeter.ids import ID_CHARACTERS, ID_PATTERN
from creditmeter.keys import Principal

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)
MAX_LIMIT_ID = 64
NewLimitId = Annotated[str, Path(min_length=1, max_length=MAX_LIMIT_ID, pattern=ID_PATTERN, description=(
    f"The limit's id ({ID_CHARACTERS}, at most {MAX_LIMIT_ID}; not starting `plan-`, the plan's)."))]

# The engine's names for a limit's fields, as the API's body and path name them.
LIMIT_FIELDS = {"limit.calendar": "calendar", "limit.window": "window", "limit.credits": "credits",
                "id": "limit_id"}


@router.get("/accounts/{account_id}/limits", response_model=LimitsOut,
            summary="The limits in force with what counts against each, and the policy when credits "
                    "run out (an enterprise admin: its limits on a member)")
@short_read
def list_limits(ctx: Ctx, account_id: str, who: Caller, at: At = None) -> Response:
    enterprises = viewer(ctx, who, account_id)
    at_us = instant(at, "at") or ctx.clock()
    statuses = [s for s in ctx.engine.limits(account_id, at_us) if sees(s.rule, enterprises)]
    policy = (None if enterprises is not None  # a member's own terms stay private
              else present.when_out(ctx.engine.out_of_credits(account_id, at_us)))
    return json_response({"limits": [present.limit(s) for s in statuses], "when_out_of_credits": policy})


@router.put("/accounts/{account_id}/limits/{limit_id}", response_model=LimitOut, responses=errors_with(409),
            summary="Set or replace a limit, by id (the operator; the account's own key on its keys; "
                    "an enterprise admin on its members)")
@threaded
def set_limit(ctx: Ctx, account_id: str, limit_id: NewLimitId, body: LimitIn, who: Caller) -> Response:
    source = setter(ctx, who, account_id, body)
    now = ctx.clock()
    with fields(**LIMIT_FIELDS):
        rule = ctx.engine.set_limit(account_id, body.window, body.credits, now, scope=body.scope,
                                    key_id=body.key_id, enterprise_id=body.enterprise_id,
                                    limit_id=limit_id, calendar=body.calendar, source=source)
    status = [s for s in ctx.engine.limits(account_id, now) if s.rule.id == rule.id]
    if not status:  # removed again in the meantime
        raise NotFound("limit", limit_id, "limit_id")
    return json_response(present.limit(status[0]))


@router.delete("/accounts/{account_id}/limits/{limit_id}", status_code=204, response_class=Response,
               responses=errors_with(409), summary="Remove a limit (whoever may set it; a plan's "
                                                   "limits go with the plan)")
@threaded
def remove_limit(ctx: Ctx, account_id: str, limit_id: str, who: Caller) -> Response:
    now = ctx.clock()
    if who.is_operator:
        ctx.engine.remove_limit(account_id, limit_id, now)
        return Response(status_code=204)
    enterprises = viewer(ctx, who, account_id)
    seen = [s.rule for s in ctx.engine.limits(account_id, now) if s.rule.id == limit_id]
    if not seen or not sees(seen[0], enterprises):
        raise NotFound("limit", limit_id, "limit_id")
    rule = seen[0]
    if rule.source == "plan":
        raise Conflict(f"limit {limit_id!r} is the plan's: it goes with the plan and cannot be removed "
                       "on its own")
    if rule.source == "owner" and who.account_id == account_id:
        ctx.engine.remove_limit(account_id, limit_id, now, source="owner")
    elif rule.source == "admin" and rule.enterprise_id in who.admin_of:
        ctx.engine.remove_limit(account_id, limit_id, now, source="admin", enterprise_id=rule.enterprise_id)
    else:
        raise Forbidden(f"limit {limit_id!r} was set by the {rule.source}: this key may not remove it")
    return Response(status_code=204)


@router.put("/accounts/{account_id}/when-out-of-credits", response_model=WhenOutOut,
            summary="Set what the account's requests meet when its credits run out, over the plan's "
                    "(operator; null: back to the plan's)")
@threaded
def set_when_out(ctx: Ctx, account_id: str, body: PolicyIn, who: Operator) -> Response:
    with fields(when_out_of_credits="policy"):
        policy = ctx.engine.set_out_of_credits(account_id, body.policy, ctx.clock())
    return json_response(present.when_out(policy))


def viewer(ctx: ApiContext, who: Principal, account_id: str) -> frozenset[str] | None:
    """What of the account's limits the caller sees: None for all of them (the operator, the
    account itself, an enterprise's admins on the enterprise account), else the enterprises it
    administers that the account is a member of; anyone else is told the account does not exist."""
    if who.can_read(account_id):
        return None
    enterprises = frozenset(e for e in who.admin_of if ctx.engine.member_role(e, account_id) is not None)
    if not enterprises:
        raise NotFound("account", account_id, "account_id")
    return enterprises


def sees(rule: LimitRule, enterprises: frozenset[str] | None) -> bool:
    return enterprises is None or (rule.scope is Scope.MEMBER and rule.enterprise_id in enterprises)


def setter(ctx: ApiContext, who: Principal, account_id: str, body: LimitIn) -> str:
    """The source of a limit the caller sets, once it may set it."""
    if who.is_operator:
        return "operator"
    if body.scope == "account":
        raise Forbidden("only the operator sets a limit on a whole account")
    viewer(ctx, who, account_id)
    if body.scope == "key":
        if who.account_id != account_id:
            raise Forbidden("only the account's own key (or the operator) sets limits on its keys")
        return "owner"
    if body.enterprise_id is not None and body.enterprise_id not in who.admin_of:
        raise NotFound("enterprise", body.enterprise_id, "enterprise_id")
    return "admin"
