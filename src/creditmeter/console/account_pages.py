"""An account's pages: its overview (with its notices), its usage (filtered and paged) and that usage as CSV.

Without dates the usage page and its CSV cover the current billing period (``range=all``: all
time).

What the key may not read is the 404 page; usage filters that do not parse are a 400 page (or a
plain-text 400 for the CSV, which a browser downloads rather than shows).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from creditmeter.console import views
from creditmeter.console.deps import Console, Pages, Session, page
from creditmeter.console.notice_pages import notices
from creditmeter.console.session import PATH
from creditmeter.errors import InputError
from creditmeter.ingest import csv_chunks, csv_filename

router = APIRouter(prefix=PATH)  # the full path on each route: metrics label requests by it


def _readable(console: Console, request: Request, account_id: str) -> Session:
    """The session, if its key may read the account (else the sign-in redirect or the 404 page)."""
    session = console.require(request)
    console.readable(session, account_id)
    return session


@router.get("/accounts/{account_id}")
@page
def overview(request: Request, console: Pages, account_id: str, done: str = "") -> Response:
    session = _readable(console, request, account_id)
    return console.render(request, "overview.html", tab="overview",
                          manages=session.principal.can_manage(account_id),
                          notices=notices(console, session, account_id),
                          message="Notices marked read." if done == "read" else None,
                          **views.overview(console.engine, account_id, console.clock()))


@router.get("/accounts/{account_id}/usage")
@page
def usage(request: Request, console: Pages, account_id: str) -> Response:
    session = _readable(console, request, account_id)
    filters = views.parse_filters(request.query_params)
    context = views.usage(console.engine, account_id, filters, console.clock())
    status = 400 if filters.errors else 200
    return console.render(request, "usage.html", status, tab="usage",
                          manages=session.principal.can_manage(account_id), **context)


@router.get("/accounts/{account_id}/usage.csv")
@page
def usage_csv(request: Request, console: Pages, account_id: str) -> Response:
    _readable(console, request, account_id)
    filters = views.parse_filters(request.query_params)
    views.default_to_period(filters, lambda: console.engine.balance(account_id, console.clock()).period)
    if filters.errors:
        text = "".join(f"{name}: {reason}\n" for name, reason in filters.errors.items())
        return Response(text, 400, media_type="text/plain; charset=utf-8")
    try:
        stream = console.engine.usage(account_id, **views.engine_filters(filters))
    except InputError as exc:
        return Response(f"{exc}\n", 400, media_type="text/plain; charset=utf-8")
    disposition = f'attachment; filename="{csv_filename(account_id)}"'
    return StreamingResponse((chunk.encode() for chunk in csv_chunks(stream)),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": disposition,
                                      "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
