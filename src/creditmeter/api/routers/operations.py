"""Prices, and the operator's maintenance calls (tick, reconcile)."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS
from creditmeter.api.models import (
    PricesIn,
    PricesOut,
    PriceVersionOut,
    ReconcileOut,
    TickOut,
)
from creditmeter.api.params import At, fields, instant
from creditmeter.api.responses import json_response
from creditmeter.pricing import parse_catalog
from creditmeter.timeutil import format_instant

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/prices", response_model=PricesOut, summary="The price version in effect, and every version")
@short_read
def get_prices(ctx: Ctx, who: Caller, at: At = None) -> Response:
    at_us = instant(at, "at") or ctx.clock()
    return json_response(present.prices(ctx.engine.price_book(), at_us))


@router.post("/prices", response_model=PriceVersionOut, status_code=201,
             summary="Load a catalog as a new price version (operator)")
@threaded
def post_prices(ctx: Ctx, body: PricesIn, who: Operator) -> Response:
    now = ctx.clock()
    effective = instant(body.effective_at, "effective_at")
    catalog = parse_catalog(body.catalog, "catalog")
    with fields(effective="effective_at"):
        version = ctx.engine.load_prices(catalog, effective, now, source="api")
    return json_response({"version": version.version, "effective_at": format_instant(version.effective_at_us),
                          "models": len(catalog.models), "features": len(catalog.features)}, 201)


@router.post("/tick", response_model=TickOut,
             summary="Time out holds, record expiries, pay overage (operator; safe to repeat)")
@threaded
def tick(ctx: Ctx, who: Operator) -> Response:
    now = ctx.clock()
    return json_response(present.tick(ctx.engine.tick(now), now))


@router.get("/reconcile", response_model=ReconcileOut, summary="Check every invariant (operator)")
@threaded
def reconcile(ctx: Ctx, who: Operator) -> Response:
    problems = ctx.engine.check_invariants()
    return json_response({"ok": not problems, "violations": problems})
