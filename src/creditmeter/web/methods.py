"""The methods a path answers to, for the ``Allow`` header of a 405.

Several routes may share a path, one per method (``GET /api/accounts`` and ``POST /api/accounts``);
the router answers 405 with the methods of the first route whose path matched. The header lists
every method some route takes at the path instead.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str | None:
    """Every method some route of the app takes at this request's path; None when none does."""
    routes = request.app.router.routes
    allowed = [method for method in METHODS
               if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                      for route in routes)]
    return ", ".join(allowed) or None
