"""The service's own routes, outside ``/api``: the health check and the Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter.api.auth import KeyedRoute, Operator, short_read
from creditmeter.api.context import Ctx
from creditmeter.api.errors import ERRORS
from creditmeter.api.models import HealthOut
from creditmeter.api.responses import json_response
from creditmeter.web import metrics

health = APIRouter()
router = APIRouter(route_class=KeyedRoute)


@health.get("/healthz", response_model=HealthOut, responses={503: ERRORS[503]},
            summary="Whether the service can reach its database")
def healthz(ctx: Ctx) -> Response:
    ctx.engine.ping()
    return json_response({"status": "ok", "database": ctx.engine.database})


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text format."}, 401: ERRORS[401], 403: ERRORS[403]},
    summary="Prometheus metrics (operator)")
@short_read
def get_metrics(ctx: Ctx, who: Operator) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
