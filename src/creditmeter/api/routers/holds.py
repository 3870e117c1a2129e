"""Holds: credits reserved for requests in flight, then settled or released."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import KeyedRoute, Operator, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, InsufficientCredits, LimitReached, errors_with
from creditmeter.api.models import (
    ChargeOut,
    HoldIn,
    HoldOut,
    SettleIn,
)
from creditmeter.api.params import fields
from creditmeter.api.responses import json_response
from creditmeter.domain import Refused
from creditmeter.engine import Usage
from creditmeter.money import parse_credits
from creditmeter.web import metrics

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.post("/accounts/{account_id}/holds", response_model=HoldOut, status_code=201,
             responses=errors_with(402, 409, 429),
             summary="Reserve credits for a request in flight (operator); refused past the credits "
                     "(402) or past a limit (429)")
@threaded
def reserve(ctx: Ctx, account_id: str, body: HoldIn, who: Operator) -> Response:
    now = ctx.clock()
    with fields(amount="amount_credits", ttl="ttl_seconds"):
        # The hold records the key it was made with: limits on a key count the holds made with it.
        result = ctx.engine.reserve(account_id, parse_credits(body.amount_credits, "amount_credits",
                                                              allow_zero=False),
                                    now, ttl_s=body.ttl_seconds, hold_id=body.id, key_id=who.key_id)
    if isinstance(result, Refused):
        raise LimitReached(result, now) if result.limit is not None else InsufficientCredits(result)
    return json_response(present.hold(result), 201)


@router.post("/holds/{hold_id}/settle", response_model=ChargeOut, responses=errors_with(409),
             summary="Charge a held request's actual usage; the rest is released (operator)")
@threaded
def settle(ctx: Ctx, hold_id: str, body: SettleIn, who: Operator) -> Response:
    usage = Usage(body.model, body.input_tokens, body.output_tokens, body.cached_input_tokens,
                  body.cache_write_tokens, tuple(sorted(body.quantities.items())), body.metadata,
                  body.reasoning_tokens, body.cache_write_1h_tokens, body.service_tier)
    charge = ctx.engine.settle(hold_id, usage, ctx.clock(), event_id=body.id)
    metrics.count_results([charge])
    return json_response(present.charge(charge))


@router.post("/holds/{hold_id}/release", response_model=HoldOut, responses=errors_with(409),
             summary="Give a hold's credits back (operator)")
@threaded
def release(ctx: Ctx, hold_id: str, who: Operator) -> Response:
    return json_response(present.hold(ctx.engine.release(hold_id, ctx.clock())))
