"""An account's notices on its overview: the newest ones in plain words, how many the signed-in
person has not read, and the form that marks them all read.

The marks are the person's own (``creditmeter.notices.reader_of``: an account key's reader is its
account, so the console and the API share them). The form carries the session's form token (a
wrong one is the 403 page) and the newest notice the page showed, so a notice that arrived after
the page was drawn stays unread.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from creditmeter.console.deps import Console, Pages, Session, page, redirect
from creditmeter.console.session import PATH, session_key, token_ok
from creditmeter.notices import reader_of

SHOWN = 10  # the newest notices the overview shows

router = APIRouter(prefix=PATH)  # the full path on each route: metrics label requests by it


def notices(console: Console, session: Session, account_id: str) -> dict[str, Any]:
    """The overview's notices: the newest (each read or not for this person), the unread count,
    and the newest one's seq (what "mark all read" marks up to)."""
    found = console.engine.notifications(account_id, reader_of(session.principal), console.clock(),
                                         limit=SHOWN)
    return {"shown": found.notices, "unread": found.unread, "more": found.next_before is not None,
            "through": found.notices[0].seq if found.notices else None}


@router.post("/accounts/{account_id}/notices/read")
@page
def mark_all_read(request: Request, console: Pages, account_id: str, csrf: Annotated[str, Form()] = "",
                  through: Annotated[str, Form()] = "") -> Response:
    session = console.require(request)
    console.readable(session, account_id)
    key = session_key(request)
    assert key is not None  # require() passed
    if not token_ok(key, csrf):
        return console.refused(request)
    upto = int(through) if through.isascii() and through.isdigit() and len(through) <= 18 else None
    upto = upto or None  # 0 or none given: every notice so far
    console.engine.mark_read(account_id, reader_of(session.principal), console.clock(), through=upto)
    return redirect(f"/console/accounts/{quote(account_id, safe='')}?done=read#notices")
