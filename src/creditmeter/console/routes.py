"""The console (``/console``): sign-in, the overview and its notices, usage, CSV and the enterprise page.

Every page but sign-in needs a session (see :mod:`creditmeter.console.session`); without one the
visitor is sent (303) to sign in. What the key may not see is a 404 page identical to the one for
something that does not exist. Pages are rendered on the server from the engine's figures (the
API's), so the console needs no script at all.

The routes live by area (:mod:`~creditmeter.console.signin`,
:mod:`~creditmeter.console.account_pages`, :mod:`~creditmeter.console.enterprise_pages`,
:mod:`~creditmeter.console.static`); what they share is in :mod:`creditmeter.console.deps`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from creditmeter.console import account_pages, enterprise_pages, notice_pages, signin, static
from creditmeter.console.deps import Console, Hidden, Pages, page, redirect, templates
from creditmeter.console.session import PATH
from creditmeter.engine import Engine
from creditmeter.keys import Principal

# Anything else under /console; it comes last, after every route it would otherwise shadow.
elsewhere_router = APIRouter(prefix=PATH)


@elsewhere_router.api_route("/{rest:path}", methods=["GET", "HEAD", "POST"])
@page
def elsewhere(request: Request, console: Pages, rest: str) -> Response:
    console.require(request)
    if rest == "":
        return redirect("/console")
    raise Hidden


def create_console(engine: Engine, *, clock: Callable[[], int],
                   authenticate: Callable[[str], Principal | None]) -> APIRouter:
    """The console's routes, all under ``/console`` (kept out of the API's OpenAPI document)."""
    files = static.load()
    console = Console(engine, clock, authenticate, templates(static.url_for(files)), files)
    router = APIRouter(include_in_schema=False, dependencies=[Depends(console.attach)])
    for routes in (signin.router, account_pages.router, notice_pages.router, enterprise_pages.router,
                   static.router, elsewhere_router):
        router.include_router(routes)
    return router
