"""Notifications: an account's alerts as its people read them, and their read marks.

Who sees them: whoever sees the account's usage (the account's own keys, the enterprise account's
admins, the operator). The marks are the caller's own (``creditmeter.notices.reader_of``): every
key of an account shares them, each operator key has its own.
"""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, readable, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS
from creditmeter.api.notification_models import NotificationsOut, ReadIn, ReadOut
from creditmeter.api.responses import json_response
from creditmeter.notices import MAX_PAGE, MAX_SEQ, reader_of

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/accounts/{account_id}/notifications", response_model=NotificationsOut,
            summary="The account's notifications, newest first, in plain words, each with whether "
                    "the caller read it")
@short_read
def notifications(ctx: Ctx, account_id: str, who: Caller,
                  unread: Annotated[bool, Query(description="Only those the caller has not read")] = False,
                  before: Annotated[int | None, Query(ge=1, le=MAX_SEQ, description=(
                      "A page's next_before: the notifications older than it"))] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50) -> Response:
    readable(who, account_id)
    page = ctx.engine.notifications(account_id, reader_of(who), ctx.clock(), unread_only=unread,
                                    before=before, limit=limit)
    return json_response(present.notice_page(account_id, page))


@router.post("/accounts/{account_id}/notifications/read", response_model=ReadOut,
             summary="Mark notifications read for the caller: some by id, or all of them")
@threaded
def mark_read(ctx: Ctx, account_id: str, body: ReadIn, who: Caller) -> Response:
    readable(who, account_id)
    ids, through = body.choice()
    marked, unread = ctx.engine.mark_read(account_id, reader_of(who), ctx.clock(), ids=ids, through=through)
    return json_response({"marked": marked, "unread": unread})
