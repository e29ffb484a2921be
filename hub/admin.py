"""The operator's views of a running hub (/metrics, the observer): one token guards them all.

With `admin.token` set, each of them asks for it: as `Authorization: Bearer
TOKEN` (Prometheus' `authorization` setting, `hub top`), or as `?token=TOKEN`
in the URL (a browser opening the observer, whose WebSocket cannot send
headers). Without a token they are open to whoever reaches the port, as
/metrics always was: bind to loopback, or keep the port behind a firewall
or a proxy that checks who asks. The endpoints that act on users
(`/admin/notify`, `/admin/users/<id>`) are, without a token, served to
clients on this machine only.
"""

from __future__ import annotations

import hmac
import http
import ipaddress
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import attrs

from hub.errors import InvalidNotificationError
from hub.gateway import AuthenticationError, ConnectRequest
from hub.http import HttpHandler, HttpRequest, HttpResponse, HttpRoute, RemoteAddress

if TYPE_CHECKING:
    from hub.app import HubRuntime

__all__ = ["ADMIN_CHALLENGE", "NOTIFY_PATH", "USERS_PATH", "AdminGuard", "admin_routes"]

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

    def protect_local(self, handler: HttpHandler) -> HttpHandler:
        """`handler` behind the token, or, without one, for clients on this machine only (403)."""
        if self.token is not None:
            return self.protect(handler)

        async def local_only(request: HttpRequest) -> HttpResponse:
            if _is_loopback(request.remote):
                return await handler(request)
            return HttpResponse.text(
                "set the hub's admin token (admin.token) to use this from another machine\n",
                status=http.HTTPStatus.FORBIDDEN,
            )

        return local_only

    def check(self, request: ConnectRequest) -> None:
        """Refuse a WebSocket connect request without the token (401, as `authenticate` does)."""
        if not self.allows(request.headers, request.query):
            raise AuthenticationError(_REFUSAL, challenge=ADMIN_CHALLENGE)


# --- the admin endpoints ----------------------------------------------------------

#: POST a notification: `{"user": id, "event": name, "data": ...}` (`hub notify`).
NOTIFY_PATH: Final = "/admin/notify"
#: GET where a user is connected: /admin/users/<id>.
USERS_PATH: Final = "/admin/users/"


def admin_routes(runtime: HubRuntime, guard: AdminGuard) -> list[HttpRoute]:
    """The admin endpoints that act on users: notify one, see where one is connected.

    Behind the admin token; without one, they serve only clients on this
    machine (loopback), since they change what users see.
    """

    async def notify(request: HttpRequest) -> HttpResponse:
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return _json_error(400, f"the body must be a JSON object: {error}")
        if not isinstance(body, dict) or set(body) - {"user", "event", "data"}:
            return _json_error(
                400, 'the body must be {"user": id, "event": name, "data": any JSON}'
            )
        user, event = body.get("user"), body.get("event")
        if not isinstance(user, str) or not isinstance(event, str):
            return _json_error(400, "'user' and 'event' must be strings")
        try:
            notification = await runtime.notify(user, event, body.get("data"))
        except InvalidNotificationError as error:
            return _json_error(400, str(error))
        except ConnectionError as error:  # the inboxes are in Redis, and it is away
            return _json_error(503, f"the inboxes cannot be reached now: {error}")
        answer = {
            "user": user,
            "offset": notification.offset,
            "epoch": runtime.notifications.inbox.epoch,
            "devices": len(runtime.users.connections_of(user)),
        }
        return _json(200, answer)

    async def where(request: HttpRequest) -> HttpResponse:
        user = request.path.removeprefix(USERS_PATH)
        if not user or "/" in user:
            return _json_error(404, f"ask for {USERS_PATH}<user id>")
        users = runtime.users
        answer = {
            "user": user,
            "online": users.online(user),
            "leaving": users.leaving(user),
            "connections": [where.as_json() for where in users.where(user)],
        }
        return _json(200, answer)

    return [
        HttpRoute(NOTIFY_PATH, guard.protect_local(notify), methods=frozenset({"POST"})),
        HttpRoute(USERS_PATH, guard.protect_local(where), prefix=True),
    ]


def _json(status: int, body: object) -> HttpResponse:
    return HttpResponse(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _json_error(status: int, message: str) -> HttpResponse:
    return _json(status, {"error": message})


def _is_loopback(remote: RemoteAddress | None) -> bool:
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote[0]).is_loopback
    except ValueError:
        return False
