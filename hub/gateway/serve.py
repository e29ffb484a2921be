"""The running gateway: its listeners, the accept loop, and the handle that winds it down."""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs
import trio

from hub.gateway.config import GatewayConfig, server_ssl_context
from hub.gateway.events import GatewayEvent, RefusalLog, RouteObserver
from hub.gateway.limits import AddressLimits, networks
from hub.gateway.longpoll import LongPollGateway, LongPollRoute
from hub.gateway.server import ConnectionServer
from hub.gateway.upgrade import Authenticate, Upgrader
from hub.gateway.websocket import WebSocketRoute
from hub.http import HttpRoute
from hub.transport import WebSocketSettings
from hub.transport.longpoll import LongPollSettings

__all__ = ["GatewayHandle", "connection_server", "serve_gateway"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class GatewayHandle:
    """A running gateway: where it listens and how to wind it down.

    `stop_accepting()` closes the listening sockets: new connections are
    refused while every open connection and handler carries on. The hub then
    closes its clients (with 1001, in batches, letting mailboxes drain) and
    `wait_drained()` tells it when the last connection is gone. Cancelling
    the task running `serve_gateway` ends everything still open: each
    handler is cancelled and its WebSocket closed with 1001 within
    `close_timeout`.
    """

    addresses: tuple[tuple[str, int], ...]
    tls: bool
    # Told when accepting stops, so idle keep-alive connections close.
    _on_stop: Callable[[], None]
    # Why the server takes no connection now (max_connections), or None.
    _capacity: Callable[[], str | None] = attrs.field(default=lambda: None)
    # Why accepting failed last (out of files, say), and when; None once it works again.
    _accept_error: str | None = attrs.field(init=False, default=None)
    _accept_failed_at: float = attrs.field(init=False, default=-math.inf)
    _accept_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _listeners_closed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _drained: trio.Event = attrs.field(init=False, factory=trio.Event)
    _connections: int = attrs.field(init=False, default=0)

    @property
    def port(self) -> int:
        """The port of the first listening address."""
        return self.addresses[0][1]

    @property
    def accepting(self) -> bool:
        return not self._listeners_closed.is_set()

    @property
    def full(self) -> str | None:
        """Why no new connection can be taken now (for /healthz), or None.

        Out of a resource at accept (the open-file limit, say): until an
        accept works, or for ACCEPT_FULL_SECONDS after the last failure (the
        loop tries again every ACCEPT_RETRY_SECONDS while connections wait).
        Or `max_connections` open.
        """
        failing = trio.current_time() - self._accept_failed_at < ACCEPT_FULL_SECONDS
        return (self._accept_error if failing else None) or self._capacity()

    @property
    def connection_count(self) -> int:
        """Open TCP connections, HTTP and WebSocket alike, and long-polling sessions."""
        return self._connections

    def _spawner(self, nursery: trio.Nursery) -> Callable[[Callable[[], Awaitable[None]]], None]:
        """Run tasks in `nursery` counted as connections (long-polling sessions): draining waits."""

        async def run_counted(run: Callable[[], Awaitable[None]]) -> None:
            try:
                await run()
            finally:
                self._connections -= 1
                self._check_drained()

        def spawn(run: Callable[[], Awaitable[None]]) -> None:
            self._connections += 1
            nursery.start_soon(run_counted, run)

        return spawn

    async def stop_accepting(self) -> None:
        """Close the listening sockets; return once they are closed.

        HTTP connections waiting idle for another request are closed too, and
        a response in progress is sent with `Connection: close`; WebSocket
        handlers are left alone.
        """
        self._on_stop()
        self._accept_scope.cancel()
        await self._listeners_closed.wait()

    async def wait_drained(self) -> None:
        """Wait until accepting has stopped and no connection is left."""
        await self._drained.wait()

    async def _accept(
        self,
        listeners: list[trio.SocketListener],
        serve_connection: Callable[[trio.SocketStream], Awaitable[None]],
        connection_nursery: trio.Nursery,
    ) -> None:
        async def serve_counted(stream: trio.SocketStream) -> None:
            self._connections += 1
            try:
                await serve_connection(stream)
            finally:
                self._connections -= 1
                self._check_drained()

        try:
            with self._accept_scope:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(
                            _accept_from, listener, serve_counted, connection_nursery, self
                        )
        finally:
            self._listeners_closed.set()
            self._check_drained()

    def _check_drained(self) -> None:
        if self._listeners_closed.is_set() and self._connections == 0:
            self._drained.set()


# accept() errors that mean "out of a resource for now" (the process's or the
# system's file limit, memory), not "the listener is broken": the loop waits
# and tries again, and the connections already open carry on.
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

# How long the accept loop waits after running out of a resource, and how
# often it says so in the log (one line, however many accepts failed).
ACCEPT_RETRY_SECONDS: Final = 0.1
ACCEPT_LOG_INTERVAL_SECONDS: Final = 10.0
# How long after a failed accept the gateway still says it is full.
ACCEPT_FULL_SECONDS: Final = 1.0


async def _accept_from(
    listener: trio.SocketListener,
    serve: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    handle: GatewayHandle,
) -> None:
    """Accept connections from `listener` until cancelled, each served in `nursery`.

    `serve` owns the stream it is given and always closes it. Closes the
    listener when it returns.
    """
    refused = 0
    logged_at = -math.inf
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in _RESOURCE_ERRNOS:
                    raise
                refused += 1
                now = trio.current_time()
                handle._accept_error = f"cannot accept connections: {os.strerror(error.errno or 0)}"
                handle._accept_failed_at = now
                if now - logged_at >= ACCEPT_LOG_INTERVAL_SECONDS:
                    logger.warning(
                        "cannot accept connections: %s (%d refused in the last %.0f s); "
                        "raise the open-file limit (ulimit -n) or serve fewer clients",
                        os.strerror(error.errno or 0),
                        refused,
                        ACCEPT_LOG_INTERVAL_SECONDS,
                    )
                    logged_at, refused = now, 0
                await trio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            handle._accept_error = None
            nursery.start_soon(serve, stream)


async def serve_gateway(
    config: GatewayConfig,
    *,
    websocket_routes: Sequence[WebSocketRoute] = (),
    http_routes: Sequence[HttpRoute] = (),
    longpoll_routes: Sequence[LongPollRoute] = (),
    authenticate: Authenticate | None = None,
    observe: Callable[[GatewayEvent], None] | None = None,
    task_status: trio.TaskStatus[GatewayHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on `config.host`:`config.port` and serve until cancelled.

    Reports a `GatewayHandle` through `task_status` once listening. Every
    connection runs in this task's nursery, so when this returns (only by
    cancellation or error) no connection is left. `authenticate` (sync or
    async) gets a `ConnectRequest` for every WebSocket connect request that
    passed the origin and subprotocol checks, and for every long-polling
    session opened at one of `longpoll_routes` (`hub.gateway.longpoll`);
    `observe` is called with a `GatewayEvent` for metrics.

    Raises OSError if the port cannot be bound, ssl.SSLError or OSError if
    the certificate cannot be loaded, ValueError for clashing routes.
    """
    server, longpoll = connection_server(
        config,
        websocket_routes=websocket_routes,
        http_routes=http_routes,
        longpoll_routes=longpoll_routes,
        authenticate=authenticate,
        observe=observe or _ignore_event,
    )
    if config.reuse_port:
        listeners = await _open_shared_listeners(config.port, config.host)
    else:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    addresses = tuple(
        (str(address[0]), int(address[1]))
        for address in (listener.socket.getsockname() for listener in listeners)
    )
    handle = GatewayHandle(
        addresses=addresses,
        tls=server.ssl_context is not None,
        on_stop=server.drain,
        capacity=lambda: server.full,
    )
    async with trio.open_nursery() as nursery:
        longpoll.spawn = handle._spawner(nursery)
        nursery.start_soon(handle._accept, listeners, server.serve_connection, nursery)
        task_status.started(handle)
        await trio.sleep_forever()


# Connections the kernel queues for accept(), as trio's own listeners ask.
_BACKLOG: Final = 0xFFFF


async def _open_shared_listeners(port: int, host: str | None) -> list[trio.SocketListener]:
    """Listeners on `host`:`port` that other processes may listen on too (SO_REUSEPORT).

    Each worker of `hub serve --workers` opens its own; the kernel hands each
    new connection to one of them. Raises OSError as `open_tcp_listeners` does.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this system has no SO_REUSEPORT: run one worker per port")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, protocol, _name, address in addresses:
            sock = trio.socket.socket(family, kind, protocol)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(_BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def connection_server(
    config: GatewayConfig,
    *,
    websocket_routes: Sequence[WebSocketRoute],
    http_routes: Sequence[HttpRoute],
    longpoll_routes: Sequence[LongPollRoute] = (),
    authenticate: Authenticate | None,
    observe: Callable[[GatewayEvent], None],
) -> tuple[ConnectionServer, LongPollGateway]:
    """Build what serves each accepted connection: the HTTP, WebSocket and long-polling routes.

    Returns the per-connection server and the long-polling gateway, whose
    `spawn` the caller sets before serving. `serve_gateway` serves every
    connection it accepts with them; the fuzz harness
    (fuzz/targets/http_request.py) serves its inputs with them too.
    Raises ValueError for clashing routes, ssl.SSLError or OSError if the
    certificate cannot be loaded.
    """
    routes = _index_routes(websocket_routes)
    log = RefusalLog()
    upgrader = Upgrader(
        origins=config.origins,
        authenticate=authenticate,
        auth_timeout=config.auth_timeout,
        # Shared by every WebSocket: their limits, and per route who hears of closes.
        settings=WebSocketSettings(
            max_message_size=config.max_message_size,
            ping_interval=config.ping_interval,
            idle_timeout=config.idle_timeout,
            close_timeout=config.close_timeout,
            outbox_capacity=config.outbox_capacity,
            max_fragments=config.max_fragments,
            message_timeout=config.message_timeout,
        ),
        observe=observe,
        observers={path: RouteObserver(path, observe) for path in routes},
        log=log,
    )
    longpoll = LongPollGateway(
        routes=tuple(longpoll_routes),
        upgrader=upgrader,
        settings=LongPollSettings(
            max_message_size=config.max_message_size,
            poll_timeout=config.poll_timeout,
            reap_timeout=config.reap_timeout,
            close_timeout=config.close_timeout,
            outbox_capacity=config.outbox_capacity,
        ),
        max_sessions=config.max_longpoll_sessions,
        observe=observe,
    )
    server = ConnectionServer(
        config=config,
        websocket_routes=routes,
        http_routes=_check_http_routes([*longpoll.http_routes(), *http_routes]),
        upgrader=upgrader,
        observe=observe,
        ssl_context=(
            server_ssl_context(config.certfile, config.keyfile) if config.certfile else None
        ),
        log=log,
        addresses=config.client_addresses,
        limits=AddressLimits(
            config.max_connections_per_address,
            config.handshakes_per_second,
            networks(config.unlimited_addresses, "unlimited address"),
        ),
    )
    return server, longpoll


def _ignore_event(_event: GatewayEvent) -> None:
    # No observer given: the events are for metrics only.
    return


def _check_http_routes(routes: Sequence[HttpRoute]) -> tuple[HttpRoute, ...]:
    seen: set[tuple[str, bool]] = set()
    for route in routes:
        if (route.path, route.prefix) in seen:
            raise ValueError(f"two HTTP routes for {route.path!r}")
        seen.add((route.path, route.prefix))
    return tuple(routes)


def _index_routes(routes: Sequence[WebSocketRoute]) -> Mapping[str, WebSocketRoute]:
    by_path: dict[str, WebSocketRoute] = {}
    for route in routes:
        if route.path in by_path:
            raise ValueError(f"two WebSocket routes for {route.path!r}")
        by_path[route.path] = route
    return MappingProxyType(by_path)
