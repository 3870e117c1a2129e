"""Webhook endpoints and their delivery log: the operator's alone.

An endpoint receives, signed, the alerts stored after it was added whose type it asked for; its
secret is answered once, when it is made. The log shows every delivery and each attempt; a
delivery can be replayed (sent again with the same ``webhook-id``).
"""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from creditmeter import present_webhooks as present
from creditmeter.api.auth import KeyedRoute, Operator, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.responses import json_response
from creditmeter.api.webhook_models import (
    DeliveriesOut,
    DeliveryDetail,
    DeliveryOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhooksOut,
)
from creditmeter.engine.webhooks import MAX_DELIVERY_PAGE

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.post("/webhooks", status_code=201, response_model=WebhookCreated,
             summary="Add a webhook endpoint; its signing secret is answered this once")
@threaded
def add_webhook(ctx: Ctx, body: WebhookIn, who: Operator) -> Response:
    endpoint, secret = ctx.engine.add_webhook(body.url, ctx.clock(), events=body.events,
                                              description=body.description)
    return json_response({**present.endpoint(endpoint), "secret": secret}, 201)


@router.get("/webhooks", response_model=WebhooksOut, summary="Every webhook endpoint (never its secret)")
@short_read
def list_webhooks(ctx: Ctx, who: Operator) -> Response:
    return json_response({"webhooks": [present.endpoint(e) for e in ctx.engine.webhooks()]})


@router.get("/webhooks/{endpoint_id}", response_model=WebhookOut, summary="One webhook endpoint")
@short_read
def get_webhook(ctx: Ctx, endpoint_id: str, who: Operator) -> Response:
    return json_response(present.endpoint(ctx.engine.get_webhook(endpoint_id)))


@router.delete("/webhooks/{endpoint_id}", status_code=204, response_class=Response,
               summary="Remove a webhook endpoint with its deliveries and their log")
@threaded
def remove_webhook(ctx: Ctx, endpoint_id: str, who: Operator) -> Response:
    ctx.engine.remove_webhook(endpoint_id)
    return Response(status_code=204)


@router.post("/webhooks/{endpoint_id}/enable", response_model=WebhookOut,
             summary="Enable an endpoint again (after its failures disabled it); what it had pending "
                     "is due at once")
@threaded
def enable_webhook(ctx: Ctx, endpoint_id: str, who: Operator) -> Response:
    return json_response(present.endpoint(ctx.engine.enable_webhook(endpoint_id, ctx.clock())))


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=DeliveriesOut,
            summary="An endpoint's deliveries, newest first")
@short_read
def list_deliveries(ctx: Ctx, endpoint_id: str, who: Operator,
                    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERY_PAGE)] = 50,
                    before: Annotated[str | None, Query(min_length=1, max_length=64, description=(
                        "A delivery id: only the deliveries made before it (the next page)."))] = None
                    ) -> Response:
    found = ctx.engine.deliveries(endpoint_id, limit, before)
    return json_response({"deliveries": [present.delivery(d) for d in found],
                          "next_before": found[-1].id if len(found) == limit else None})


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail,
            summary="A delivery with the log of its attempts")
@short_read
def get_delivery(ctx: Ctx, delivery_id: str, who: Operator) -> Response:
    return json_response(present.delivery_with_attempts(*ctx.engine.delivery(delivery_id)))


@router.post("/deliveries/{delivery_id}/replay", response_model=DeliveryOut, responses=errors_with(409),
             summary="Send a delivery again, with the same webhook-id (409: its endpoint is disabled)")
@threaded
def replay_delivery(ctx: Ctx, delivery_id: str, who: Operator) -> Response:
    replayed = ctx.engine.replay_delivery(delivery_id, ctx.clock(), ctx.replay_horizon_s)
    return json_response(present.delivery(replayed))
