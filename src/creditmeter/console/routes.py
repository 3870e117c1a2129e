"""The console's routes (``/console``): sign-in, the overview, usage, CSV and the enterprise page.

Every page but sign-in needs a session (see :mod:`creditmeter.console.session`); without one the
visitor is sent (303) to sign in. What the key may not see is a 404 page identical to the one for
something that does not exist. Pages are rendered on the server from the engine's figures (the
API's), so the console needs no script at all.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from creditmeter.console import display, views
from creditmeter.console.chart import px, segment_title
from creditmeter.console.session import (
    cross_site,
    form_token,
    safe_next,
    session_key,
    sign_in,
    sign_in_url,
    sign_out,
    token_ok,
)
from creditmeter.engine import Engine
from creditmeter.errors import Conflict, InputError, NotFound, SchemaError, Unavailable
from creditmeter.ingest import csv_chunks, csv_filename
from creditmeter.keys import ENV_OPERATOR_KEY_ID, Principal
from creditmeter.money import format_credits, parse_credits
from creditmeter.timeutil import DAY_US, MAX_US

log = logging.getLogger("creditmeter.console")
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
STATIC_TYPES = {"css": "text/css; charset=utf-8", "svg": "image/svg+xml"}
# Engine fields of an allocation → the add-quota form's fields.
QUOTA_FIELDS = {"account_id": "member", "amount": "amount", "expires": "valid_through"}


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    token: str  # the form token (never the key itself)


class _SignIn(Exception):
    """No valid session: send the visitor to sign in."""


class _Hidden(Exception):
    """Not there, or not this key's to see: the 404 page."""


def create_console(engine: Engine, *, clock: Callable[[], int],
                   authenticate: Callable[[str], Principal | None]) -> APIRouter:
    """The console's routes, all under ``/console`` (kept out of the API's OpenAPI document)."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    env = Environment(loader=PackageLoader("creditmeter.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    static = {entry.name: entry.read_bytes() for entry in files("creditmeter.console").joinpath("static")
              .iterdir() if entry.name.rsplit(".", 1)[-1] in STATIC_TYPES}
    versions = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in static.items()}
    env.globals.update(credits=display.credits, exact=format_credits, rounded=display.rounded_credits,
                       when=display.when, day=display.day,
                       iso_day=display.iso_day, count=display.count, px=px, segment_title=segment_title,
                       quote=lambda text: quote(text, safe=""),
                       static=lambda name: f"/console/static/{name}?v={versions[name]}")

    # -- sessions and responses -----------------------------------------------------------------

    def current(request: Request) -> Session | None:
        key = session_key(request)
        principal = authenticate(key) if key is not None else None
        if key is None or principal is None:
            return None
        session = Session(principal, form_token(key))
        request.state.console_session = session
        return session

    def require(request: Request) -> Session:
        session = current(request)
        if session is None:
            raise _SignIn
        return session

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "console_session", None)
        body = env.get_template(template).render(session=session, path=request.url.path,
                                                 who=_who(session), **context)
        return HTMLResponse(body, status, PAGE_HEADERS)

    def _who(session: Session | None) -> str:
        if session is None:
            return ""
        return "operator" if session.principal.is_operator else str(session.principal.account_id)

    def redirect(url: str) -> Response:
        return RedirectResponse(url, 303, {"Cache-Control": "no-store"})

    def page(fn: Callable[..., Response]) -> Callable[..., Response]:
        """Turn the console's own outcomes into pages: sign in (303), not found (404), and a
        database that cannot answer now (503)."""

        @functools.wraps(fn)
        def run(request: Request, **kwargs: Any) -> Response:
            try:
                return fn(request, **kwargs)
            except _SignIn:
                response = redirect(sign_in_url(request))
                if session_key(request) is not None:  # a key that no longer works
                    sign_out(response, request)
                return response
            except (_Hidden, NotFound, InputError):  # a malformed id in the path is not found too
                return render(request, "not_found.html", 404)
            except (Unavailable, SchemaError) as exc:  # the details go to the log only
                log.warning("console: %s: %s", exc.kind, exc)
                return render(request, "unavailable.html", 503)

        return run

    def readable(session: Session, account_id: str) -> None:
        if not session.principal.can_read(account_id) or engine.account(account_id) is None:
            raise _Hidden

    def manages(session: Session, enterprise_id: str) -> None:
        if not (session.principal.is_operator or enterprise_id in session.principal.admin_of):
            raise _Hidden

    def refused(request: Request) -> HTMLResponse:
        return render(request, "refused.html", 403)

    # -- sign in and out ------------------------------------------------------------------------

    @router.get("")
    @page
    def start(request: Request) -> Response:
        session = require(request)
        principal = session.principal
        if principal.account_id is not None:
            return redirect(f"/console/accounts/{quote(principal.account_id, safe='')}")
        return render(request, "accounts.html", accounts=engine.accounts())

    @router.get("/sign-in")
    @page
    def sign_in_page(request: Request, next: str = "") -> Response:
        if current(request) is not None:
            return redirect(safe_next(next))
        return render(request, "sign_in.html", next=safe_next(next), error=None)

    @router.post("/sign-in")
    @page
    def sign_in_post(request: Request, key: Annotated[str, Form()] = "",
                     next: Annotated[str, Form()] = "") -> Response:
        if cross_site(request):
            return refused(request)
        key = key.strip()
        principal = authenticate(key) if key and len(key) <= 255 else None
        if principal is None:
            error = "Enter your key." if not key else "This key is unknown or has been revoked."
            return render(request, "sign_in.html", 400 if not key else 401, next=safe_next(next),
                          error=error)
        if principal.key_id == ENV_OPERATOR_KEY_ID:  # a cookie holding it could never be revoked
            return render(request, "sign_in.html", 401, next=safe_next(next),
                          error="Sign in with a stored key you can revoke ('creditmeter keys create "
                                "--operator'), not the server's CREDITMETER_ADMIN_KEY.")
        response = redirect(safe_next(next))
        sign_in(response, request, key)
        return response

    @router.post("/sign-out")
    @page
    def sign_out_post(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        key = session_key(request)
        if key is not None and current(request) is not None and not token_ok(key, csrf):
            return refused(request)
        response = redirect("/console/sign-in")
        sign_out(response, request)
        return response

    # -- an account: overview, usage, CSV -------------------------------------------------------

    @router.get("/accounts/{account_id}")
    @page
    def overview(request: Request, account_id: str) -> Response:
        session = require(request)
        readable(session, account_id)
        return render(request, "overview.html", tab="overview",
                      manages=_manages(session, account_id), **views.overview(engine, account_id, clock()))

    def _manages(session: Session, account_id: str) -> bool:
        return session.principal.is_operator or account_id in session.principal.admin_of

    @router.get("/accounts/{account_id}/usage")
    @page
    def usage(request: Request, account_id: str) -> Response:
        session = require(request)
        readable(session, account_id)
        filters = views.parse_filters(request.query_params)
        context = views.usage(engine, account_id, filters, clock())
        status = 400 if filters.errors else 200
        return render(request, "usage.html", status, tab="usage",
                      manages=_manages(session, account_id), **context)

    @router.get("/accounts/{account_id}/usage.csv")
    @page
    def usage_csv(request: Request, account_id: str) -> Response:
        session = require(request)
        readable(session, account_id)
        filters = views.parse_filters(request.query_params)
        if filters.errors:
            text = "".join(f"{name}: {reason}\n" for name, reason in filters.errors.items())
            return Response(text, 400, media_type="text/plain; charset=utf-8")
        try:
            stream = engine.usage(account_id, **views.engine_filters(filters))
        except InputError as exc:
            return Response(f"{exc}\n", 400, media_type="text/plain; charset=utf-8")
        disposition = f'attachment; filename="{csv_filename(account_id)}"'
        return StreamingResponse((chunk.encode() for chunk in csv_chunks(stream)),
                                 media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": disposition,
                                          "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    # -- an enterprise --------------------------------------------------------------------------

    def enterprise_page(request: Request, enterprise_id: str, status: int = 200,
                        form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                        message: str | None = None) -> Response:
        view = engine.enterprise(enterprise_id, clock())
        form = form or {"member": "", "amount": "", "valid_through": "", "id": uuid.uuid4().hex}
        return render(request, "enterprise.html", status, form=form, errors=errors or {},
                      message=message, **views.enterprise(view))

    @router.get("/enterprises/{enterprise_id}")
    @page
    def show_enterprise(request: Request, enterprise_id: str, done: str = "") -> Response:
        manages(require(request), enterprise_id)
        message = {"added": "Quota added.", "revoked": "Quota revoked; what was unused is back in the pool."}
        return enterprise_page(request, enterprise_id, message=message.get(done))

    @router.post("/enterprises/{enterprise_id}/quota")
    @page
    def add_quota(request: Request, enterprise_id: str, csrf: Annotated[str, Form()] = "",
                  member: Annotated[str, Form()] = "", amount: Annotated[str, Form()] = "",
                  valid_through: Annotated[str, Form()] = "",
                  form_id: Annotated[str, Form(alias="id")] = "") -> Response:
        manages(require(request), enterprise_id)
        if not token_ok(_key(request), csrf):
            return refused(request)
        form = {"member": member.strip(), "amount": amount.strip(), "valid_through": valid_through.strip(),
                "id": form_id.strip() or uuid.uuid4().hex}
        errors: dict[str, str] = {}
        if not form["member"]:
            errors["member"] = "Choose a member."
        amount_uc = 0
        if not form["amount"]:
            errors["amount"] = "Enter an amount of credits."
        else:
            try:
                amount_uc = parse_credits(form["amount"], "amount", allow_zero=False)
            except InputError as exc:
                errors["amount"] = exc.reason
        expires_us = None
        if form["valid_through"]:
            try:
                expires_us = views.parse_day(form["valid_through"], "valid_through") + DAY_US
                if expires_us > MAX_US:
                    raise InputError("valid_through", "must be a date before 9999-12-31")
            except InputError as exc:
                errors["valid_through"] = exc.reason
        if errors:
            return enterprise_page(request, enterprise_id, 400, form, errors)
        try:  # an unknown enterprise raises NotFound: the 404 page
            engine.allocate(enterprise_id, form["member"], amount_uc, clock(), expires_at_us=expires_us,
                            allocation_id=form["id"])
        except InputError as exc:
            errors[QUOTA_FIELDS.get(exc.field, "form")] = exc.reason
            if exc.field == "id":  # the form's own id: a fresh one lets the next try go through
                form["id"] = uuid.uuid4().hex
            return enterprise_page(request, enterprise_id, 400, form, errors)
        except Conflict as exc:
            return enterprise_page(request, enterprise_id, 409, form, {"form": str(exc)})
        return redirect(f"/console/enterprises/{quote(enterprise_id, safe='')}?done=added")

    @router.post("/enterprises/{enterprise_id}/revoke")
    @page
    def revoke_quota(request: Request, enterprise_id: str, csrf: Annotated[str, Form()] = "",
                     allocation_id: Annotated[str, Form()] = "") -> Response:
        manages(require(request), enterprise_id)
        if not token_ok(_key(request), csrf):
            return refused(request)
        if engine.allocation(allocation_id).enterprise_id != enterprise_id:
            raise _Hidden
        try:
            engine.revoke_allocation(allocation_id, clock())
        except Conflict as exc:
            return enterprise_page(request, enterprise_id, 409, errors={"revoke": str(exc)})
        return redirect(f"/console/enterprises/{quote(enterprise_id, safe='')}?done=revoked")

    def _key(request: Request) -> str:
        key = session_key(request)
        assert key is not None  # require() passed
        return key

    # -- files, and everything else -------------------------------------------------------------

    @router.get("/static/{name}")
    def static_file(name: str) -> Response:
        body = static.get(name)
        if body is None:
            return Response("not found\n", 404, media_type="text/plain")
        return Response(body, media_type=STATIC_TYPES[name.rsplit(".", 1)[-1]],
                        headers={"Cache-Control": "public, max-age=86400",
                                 "X-Content-Type-Options": "nosniff"})

    @router.api_route("/{rest:path}", methods=["GET", "HEAD", "POST"])
    @page
    def elsewhere(request: Request, rest: str) -> Response:
        require(request)
        if rest == "":
            return redirect("/console")
        raise _Hidden

    return router
