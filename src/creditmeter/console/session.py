"""The console's session: the key in a cookie, and the token that guards its forms.

Signing in puts the key itself in an HTTP-only cookie scoped to ``/console`` (so page scripts
and the API never see it); every request checks it again through the API's own key check, so a
revoked key signs the console out at once (within the API's key cache time).

Forms that change something carry a token: an HMAC-SHA256 of a fixed label keyed by the session
key. Another site can neither read it (same-origin policy) nor compute it (it does not have the
key), and it is the same in every worker process and across restarts, so nothing is stored.
Sign-in itself has no session yet: a sign-in posted from another site (``Sec-Fetch-Site:
cross-site``) is refused, so no one can sign a visitor into their own account.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "creditmeter_console"
PATH = "/console"
MAX_AGE_S = 12 * 3_600
MAX_KEY_LENGTH = 255
_CSRF_LABEL = b"creditmeter console form token v1"


def session_key(request: Request) -> str | None:
    """The key the browser presented, if any (not yet checked)."""
    key = request.cookies.get(COOKIE, "")
    return key if 0 < len(key) <= MAX_KEY_LENGTH else None


def sign_in(response: Response, request: Request, key: str) -> None:
    response.set_cookie(COOKIE, key, max_age=MAX_AGE_S, path=PATH, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


def sign_out(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")


def form_token(key: str) -> str:
    """The token a signed-in page puts in its forms."""
    return hmac.new(key.encode("utf-8", "surrogatepass"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def token_ok(key: str, presented: str) -> bool:
    return hmac.compare_digest(form_token(key).encode(), presented.encode("utf-8", "replace"))


def cross_site(request: Request) -> bool:
    """Whether this request came from another site or another origin (the browser's
    ``Sec-Fetch-Site``, else its ``Origin``)."""
    if request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("origin")
    return origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, else the console's start."""
    parts = urlsplit(target or "")
    path = parts.path
    if (target and not parts.scheme and not parts.netloc
            and (path == PATH or path.startswith(PATH + "/")) and "//" not in path
            and not {".", ".."} & set(unquote(path).split("/"))
            and "\\" not in target and all(c.isprintable() for c in target)):
        return target
    return PATH


def sign_in_url(request: Request) -> str:
    """The sign-in page, asked to come back to the page that was requested."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or here == PATH:
        return f"{PATH}/sign-in"
    return f"{PATH}/sign-in?next={quote(here, safe='')}"
