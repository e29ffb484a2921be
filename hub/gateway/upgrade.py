"""The WebSocket upgrade: origin, handshake and subprotocol checks, authentication, the 101."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping

import attrs
import trio

from hub.errors import HubError
from hub.gateway.events import (
    GatewayEvent,
    RefusalLog,
    RejectReason,
    RouteObserver,
    WebSocketAccepted,
    reason_for_status,
    reject,
)
from hub.gateway.websocket import ConnectInfo, WebSocketRoute
from hub.http import HttpConnection, HttpError, HttpRequest, RemoteAddress
from hub.transport import (
    TransportClosed,
    WebSocketSettings,
    WebSocketTransport,
    accept_headers,
    valid_key,
)

__all__ = [
    "Authenticate",
    "AuthenticationError",
    "ConnectRequest",
    "GatewayError",
    "Upgrader",
    "asks_for_websocket",
    "choose_subprotocol",
]


class GatewayError(HubError):
    """Base of the gateway's errors."""


class AuthenticationError(GatewayError):
    """Raised by an `authenticate` hook to refuse a connection with 401.

    `reason` is sent to the client as the response body; `challenge` goes in
    the WWW-Authenticate header (RFC 9110 §11.6.1).
    """

    def __init__(self, reason: str, *, challenge: str = "Bearer") -> None:
        super().__init__(reason)
        self.reason = reason
        self.challenge = challenge


@attrs.frozen
class ConnectRequest:
    """What `authenticate` sees of a WebSocket connect request.

    `query` keeps the first value of each parameter; `headers` has
    lower-case names.
    """

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    remote: RemoteAddress | None

    def accepted(self, subprotocol: str | None, identity: object) -> ConnectInfo:
        """What the handler of this request, once accepted, learns of its connection."""
        return ConnectInfo(self.path, self.query, self.headers, self.remote, subprotocol, identity)


# Called with the connect request; returns the identity, or an awaitable of
# it, or raises AuthenticationError.
Authenticate = Callable[[ConnectRequest], object]


@attrs.frozen(eq=False)
class Upgrader:
    """Checks and answers upgrade requests, one gateway's worth, shared by its connections.

    `origins`: allowed Origin headers, None (or `"*"` among them) for any; a
    request without an Origin is not from a browser and passes. `settings`
    and each route's observer are shared by every WebSocket the gateway opens.
    """

    origins: frozenset[str] | None
    authenticate: Authenticate | None
    auth_timeout: float
    settings: WebSocketSettings
    observe: Callable[[GatewayEvent], None]
    observers: Mapping[str, RouteObserver]
    log: RefusalLog | None = None

    async def upgrade(
        self, connection: HttpConnection, request: HttpRequest, route: WebSocketRoute
    ) -> tuple[WebSocketTransport, ConnectInfo] | None:
        """Check and answer an upgrade request; return the open transport, or None if refused."""
        remote = request.remote
        origin = request.headers.get("origin")
        if not self._origin_allowed(origin):
            await self._reject(
                connection, route, remote, RejectReason.ORIGIN, 403, f"origin not allowed: {origin}"
            )
            return None
        problem = _handshake_problem(request)
        if problem is not None:
            status, message, headers = problem
            await self._reject(
                connection, route, remote, RejectReason.BAD_REQUEST, status, message, headers
            )
            return None
        subprotocol = choose_subprotocol(
            route.subprotocols, request.headers.get("sec-websocket-protocol")
        )
        if route.subprotocols and subprotocol is None:
            await self._reject(
                connection,
                route,
                remote,
                RejectReason.SUBPROTOCOL,
                400,
                "unsupported subprotocol; supported: " + ", ".join(route.subprotocols),
            )
            return None
        connect_request = ConnectRequest(
            path=request.path, query=request.query, headers=request.headers, remote=request.remote
        )
        try:
            identity = await self._authenticate(connect_request)
        except AuthenticationError as err:
            await self._reject(
                connection,
                route,
                remote,
                RejectReason.AUTH,
                401,
                err.reason,
                (("www-authenticate", err.challenge),),
            )
            return None
        except trio.TooSlowError:
            await self._reject(
                connection, route, remote, RejectReason.AUTH, 503, "authentication timed out"
            )
            return None
        key = request.headers["sec-websocket-key"]
        try:
            response, trailing = connection.accept_upgrade(accept_headers(key, subprotocol))
        except HttpError as err:
            await self._reject(
                connection, route, remote, reason_for_status(err.status), err.status, err.message
            )
            return None
        transport = WebSocketTransport(
            connection.stream,
            self.settings,
            subprotocol=subprotocol,
            trailing=trailing,
            observer=self.observers[route.path],
        )
        # The 101 goes out as the transport's first bytes: written at once,
        # unless the socket is full (or TLS), and then flushed here.
        transport.send_raw(response)
        if transport.backlog:
            # Bounded: a client that never reads would hold this task for ever.
            with (
                trio.move_on_after(self.settings.close_timeout) as waited,
                contextlib.suppress(TransportClosed),
            ):
                await transport.flush()
            if waited.cancelled_caught or transport.backlog:
                await transport.aclose()
                return None
        self.observe(WebSocketAccepted(route.path, subprotocol))
        return transport, connect_request.accepted(subprotocol, identity)

    async def identify(self, request: ConnectRequest) -> object:
        """Authenticate a connect request as the upgrade does (long-polling opens use this).

        Returns the identity; raises AuthenticationError (401) or
        trio.TooSlowError (503) as `authenticate` and `auth_timeout` decide.
        """
        return await self._authenticate(request)

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a request with this Origin header may connect (see `origins`)."""
        return self._origin_allowed(origin)

    async def _authenticate(self, request: ConnectRequest) -> object:
        if self.authenticate is None:
            return None
        with trio.fail_after(self.auth_timeout):
            identity = self.authenticate(request)
            if inspect.isawaitable(identity):
                identity = await identity
        return identity

    def _origin_allowed(self, origin: str | None) -> bool:
        origins = self.origins
        return origins is None or origin is None or "*" in origins or origin in origins

    async def _reject(
        self,
        connection: HttpConnection,
        route: WebSocketRoute,
        remote: RemoteAddress | None,
        reason: RejectReason,
        status: int,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        await reject(
            connection,
            self.observe,
            route.path,
            reason,
            status,
            message,
            headers,
            log=self.log,
            remote=remote,
        )


def asks_for_websocket(request: HttpRequest) -> bool:
    """Whether `request` asks to be upgraded to a WebSocket (it may still be refused)."""
    return "websocket" in (token.lower() for token in _tokens(request.headers.get("upgrade")))


def _tokens(header: str | None) -> list[str]:
    return [token.strip() for token in (header or "").split(",") if token.strip()]


def _handshake_problem(
    request: HttpRequest,
) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
    """Check an upgrade request (RFC 6455 §4.2.1), so the client gets a clear answer."""
    headers = request.headers
    if request.method != "GET":
        return 400, "a WebSocket handshake must be a GET request", ()
    if request.http_version != "1.1":
        return 400, "a WebSocket handshake needs HTTP/1.1", ()
    if "upgrade" not in (token.lower() for token in _tokens(headers.get("connection"))):
        return 400, "missing 'Connection: Upgrade'", ()
    if headers.get("upgrade", "").lower() != "websocket":
        return 400, "'Upgrade' must be exactly 'websocket'", ()
    if headers.get("sec-websocket-version") != "13":
        return 426, "WebSocket version 13 required", (("sec-websocket-version", "13"),)
    if not headers.get("sec-websocket-key"):
        return 400, "missing 'Sec-WebSocket-Key'", ()
    if not valid_key(headers["sec-websocket-key"]):
        return 400, "'Sec-WebSocket-Key' must be 16 bytes in base64", ()
    try:
        headers["host"].encode("latin-1").decode("idna")
    except KeyError:
        return 400, "missing 'Host'", ()
    except UnicodeError:
        return 400, "malformed 'Host'", ()
    return None


def choose_subprotocol(supported: tuple[str, ...], offered: str | None) -> str | None:
    """The first of `supported` among `offered` (a comma-separated list), or None."""
    names = set(_tokens(offered))
    return next((name for name in supported if name in names), None)
