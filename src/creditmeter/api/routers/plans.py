"""The plan catalog, subscriptions and one-off purchases."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, readable, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.models import (
    AccountSubscriptionsOut,
    PackageOut,
    PlanCatalogOut,
    PlanOut,
    PlansIn,
    PurchaseIn,
    SubscriptionIn,
    SubscriptionOut,
)
from creditmeter.api.params import At, instant
from creditmeter.api.responses import json_response
from creditmeter.plans import parse_plans
from creditmeter.subscriptions import current_subscription

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/plans", response_model=list[PlanOut], summary="The plan catalog")
@short_read
def list_plans(ctx: Ctx, who: Caller) -> Response:
    return json_response(ctx.engine.plans().to_dict()["plans"])


@router.post("/plans", response_model=PlanCatalogOut, status_code=201,
             summary="Load a plan catalog (operator; running subscriptions keep their terms)")
@threaded
def load_plans(ctx: Ctx, body: PlansIn, who: Operator) -> Response:
    catalog = parse_plans({"plans": body.plans}, "plans")
    version = ctx.engine.load_plans(catalog, ctx.clock(), source="api")
    return json_response({"version": version, "plans": len(catalog.plans)}, 201)


@router.post("/accounts/{account_id}/subscriptions", response_model=SubscriptionOut, status_code=201,
             responses=errors_with(409), summary="Subscribe an account to a trial, subscription or "
                                             "enterprise plan (operator)")
@threaded
def subscribe(ctx: Ctx, account_id: str, body: SubscriptionIn, who: Operator) -> Response:
    now = ctx.clock()
    sub = ctx.engine.subscribe(account_id, body.plan_id, now, subscription_id=body.id, seats=body.seats)
    return json_response(present.subscription(sub, now), 201)


@router.post("/subscriptions/{subscription_id}/cancel", response_model=SubscriptionOut,
             responses=errors_with(409), summary="Cancel at the end of the current period (operator)")
@threaded
def cancel_subscription(ctx: Ctx, subscription_id: str, who: Operator) -> Response:
    now = ctx.clock()
    return json_response(present.subscription(ctx.engine.cancel_subscription(subscription_id, now), now))


@router.get("/accounts/{account_id}/subscription", response_model=AccountSubscriptionsOut,
            summary="The account's current subscription, and every one it had")
@short_read
def account_subscription(ctx: Ctx, account_id: str, who: Caller, at: At = None) -> Response:
    readable(who, account_id)
    at_us = instant(at, "at") or ctx.clock()
    subs = ctx.engine.subscriptions(account_id)
    current = current_subscription(subs, at_us)
    return json_response({"account_id": account_id,
                          "current": present.subscription(current, at_us) if current else None,
                          "subscriptions": [present.subscription(x, at_us) for x in subs]})


@router.post("/accounts/{account_id}/purchases", response_model=PackageOut, status_code=201,
             responses=errors_with(409), summary="Buy a one-off pack, idempotent by order id (operator)")
@threaded
def purchase(ctx: Ctx, account_id: str, body: PurchaseIn, who: Operator) -> Response:
    return json_response(present.package(ctx.engine.purchase(account_id, body.pack_id, ctx.clock(),
                                                         order_id=body.id)), 201)
