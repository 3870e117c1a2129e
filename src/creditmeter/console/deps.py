"""What every console page shares: the console's context, its session, rendering, redirects, the
access checks, and the turning of the console's own outcomes into pages.

:func:`creditmeter.console.routes.create_console` makes one :class:`Console` and a dependency of
all its routes puts it on the request; a route asks for it with a ``Pages`` parameter. The session
is checked inside the page (``Console.require``), never by a dependency: a database that cannot
answer while the key is checked must still give the console's 503 page, which only ``page`` gives.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from creditmeter.console import display
from creditmeter.console.chart import px, segment_title
from creditmeter.console.session import form_token, session_key, sign_in_url, sign_out
from creditmeter.engine import Engine
from creditmeter.errors import InputError, NotFound, SchemaError, Unavailable
from creditmeter.keys import Principal
from creditmeter.money import format_credits

log = logging.getLogger("creditmeter.console")
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    token: str  # the form token (never the key itself)


class SignIn(Exception):
    """No valid session: send the visitor to sign in."""


class Hidden(Exception):
    """Not there, or not this key's to see: the 404 page."""


def templates(static_url: Callable[[str], str]) -> Environment:
    """The pages' templates, with the formatting they use (``static_url``: a file's versioned URL)."""
    env = Environment(loader=PackageLoader("creditmeter.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(credits=display.credits, exact=format_credits, rounded=display.rounded_credits,
                       credits_text=display.credits_text, when=display.when, day=display.day,
                       span=display.span, iso_day=display.iso_day, iso_when=display.iso_when,
                       count=display.count, px=px, segment_title=segment_title,
                       quote=lambda text: quote(text, safe=""), static=static_url)
    return env


# eq=False: hashed by identity, since FastAPI hashes the bound ``attach`` it depends on (and a
# mapping field could not be hashed).
@dataclass(frozen=True, slots=True, eq=False)
class Console:
    """One console: the engine and clock its pages read, the key check, its templates and files."""

    engine: Engine
    clock: Callable[[], int]
    authenticate: Callable[[str], Principal | None]
    pages: Environment
    static: Mapping[str, bytes]

    async def attach(self, request: Request) -> None:
        """Put this console on the request (a dependency of all its routes; runs on the loop)."""
        request.state.console = self

    def current(self, request: Request) -> Session | None:
        key = session_key(request)
        principal = self.authenticate(key) if key is not None else None
        if key is None or principal is None:
            return None
        session = Session(principal, form_token(key))
        request.state.console_session = session
        return session

    def require(self, request: Request) -> Session:
        session = self.current(request)
        if session is None:
            raise SignIn
        return session

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "console_session", None)
        body = self.pages.get_template(template).render(session=session, path=request.url.path,
                                                        who=_who(session), **context)
        return HTMLResponse(body, status, PAGE_HEADERS)

    def refused(self, request: Request) -> HTMLResponse:
        return self.render(request, "refused.html", 403)

    def readable(self, session: Session, account_id: str) -> None:
        if not session.principal.can_read(account_id) or self.engine.account(account_id) is None:
            raise Hidden


def console_of(request: Request) -> Console:
    console: Console = request.state.console
    return console


async def _console(request: Request) -> Console:
    return console_of(request)


Pages = Annotated[Console, Depends(_console)]
"""The console a route belongs to (async: read on the loop, so it costs no thread)."""


def _who(session: Session | None) -> str:
    if session is None:
        return ""
    return "operator" if session.principal.is_operator else str(session.principal.account_id)


def redirect(url: str) -> Response:
    return RedirectResponse(url, 303, {"Cache-Control": "no-store"})


def manages(session: Session, enterprise_id: str) -> None:
    if not session.principal.can_manage(enterprise_id):
        raise Hidden


def page(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Turn the console's own outcomes into pages: sign in (303), not found (404), and a
    database that cannot answer now (503)."""

    @functools.wraps(fn)
    def run(request: Request, **kwargs: Any) -> Response:
        try:
            return fn(request, **kwargs)
        except SignIn:
            response = redirect(sign_in_url(request))
            if session_key(request) is not None:  # a key that no longer works
                sign_out(response, request)
            return response
        except (Hidden, NotFound, InputError):  # a malformed id in the path is not found too
            return console_of(request).render(request, "not_found.html", 404)
        except (Unavailable, SchemaError) as exc:  # the details go to the log only
            log.warning("console: %s: %s", exc.kind, exc)
            return console_of(request).render(request, "unavailable.html", 503)

    return run
