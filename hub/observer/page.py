"""The observer's page: `/observer/` (behind the admin token) and its script and style.

The page holds no data: it joins `$observer` over `/observer/ws` and draws
each snapshot pushed to it. Its script and style (`/observer/static/`) are
served to anyone, as the hub's other static files are; the page itself asks
for the token, so that a refusal is plain from the first request.
"""

from __future__ import annotations

import http
import importlib.resources
import urllib.parse
from typing import Final

from hub.admin import AdminGuard
from hub.http import HttpRequest, HttpResponse, HttpRoute, static_files

__all__ = ["OBSERVER_PAGE_PATH", "observer_routes"]

OBSERVER_PAGE_PATH: Final = "/observer/"


def observer_routes(guard: AdminGuard) -> list[HttpRoute]:
    """The HTTP routes of the observer: the page, a redirect to it, its assets."""
    files = importlib.resources.files("hub.observer")
    body = (files / "page.html").read_bytes()

    async def page(request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            body=body,
            content_type="text/html; charset=utf-8",
            headers=(
                ("cache-control", "no-store"),
                ("x-content-type-options", "nosniff"),
                # The token may be in this page's URL: send it to no other site.
                ("referrer-policy", "no-referrer"),
            ),
        )

    async def redirect(request: HttpRequest) -> HttpResponse:
        query = urllib.parse.urlencode(dict(request.query))
        location = OBSERVER_PAGE_PATH + (f"?{query}" if query else "")
        return HttpResponse(
            status=http.HTTPStatus.PERMANENT_REDIRECT,
            content_type=None,
            headers=(("location", location),),
        )

    return [
        HttpRoute(OBSERVER_PAGE_PATH.rstrip("/"), redirect),
        HttpRoute(OBSERVER_PAGE_PATH, guard.protect(page)),
        static_files(files / "static", prefix=OBSERVER_PAGE_PATH + "static/"),
    ]
