"""The console's own files (its stylesheet and icon), read from the package once per console and
served with a long cache time: their URLs carry a hash of their content, so a new version is a
new URL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter.console.deps import Pages
from creditmeter.console.session import PATH

STATIC_TYPES = {"css": "text/css; charset=utf-8", "svg": "image/svg+xml"}

router = APIRouter(prefix=PATH)  # the full path on each route: metrics label requests by it


def load() -> dict[str, bytes]:
    """The package's static files of the types the console serves, by name."""
    return {entry.name: entry.read_bytes() for entry in files("creditmeter.console").joinpath("static")
            .iterdir() if entry.name.rsplit(".", 1)[-1] in STATIC_TYPES}


def url_for(static: Mapping[str, bytes]) -> Callable[[str], str]:
    """A file's URL, versioned by its content."""
    versions = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in static.items()}
    return lambda name: f"/console/static/{name}?v={versions[name]}"


@router.get("/static/{name}")
def static_file(console: Pages, name: str) -> Response:
    body = console.static.get(name)
    if body is None:
        return Response("not found\n", 404, media_type="text/plain")
    return Response(body, media_type=STATIC_TYPES[name.rsplit(".", 1)[-1]],
                    headers={"Cache-Control": "public, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})
