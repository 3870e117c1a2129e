"""Auto top-up: when an account's available credits fall below a threshold, a pack is requested
of the operator's payment system (the ``topup.requested`` alert; see docs/alerts.md).

Who: the account's own keys (and the admins of an enterprise account) read it; only the operator
sets it or turns it off.
"""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter.alert_rules import AutoTopup
from creditmeter.api.auth import Caller, KeyedRoute, Operator, readable, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS
from creditmeter.api.responses import json_response
from creditmeter.api.topup_models import AutoTopupAnswer, AutoTopupSet

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/accounts/{account_id}/auto-topup", response_model=AutoTopupAnswer,
            summary="The account's auto top-up (null: none)")
@short_read
def show_auto_topup(ctx: Ctx, account_id: str, who: Caller) -> Response:
    readable(who, account_id)
    return answer(ctx.engine.auto_topup(account_id))


@router.put("/accounts/{account_id}/auto-topup", response_model=AutoTopupAnswer,
            summary="Set the account's auto top-up, or turn it off with null (operator)")
@threaded
def set_auto_topup(ctx: Ctx, account_id: str, body: AutoTopupSet, who: Operator) -> Response:
    setting = None if body.auto_topup is None else body.auto_topup.model_dump()
    return answer(ctx.engine.set_auto_topup(account_id, setting, ctx.clock()))


def answer(topup: AutoTopup | None) -> Response:
    return json_response({"auto_topup": None if topup is None else topup.to_dict()})
