"""Usage: recording events, paging and summing them, and the CSV export."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, readable, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.models import (
    SummaryOut,
    UsageBatchIn,
    UsagePageOut,
    UsageResultsOut,
)
from creditmeter.api.params import From, Member, Model, To, time_range
from creditmeter.api.responses import json_response
from creditmeter.domain import Charge, Rejected
from creditmeter.ingest import csv_chunks, csv_filename
from creditmeter.money import format_credits
from creditmeter.web import metrics

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.post("/usage", response_model=UsageResultsOut, responses=errors_with(409),
             summary="Record up to 1,000 usage events (operator); a result per event")
@threaded
def post_usage(ctx: Ctx, body: UsageBatchIn, who: Operator) -> Response:
    results = ctx.engine.record_batch(body.events, ctx.clock())
    metrics.count_results(results)
    return json_response(_results(results))


@router.get("/accounts/{account_id}/usage", response_model=UsagePageOut,
            summary="Usage, newest first, with the packages that paid; cursor pagination")
@short_read
def usage(ctx: Ctx, account_id: str, who: Caller,
          from_: From = None, to: To = None, model: Model = None,
          member: Member = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          cursor: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    readable(who, account_id)
    start, end = time_range(from_, to)
    page, mark = ctx.engine.usage_page(account_id, from_us=start, to_us=end, model=model,
                                       member=member, limit=limit, after=present.page_mark(cursor))
    return json_response({"events": [present.event(e) for e in page], "next_cursor": present.cursor(mark)})


@router.get("/accounts/{account_id}/usage/summary", response_model=SummaryOut,
            summary="Requests, tokens and credits per day or per model")
@threaded
def usage_summary(ctx: Ctx, account_id: str, who: Caller,
                  group_by: Annotated[str, Query(pattern="^(day|model)$")] = "day",
                  from_: From = None, to: To = None, model: Model = None,
                  member: Member = None) -> Response:
    readable(who, account_id)
    start, end = time_range(from_, to)
    rows = ctx.engine.usage_summary(account_id, group_by, from_us=start, to_us=end, model=model,
                                member=member)
    current = present.balance(ctx.engine.balance(account_id, ctx.clock()))
    return json_response({"account_id": account_id, "group_by": group_by,
                          "groups": [present.summary_row(r, group_by) for r in rows],
                          "total_credits": format_credits(sum(r.cost_uc for r in rows)),
                          "subscription": current["subscription"], "period": current["period"],
                          "period_used_credits": current["period_used_credits"]})


@router.get("/accounts/{account_id}/usage.csv", summary="Usage as CSV, full precision, streamed",
            response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "One row per event, newest first."}})
@short_read
def usage_csv(ctx: Ctx, account_id: str, who: Caller,
              from_: From = None, to: To = None, model: Model = None,
              member: Member = None) -> Response:
    readable(who, account_id)
    start, end = time_range(from_, to)
    stream = ctx.engine.usage(account_id, from_us=start, to_us=end, model=model, member=member)
    return StreamingResponse(
        iterate_in_threadpool(chunk.encode() for chunk in csv_chunks(stream)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{csv_filename(account_id)}"'})


def _results(results: list[Charge | Rejected]) -> dict[str, Any]:
    rows = [present.rejected(r) if isinstance(r, Rejected) else present.charge(r) for r in results]
    counts = {"charged": 0, "duplicate": 0, "rejected": 0}
    for row in rows:
        counts[row["status"]] += 1
    return {"results": rows, **counts}
