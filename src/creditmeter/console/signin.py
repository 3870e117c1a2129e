"""Signing in and out of the console, and its start: the signed-in key's own account, or for the
operator the list of accounts."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from creditmeter.console.deps import Pages, page, redirect
from creditmeter.console.session import PATH, cross_site, safe_next, session_key, sign_in, sign_out, token_ok
from creditmeter.keys import ENV_OPERATOR_KEY_ID

router = APIRouter(prefix=PATH)  # the full path on each route: metrics label requests by it


@router.get("")
@page
def start(request: Request, console: Pages) -> Response:
    principal = console.require(request).principal
    if principal.account_id is not None:
        return redirect(f"/console/accounts/{quote(principal.account_id, safe='')}")
    return console.render(request, "accounts.html", accounts=console.engine.accounts())


@router.get("/sign-in")
@page
def sign_in_page(request: Request, console: Pages, next: str = "") -> Response:
    if console.current(request) is not None:
        return redirect(safe_next(next))
    return console.render(request, "sign_in.html", next=safe_next(next), error=None)


@router.post("/sign-in")
@page
def sign_in_post(request: Request, console: Pages, key: Annotated[str, Form()] = "",
                 next: Annotated[str, Form()] = "") -> Response:
    if cross_site(request):
        return console.refused(request)
    key = key.strip()
    principal = console.authenticate(key) if key and len(key) <= 255 else None
    if principal is None:
        error = "Enter your key." if not key else "This key is unknown or has been revoked."
        return console.render(request, "sign_in.html", 400 if not key else 401, next=safe_next(next),
                              error=error)
    if principal.key_id == ENV_OPERATOR_KEY_ID:  # a cookie holding it could never be revoked
        return console.render(request, "sign_in.html", 401, next=safe_next(next),
                              error="Sign in with a stored key you can revoke ('creditmeter keys create "
                                    "--operator'), not the server's CREDITMETER_ADMIN_KEY.")
    response = redirect(safe_next(next))
    sign_in(response, request, key)
    return response


@router.post("/sign-out")
@page
def sign_out_post(request: Request, console: Pages, csrf: Annotated[str, Form()] = "") -> Response:
    key = session_key(request)
    if key is not None and console.current(request) is not None and not token_ok(key, csrf):
        return console.refused(request)
    response = redirect("/console/sign-in")
    sign_out(response, request)
    return response
