"""The operator's views of a running hub (/metrics, the observer): one token guards them all.

With `admin.token` set, each of them asks for it: as `Authorization: Bearer
TOKEN` (Prometheus' `authorization` setting, `hub top`), or as `?token=TOKEN`
in the URL (a browser opening the observer, whose WebSocket cannot send
headers). Without a token they are open to whoever reaches the port, as
/metrics always was: bind to loopback, or keep the port behind a firewall
or a proxy that checks who asks.
"""

from __future__ import annotations

import hmac
import http
from collections.abc import Mapping
from typing import Final

import attrs

from hub.gateway import AuthenticationError, ConnectRequest
from hub.http import HttpHandler, HttpRequest, HttpResponse

__all__ = ["ADMIN_CHALLENGE", "AdminGuard"]

#: The WWW-Authenticate challenge of a refusal (RFC 6750 §3).
ADMIN_CHALLENGE: Final = 'Bearer realm="triohub admin"'

_REFUSAL: Final = (
    "this needs the hub's admin token (admin.token): send it as "
    "'Authorization: Bearer TOKEN', or add ?token=TOKEN to the URL"
)


@attrs.frozen
class AdminGuard:
    """Lets a request through if it carries `token`, or if there is no token to ask for."""

    token: str | None = attrs.field(default=None, repr=False)

    def allows(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether the request's Authorization header or `token` parameter is the token."""
        if self.token is None:
            return True
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        given = credentials.strip() if scheme.lower() == "bearer" else query.get("token")
        # Compared in constant time: how long a refusal takes says nothing of the token.
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def protect(self, handler: HttpHandler) -> HttpHandler:
        """`handler`, answering 401 (with a Bearer challenge) to a request without the token."""
        if self.token is None:
            return handler

        async def guarded(request: HttpRequest) -> HttpResponse:
            if self.allows(request.headers, request.query):
                return await handler(request)
            return HttpResponse.text(
                _REFUSAL + "\n",
                status=http.HTTPStatus.UNAUTHORIZED,
                headers=(("www-authenticate", ADMIN_CHALLENGE),),
            )

        return guarded

    def check(self, request: ConnectRequest) -> None:
        """Refuse a WebSocket connect request without the token (401, as `authenticate` does)."""
        if not self.allows(request.headers, request.query):
            raise AuthenticationError(_REFUSAL, challenge=ADMIN_CHALLENGE)
