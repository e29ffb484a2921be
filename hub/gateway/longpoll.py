"""Long-polling routes: the hub protocol for clients that cannot open a WebSocket.

Mounted at a path (say `/poll`) on the gateway's port, as plain HTTP routes:

    POST   /poll            open a session (body: the subprotocols offered)
    GET    /poll/<id>?ack=n poll: held until messages wait or poll_timeout passes
    POST   /poll/<id>       send messages (body: messages in the session's format)
    DELETE /poll/<id>       end the session (as a WebSocket client's Close)

Opening is checked as a WebSocket upgrade is, by the same `Upgrader`: the
origin allow-list and the same `authenticate` hook (it sees the path, query,
headers and address of the opening POST). The route's handler then runs
with a `LongPollTransport` (`hub.transport.longpoll`) in a task of the
gateway's own, for the session's life, exactly as it runs with a WebSocket.

**The session id** is 32 random bytes (`secrets.token_urlsafe`), a bearer
credential for one session: whoever holds it may poll the session's
messages and send as it, until the session ends, and nothing more. It is
bound to the Origin the session was opened from (a request for it from
another origin is refused with 403), not to the client's address, which
changes under clients behind NAT pools, mobile networks and proxies. It is
never logged by the hub; serve the hub over TLS so it cannot be read on the
way, as one would for the token that opened it.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import trio

from hub.gateway.events import GatewayEvent, RejectReason, RequestRejected, WebSocketAccepted
from hub.gateway.upgrade import AuthenticationError, ConnectRequest, Upgrader, choose_subprotocol
from hub.gateway.websocket import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, ConnectInfo
from hub.http import HttpRequest, HttpResponse, HttpRoute
from hub.transport import Transport, TransportClosed
from hub.transport.longpoll import (
    LongPollBodyError,
    LongPollSettings,
    LongPollTransport,
    PollAnswer,
    PollError,
    decode_body,
)

__all__ = ["LongPollGateway", "LongPollRoute", "TransportHandler"]

logger = logging.getLogger(__name__)

# Bytes of randomness in a session id (43 characters of base64url).
SESSION_ID_BYTES: Final = 32

# The response headers of a poll: messages sent so far, and the Close.
SEQ_HEADER: Final = "triohub-seq"
CLOSE_CODE_HEADER: Final = "triohub-close-code"
CLOSE_REASON_HEADER: Final = "triohub-close-reason"

_NO_STORE: Final = ("cache-control", "no-store")

TransportHandler = Callable[[Transport, ConnectInfo], Awaitable[None]]


@attrs.frozen
class LongPollRoute:
    """Serve long-polling sessions at `path` (and below it) with `handler`.

    `subprotocols` are the codecs offered, preferred first, as for a
    `WebSocketRoute`. The handler gets the transport and its `ConnectInfo`,
    as a WebSocket route's handler does, and the session ends when it returns.
    """

    path: str
    handler: TransportHandler
    subprotocols: tuple[str, ...]


@attrs.define(eq=False)
class _Open:
    """A session that is open: its transport, and who may use it."""

    transport: LongPollTransport
    route: LongPollRoute


@attrs.define(eq=False)
class LongPollGateway:
    """The long-polling sessions of one gateway, and the HTTP routes that serve them.

    `spawn(handler_coroutine_function)` runs a session's handler in the
    gateway's nursery, counted among its connections (so draining waits for
    it); it is set by `serve_gateway` once its nursery is open.
    """

    routes: tuple[LongPollRoute, ...]
    upgrader: Upgrader
    settings: LongPollSettings
    max_sessions: int
    observe: Callable[[GatewayEvent], None]
    spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None
    _sessions: dict[str, _Open] = attrs.field(init=False, factory=dict)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def http_routes(self) -> list[HttpRoute]:
        """The HTTP routes of every long-polling path: open, and use a session."""
        # A POST holds messages of at most max_message_size each; a body up to
        # twice that is read, so that one over the limit is answered with the
        # session's close (1009), as a WebSocket would, rather than a bare 413.
        body_limit = 2 * self.settings.max_message_size + 64 * 1024
        routes: list[HttpRoute] = []
        for route in self.routes:
            routes.append(
                HttpRoute(
                    route.path,
                    functools.partial(self._open, route),
                    methods=frozenset({"POST"}),
                    max_body_size=64 * 1024,
                )
            )
            routes.append(
                HttpRoute(
                    route.path.rstrip("/") + "/",
                    functools.partial(self._use, route),
                    methods=frozenset({"GET", "POST", "DELETE"}),
                    prefix=True,
                    max_body_size=body_limit,
                )
            )
        return routes

    # --- opening ---------------------------------------------------------------

    async def _open(self, route: LongPollRoute, request: HttpRequest) -> HttpResponse:
        origin = request.headers.get("origin")
        if not self.upgrader.origin_allowed(origin):
            return self._refuse(route, RejectReason.ORIGIN, 403, f"origin not allowed: {origin}")
        offered = request.body.decode("latin-1")
        subprotocol = choose_subprotocol(route.subprotocols, offered)
        if subprotocol is None:
            return self._refuse(
                route,
                RejectReason.SUBPROTOCOL,
                400,
                "the body must name a subprotocol; supported: " + ", ".join(route.subprotocols),
            )
        if len(self._sessions) >= self.max_sessions or self.spawn is None:
            return self._refuse(
                route,
                RejectReason.BAD_REQUEST,
                503,
                "too many long-polling sessions; try again later",
                (("retry-after", "5"),),
            )
        connect_request = ConnectRequest(
            path=request.path, query=request.query, headers=request.headers, remote=request.remote
        )
        try:
            identity = await self.upgrader.identify(connect_request)
        except AuthenticationError as err:
            return self._refuse(
                route, RejectReason.AUTH, 401, err.reason, (("www-authenticate", err.challenge),)
            )
        except trio.TooSlowError:
            return self._refuse(route, RejectReason.AUTH, 503, "authentication timed out")
        transport = LongPollTransport(subprotocol, self.settings, origin=origin)
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        self._sessions[session_id] = _Open(transport, route)
        info = connect_request.accepted(subprotocol, identity)
        self.spawn(functools.partial(self._run, session_id, transport, info, route))
        self.observe(WebSocketAccepted(route.path, subprotocol))
        body = {
            "session": session_id,
            "subprotocol": subprotocol,
            "poll_timeout": self.settings.poll_timeout,
            "max_message_size": self.settings.max_message_size,
        }
        return HttpResponse(
            body=json.dumps(body).encode(), content_type="application/json", headers=(_NO_STORE,)
        )

    async def _run(
        self, session_id: str, transport: LongPollTransport, info: ConnectInfo, route: LongPollRoute
    ) -> None:
        """Run the route's handler for one session; close and forget it whatever happens."""
        handling = route.handler(transport, info)
        del info
        try:
            await handling
        except TransportClosed:
            pass  # the client left, or stopped polling
        except Exception:
            logger.exception("long-polling handler for %s failed", route.path)
            transport.close(CLOSE_INTERNAL_ERROR, "internal error")
        except BaseException:
            # Cancelled: the gateway is shutting down at once.
            transport.close(CLOSE_GOING_AWAY, "server shutting down")
            raise
        finally:
            del self._sessions[session_id]
        await transport.aclose()

    # --- a session's requests ----------------------------------------------------

    async def _use(self, route: LongPollRoute, request: HttpRequest) -> HttpResponse:
        session_id = request.path[len(route.path.rstrip("/")) + 1 :]
        open_ = self._sessions.get(session_id)
        if open_ is None or open_.route is not route:
            return _text(404, "no such session (it ended, or never was); open a new one")
        transport = open_.transport
        origin = request.headers.get("origin")
        if origin is not None and origin != transport.origin:
            return _text(403, f"this session belongs to another origin than {origin}")
        try:
            match request.method:
                case "GET":
                    return self._answer(transport, await transport.poll(_ack(request)))
                case "POST":
                    try:
                        messages = decode_body(
                            request.body,
                            binary=transport.binary,
                            max_message_size=self.settings.max_message_size,
                        )
                    except LongPollBodyError as err:
                        transport.refuse_body(err)
                        status = 413 if err.code == 1009 else 400
                        return _text(status, f"{err.reason}; the session is closed ({err.code})")
                    transport.post(messages)
                    return HttpResponse(status=200, content_type=None, headers=(_NO_STORE,))
                case "DELETE":
                    transport.client_closed()
                    return HttpResponse(status=200, content_type=None, headers=(_NO_STORE,))
                case _:
                    # HEAD, which the routes allow with GET: a poll whose body
                    # would be dropped would lose messages.
                    return _text(405, "use GET, POST or DELETE", (("allow", "GET, POST, DELETE"),))
        except PollError as err:
            return _text(err.status, err.message)

    def _answer(self, transport: LongPollTransport, answer: PollAnswer) -> HttpResponse:
        headers = [_NO_STORE, (SEQ_HEADER, str(answer.seq))]
        if answer.close is not None:
            code, reason = answer.close
            headers.append((CLOSE_CODE_HEADER, str(code)))
            # Percent-encoded UTF-8: header values are Latin-1 at most.
            headers.append((CLOSE_REASON_HEADER, _quote(reason)))
        content_type = (
            "application/octet-stream" if transport.binary else "text/plain; charset=utf-8"
        )
        return HttpResponse(body=answer.body, content_type=content_type, headers=tuple(headers))

    def _refuse(
        self,
        route: LongPollRoute,
        reason: RejectReason,
        status: int,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> HttpResponse:
        self.observe(RequestRejected(reason, status, route.path))
        return _text(status, message, headers)


def _ack(request: HttpRequest) -> int:
    text = request.query.get("ack", "0")
    if not text.isdigit() or len(text) > 16:
        raise PollError(400, f"ack must be a count of messages received, got {text!r}")
    return int(text)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe=" ")


def _text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse.text(message + "\n", status=status, headers=(*headers, _NO_STORE))
