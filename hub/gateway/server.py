"""One accepted connection: TLS, HTTP/1.1 requests kept alive, and the hand-off to a WebSocket.

Every request head is read with h11 (bounded in size and time). A WebSocket
upgrade for a path in the gateway's WebSocket routes goes to the `Upgrader`
and, accepted, its handler runs once the HTTP state is let go; any other
request is answered by the HTTP routes (see `hub.http`).
"""

from __future__ import annotations

import http
import logging
import ssl
from collections.abc import Callable, Mapping

import attrs
import h11
import trio

from hub.gateway.config import GatewayConfig
from hub.gateway.events import GatewayEvent, reason_for_status, reject
from hub.gateway.upgrade import Upgrader, asks_for_websocket
from hub.gateway.websocket import ConnectInfo, WebSocketRoute, run_handler
from hub.http import (
    HttpConnection,
    HttpError,
    HttpRequest,
    HttpResponse,
    HttpRoute,
    RemoteAddress,
    close_lingering,
    match_route,
    parse_request,
    route_request,
)
from hub.transport import WebSocketTransport

__all__ = ["ConnectionServer"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class ConnectionServer:
    """Serves one connection per `serve_connection` call: the per-connection half of the gateway."""

    config: GatewayConfig
    websocket_routes: Mapping[str, WebSocketRoute]
    http_routes: tuple[HttpRoute, ...]
    upgrader: Upgrader
    observe: Callable[[GatewayEvent], None]
    ssl_context: ssl.SSLContext | None
    # Set by drain(): accepting has stopped, keep-alive connections wind down.
    _draining: bool = attrs.field(init=False, default=False)
    # Connections waiting for a further request on a kept-alive connection.
    _idle_scopes: set[trio.CancelScope] = attrs.field(init=False, factory=set)

    def drain(self) -> None:
        """Close idle keep-alive connections now, and busy ones after their response."""
        self._draining = True
        for scope in self._idle_scopes:
            scope.cancel()

    async def serve_connection(self, tcp_stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection until it closes; always closes it."""
        remote = _remote_address(tcp_stream)
        stream: trio.abc.Stream = tcp_stream
        if self.ssl_context is not None:
            # The TLS handshake happens on the first receive, so it falls
            # under head_timeout like the request head.
            stream = trio.SSLStream(
                tcp_stream, self.ssl_context, server_side=True, https_compatible=True
            )
        try:
            upgraded = await self._serve_requests(
                HttpConnection(stream, max_head_size=self.config.max_head_size), remote
            )
            if upgraded is not None:
                # Run outside the request loop, so that its HTTP state is
                # freed: a WebSocket may stay open for days. The coroutine
                # holds what it needs; this frame lets go of the rest.
                running = run_handler(*upgraded, close_timeout=self.config.close_timeout)
                del upgraded
                await running
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            # The peer left mid-request, or its TLS handshake failed.
            logger.debug("connection from %s ended: %r", remote, err)
        except Exception:
            # One connection's failure must cost nobody else anything: a bug
            # here is logged with its traceback, and the gateway serves on.
            logger.exception("error serving connection from %s", remote)
        finally:
            # Not shielded: at shutdown there is no point lingering, and a
            # cancelled close_lingering closes at once.
            await close_lingering(stream, timeout=self.config.close_timeout)

    async def _serve_requests(
        self, connection: HttpConnection, remote: RemoteAddress | None
    ) -> tuple[WebSocketTransport, ConnectInfo, WebSocketRoute] | None:
        """Serve HTTP requests until the connection ends or upgrades (returned, accepted)."""
        reused = False
        while True:
            try:
                head = await self._next_request(connection, reused=reused)
            except HttpError as err:
                await reject(
                    connection,
                    self.observe,
                    None,
                    reason_for_status(err.status),
                    err.status,
                    err.message,
                )
                return None
            if head is None:
                return None
            request = parse_request(head, remote=remote)
            route = self.websocket_routes.get(request.path)
            if route is not None and asks_for_websocket(request):
                accepted = await self.upgrader.upgrade(connection, request, route)
                if accepted is None:
                    return None
                return accepted[0], accepted[1], route
            if not await self._serve_http(connection, request):
                return None
            reused = True

    async def _next_request(
        self, connection: HttpConnection, *, reused: bool
    ) -> h11.Request | None:
        """Read the next request head; None if the peer closed or the gateway is draining.

        A connection's first request is always read. A kept-alive connection
        waiting for another one is closed when drain() is called; a request
        that was just arriving then is lost, as HTTP allows on an idle
        connection (clients retry it, RFC 9112 §9.3.1).
        """
        if not reused:
            return await connection.next_request(timeout=self.config.head_timeout)
        if self._draining:
            return None
        with trio.CancelScope() as idle_scope:
            self._idle_scopes.add(idle_scope)
            try:
                return await connection.next_request(timeout=self.config.head_timeout)
            finally:
                self._idle_scopes.discard(idle_scope)
        return None

    async def _serve_http(self, connection: HttpConnection, request: HttpRequest) -> bool:
        """Answer one plain HTTP request; return whether the connection may be reused."""
        http_route = match_route(self.http_routes, request.path)
        max_body_size = self.config.max_body_size
        if http_route is not None and http_route.max_body_size is not None:
            max_body_size = http_route.max_body_size
        try:
            body = await connection.read_body(
                max_size=max_body_size, timeout=self.config.head_timeout
            )
        except HttpError as err:
            await reject(
                connection,
                self.observe,
                request.path,
                reason_for_status(err.status),
                err.status,
                err.message,
            )
            return False
        request = attrs.evolve(request, body=body)
        # A WebSocket path answers 426 to plain HTTP unless an exact HTTP
        # route claims it too (a prefix route, such as static files at "/",
        # does not).
        if request.path in self.websocket_routes and (http_route is None or http_route.prefix):
            response = HttpResponse.text(
                "this path speaks WebSocket\n",
                status=http.HTTPStatus.UPGRADE_REQUIRED,
                headers=(("upgrade", "websocket"), ("connection", "upgrade")),
            )
        else:
            try:
                response = await route_request(self.http_routes, request)
            except Exception:
                # A broken route answers 500 and is logged; the connection
                # and the gateway carry on.
                logger.exception("HTTP handler for %s %s failed", request.method, request.path)
                response = HttpResponse.text(
                    "internal server error\n", status=http.HTTPStatus.INTERNAL_SERVER_ERROR
                )
        if self._draining:
            response = attrs.evolve(response, headers=(*response.headers, ("connection", "close")))
        await connection.send_response(response, head_only=request.method == "HEAD")
        return connection.keep_alive


def _remote_address(stream: trio.SocketStream) -> RemoteAddress | None:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return None
    return str(host), int(port)
