"""The hub: an application's routes, and the running server that serves them.

    app = Hub("chat")
    app.route("room:*", RoomService)

    async with trio.open_nursery() as nursery:
        config = HubConfig(server=ServerConfig(port=0))
        running = await nursery.start(serve_hub, app, config)
        ...
        running.request_shutdown()      # or SIGTERM under `hub serve`

The actor tree of a running hub::

    system (root)
    └── hub (rest_for_one)
        ├── services (one_for_one): the hub's notifier, the application's backend actors
        ├── topics (one_for_one): one temporary actor per live topic
        └── sessions (one_for_one): one temporary actor per client

Beside the tree, the hub knows its users (`runtime.users`, `hub.users`: who
is connected where, who has gone offline) and their notification inboxes
(`runtime.notifications`, `hub.notifications`), and runs the application's
connection hooks (`hub.hooks`).

At info level it logs a line per connection opened and closed and per topic
started and stopped, rate-limited (`hub.logs`). With the observer on
(`Hub(observer=True)` or the `admin.observer` setting) it serves a live view
of itself at /observer/ (`hub.observer`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.resources
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator
from typing import Any, Final, Literal

import attrs
import trio

import actors
from hub.admin import AdminGuard, admin_routes
from hub.backplane import Backplane, LocalBackplane
from hub.cluster import ClusterNode, ClusterSettings
from hub.config import HubConfig
from hub.connections import Connection
from hub.errors import ConnectRefusedError, NoSuchActorError, UnknownTopicError
from hub.gateway import (
    Authenticate,
    ConnectInfo,
    GatewayConfig,
    GatewayHandle,
    LongPollRoute,
    WebSocketRoute,
    serve_echo,
    serve_gateway,
)
from hub.hooks import ConnectHook, DisconnectHook, OfflineHook, run_hook
from hub.http import HttpRequest, HttpResponse, HttpRoute, static_files
from hub.logs import HubLog
from hub.metrics import CONTENT_TYPE, HubMetrics
from hub.notifications import (
    NOTIFIER,
    PERSONAL_PREFIX,
    LocalInbox,
    Notification,
    Notifications,
    Notifier,
)
from hub.observer import (
    OBSERVER_TOPIC,
    OBSERVER_WS_PATH,
    ObserverIdentity,
    ObserverService,
    Snapshotter,
    observer_authenticate,
    observer_routes,
)
from hub.permissions import PERSONAL, Permissions
from hub.presence import (
    ListPresence,
    Presence,
    PresenceSettings,
    PresenceSnapshot,
    SubscribePresence,
    UnsubscribePresence,
)
from hub.protocol import SUBPROTOCOLS, CloseCode, Payload
from hub.pubsub import Fanout
from hub.services import PersonalService, Service
from hub.session import SESSION_MAILBOX_CAPACITY, Session, SessionSettings, serve_session
from hub.tokens import TokenVerifier, token_authenticate
from hub.topics import CrashLedger, Route, ServerPublish, Topic, Topics, TopicSettings
from hub.transport import Transport, TransportClosed
from hub.trimmer import Trimmer
from hub.users import DISCONNECT_REASON, Users, Whereabouts
from hub.workers import worker_index

logger = logging.getLogger(__name__)

# How long the last connections may take to close once every session has
# been stopped on shutdown.
CLOSE_TIMEOUT_SECONDS: Final = 3.0

# How long a starting hub waits for its Redis before it serves without it.
REDIS_START_WAIT_SECONDS: Final = 5.0

# How long `HubRuntime.publish` waits for the topic's actor to take an event.
PUBLISH_TIMEOUT_SECONDS: Final = 5.0

# How many times `HubRuntime.subscribe_presence` tries a topic that ends
# before it answers (it stopped meanwhile, or its owner moved to another node).
SUBSCRIBE_ATTEMPTS: Final = 3

# The plain WebSocket echo endpoint (no hub protocol), for testing clients.
ECHO_PATH: Final = "/echo"


@attrs.define(eq=False)
class Hub:
    """An application: which service serves which topics, and who may connect.

    `authenticate(request)` (sync or async) sees each connect request
    (path, query, headers, remote address) that carries no signed token
    (docs/auth.md: a hub with `auth.secret` checks those itself) and returns
    the client's identity, which services see as `member.identity`; raising
    `hub.gateway.AuthenticationError` refuses the connection with 401.
    `on_connect(connection)`, `on_disconnect(connection, code, reason)` and
    `on_offline(offline)` are the application's hooks on connections and
    users (`hub.hooks`); `on_connect` may refuse a client by raising
    `hub.errors.ConnectRefusedError`.
    `http_routes` are plain HTTP routes of the application's own on the
    hub's port (`hub.http.HttpRoute`); `observer=True` serves the observer
    (docs/observer.md) whatever the settings say. The hub serves /healthz,
    the JS client at /triohub.js and /metrics (see the `admin` settings);
    the demo chat page at / only with `demo_page=True`, and the plain
    WebSocket echo at /echo only with `echo=True`: nothing an application
    did not ask for is on its port.
    """

    name: str = "triohub"
    authenticate: Authenticate | None = None
    routes: list[Route] = attrs.Factory(list)
    #: Extra plain-HTTP routes served on the hub's port (`hub.http.HttpRoute`).
    http_routes: list[HttpRoute] = attrs.Factory(list)
    #: Backend actors, started under the hub's `services` supervisor (see `actor`).
    backend_actors: list[actors.ChildSpec] = attrs.Factory(list)
    #: Serve the observer (/observer/, `$observer`), as the `admin.observer` setting does.
    observer: bool = False
    #: Serve the demo chat page (hub/static) at /.
    demo_page: bool = False
    #: Serve the plain WebSocket echo (no hub protocol) at /echo, for testing clients.
    echo: bool = False
    #: Runs as each client connects, before its first frame is read (`hub.hooks`).
    on_connect: ConnectHook | None = None
    #: Runs as each connection `on_connect` accepted ends, with its close code and reason.
    on_disconnect: DisconnectHook | None = None
    #: Runs once when a user has been gone past `users.offline_grace_seconds`.
    on_offline: OfflineHook | None = None

    def route(
        self,
        pattern: str,
        factory: Callable[[Topic], Service],
        *,
        presence: Presence | Literal[False] | None = None,
        permissions: Permissions | None = None,
    ) -> None:
        """Serve topics matching `pattern` (`room:*`, or an exact name) with `factory`.

        `factory(topic)` builds the service of one topic, typically a Service
        subclass; the first matching route, in declaration order, wins.
        `permissions` say who may join, publish, call, and read presence and
        history (`hub.permissions`, docs/auth.md); by default anyone may.
        `presence` is how its topics keep presence (`hub.presence.Presence`,
        docs/presence.md): None takes the service's own choice (its
        `presence` class attribute), False keeps none.
        """
        if not pattern or pattern == "*":
            raise ValueError(f"a route needs a pattern such as 'room:*', got {pattern!r}")
        if presence is not None and presence is not False and not isinstance(presence, Presence):
            raise TypeError(f"presence= takes a hub.presence.Presence or False, got {presence!r}")
        self.routes.append(
            Route(pattern, factory, permissions=permissions or Permissions(), presence=presence)
        )

    def actor(
        self,
        name: str,
        start: Callable[..., Any],
        *args: Any,
        restart: actors.Restart = actors.Restart.PERMANENT,
        shutdown: float = actors.DEFAULT_SHUTDOWN_SECONDS,
    ) -> None:
        """Run a backend actor (a matchmaker, a store writer, a bridge) under the hub's tree.

        `start` is an `actors.Actor` subclass or factory, or an async function
        `f(ctx, *args)`, as for any child spec. The actors start in declaration
        order before the hub accepts clients, under a one_for_one supervisor
        with the runtime's default restart budget; services reach them by
        name with `self.topic.hub.actor(name)`, and so does application code
        with `HubRuntime.actor(name)`, and other actors with
        `ctx.system.registry.whereis(name)`: each is registered under its
        name while it runs (a restarted one is found anew).
        """
        if any(spec.id == name for spec in self.backend_actors):
            raise ValueError(f"two backend actors named {name!r}")
        self.backend_actors.append(
            actors.ChildSpec(
                id=name,
                start=start,
                args=args,
                restart=restart,
                shutdown=shutdown,
                label=name,
                register=name,
            )
        )


@attrs.define(eq=False)
class HubRuntime:
    """A running hub: its actor system, topics, metrics and gateway."""

    app: Hub
    config: HubConfig
    system: actors.System
    metrics: HubMetrics
    #: Where topics' events and history go (in process by default).
    backplane: Backplane
    #: This node's sessions per topic, fed by the backplane.
    fanout: Fanout
    topics: Topics = attrs.field(init=False)
    #: Who is connected where, and who has gone offline (`hub.users`).
    users: Users = attrs.field(init=False)
    #: The users' notification inboxes (`hub.notifications`).
    notifications: Notifications = attrs.field(init=False)
    gateway: GatewayHandle | None = None
    #: The listener of /metrics alone, with `admin.metrics_address`.
    metrics_gateway: GatewayHandle | None = None
    #: Checks signed connection tokens (None without `auth.secret`): at
    #: connect, and when a session's client refreshes its token.
    tokens: TokenVerifier | None = None
    #: Who connects: the one function every transport's connect request goes
    #: through (a token, else the application's hook; docs/auth.md).
    authenticate: Authenticate | None = None
    #: The info lines about connections and topics (rate-limited).
    log: HubLog = attrs.field(init=False)
    #: When the hub started, by trio's clock.
    started_at: float = attrs.Factory(trio.current_time)
    _shutdown: trio.Event = attrs.Factory(trio.Event)
    _stopping: bool = False
    # The clients connected, by their session's actor.
    _sessions: dict[actors.ActorRef, Connection] = attrs.Factory(dict)
    _session_settings: SessionSettings = attrs.field(init=False)
    #: This node in a cluster of hubs on a shared backplane (None in process alone).
    cluster: ClusterNode | None = None
    #: What makes a session's id unique in the cluster: "" alone, "@<node>" in a cluster.
    member_suffix: str = ""
    #: Gives freed memory back to the system after a mass leave (`hub.trimmer`).
    trimmer: Trimmer = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._session_settings = session_settings(self.config)
        server = self.config.server
        self.trimmer = Trimmer(
            server.trim_after_closes, server.trim_delay_seconds, on_trim=self.metrics.trimmed
        )
        if isinstance(self.backplane, LocalBackplane):
            # The records of topics that stopped, dropped after their
            # retention: memory to give back as a departed client's is.
            self.backplane.on_expired = self.trimmer.histories_dropped
        self.log = HubLog(self.config.logging.lines_per_second)
        users = self.config.users
        self.notifications = _notifications(self.config, self.backplane, self.metrics)
        self.users = Users(
            grace=users.offline_grace_seconds,
            on_offline=self.app.on_offline,
            hook_timeout=users.hook_timeout_seconds,
            notifications=self.notifications,
            metrics=self.metrics,
            hub=self,
        )

    @property
    def url(self) -> str:
        """The HTTP URL of the demo page and endpoints."""
        assert self.gateway is not None
        host = self.config.server.host
        scheme = "https" if self.config.server.tls else "http"
        return f"{scheme}://{_url_host(host)}:{self.gateway.port}/"

    @property
    def websocket_url(self) -> str:
        """The URL clients connect to for the hub protocol."""
        base = self.url.replace("http", "ws", 1)
        return base.rstrip("/") + self.config.server.path

    def request_shutdown(self) -> None:
        """Start a graceful shutdown: stop accepting, drain and close clients, return."""
        self._shutdown.set()

    @property
    def shutdown_requested(self) -> bool:
        """Whether `request_shutdown` was called."""
        return self._shutdown.is_set()

    # --- what services and applications reach (`HubServices`) ---------------

    async def publish(
        self,
        topic: str,
        event: str,
        payload: Payload = None,
        *,
        keep: bool = True,
        timeout: float = PUBLISH_TIMEOUT_SECONDS,
    ) -> int | None:
        """Push `event` to every member of `topic`, from the server, starting the topic if need be.

        The topic's actor gives the event its next offset (returned when
        `keep`) and its members get it as they get their own broadcasts;
        the service's `handle_event` is not involved. Raises UnknownTopicError
        if no route serves `topic`, TopicUnavailableError / TopicLimitError /
        actors.StartError if it cannot be started, and actors.CallTimeoutError
        if its actor does not take the event within `timeout`.
        """
        route = self.topics.route_for(topic)
        if route is None:
            raise UnknownTopicError(f"no service serves topic {topic!r}")
        ref = await self.topics.actor_for(topic, route)
        offset: int | None = await ref.call(ServerPublish(event, payload, keep), timeout=timeout)
        return offset

    async def notify(self, user: str, event: str, data: Payload = None) -> Notification:
        """Send `user` a notification: kept until acknowledged, pushed to each of its devices.

        Devices get it on the user's personal topic `user:<id>`, at once if
        joined, else when one joins (docs/notifications.md). Returns the
        notification with its offset once it is in the inbox. Raises
        hub.errors.InvalidNotificationError for a user, event or data that
        cannot be sent (an event starting with `$`, data JSON cannot carry).
        """
        return await self.notifications.notify(user, event, data)

    def where(self, user: str) -> tuple[Whereabouts, ...]:
        """Where `user` is connected now: each connection, oldest first (none: offline)."""
        return self.users.where(user)

    def disconnect(
        self, user: str, code: int = CloseCode.POLICY_VIOLATION, reason: str = DISCONNECT_REASON
    ) -> int:
        """End every connection of `user` (Close `code`, `reason`); return how many there were."""
        return self.users.disconnect(user, code, reason)

    async def presence(
        self, topic: str, *, timeout: float = PUBLISH_TIMEOUT_SECONDS
    ) -> PresenceSnapshot:
        """Who is present in `topic` now (nobody if the topic is not live; it is not started).

        Raises UnknownTopicError if no route serves `topic`, and
        TopicWithoutPresenceError if its route keeps no presence.
        """
        ref = self._live_topic(topic)
        if ref is None:
            if self.cluster is not None:
                # Not relayed here: the node that runs it (if one does) knows.
                elsewhere = await self.cluster.presence(topic, timeout=timeout)
                if elsewhere is not None:
                    return elsewhere
            return PresenceSnapshot(topic, {})
        try:
            snapshot: PresenceSnapshot = await ref.call(ListPresence(), timeout=timeout)
        except actors.ActorExitedError:
            return PresenceSnapshot(topic, {})  # it stopped meanwhile: nobody is there
        return snapshot

    async def subscribe_presence(
        self, topic: str, subscriber: actors.ActorRef, *, timeout: float = PUBLISH_TIMEOUT_SECONDS
    ) -> PresenceSnapshot:
        """Send `subscriber` (a backend actor) `topic`'s presence changes; return who is here.

        Starts the topic if it is not live, and keeps it live while
        subscribed. The subscriber then receives `hub.presence.PresenceChanged`
        messages (a `PresenceSnapshot` in place of changes it missed, and an
        empty one when the topic ends). In a cluster, from whichever node:
        where another node runs the topic, the subscription is taken there
        (docs/presence.md). Raises as `publish` does,
        PresenceLimitError past `presence.max_subscribers` per topic, and
        TopicWithoutPresenceError if its route keeps no presence.
        """
        route = self.topics.route_for(topic)
        if route is None:
            raise UnknownTopicError(f"no service serves topic {topic!r}")
        deadline = trio.current_time() + timeout
        attempts = 1
        while True:
            ref = await self.topics.actor_for(topic, route)
            left = max(0.0, deadline - trio.current_time())
            try:
                snapshot: PresenceSnapshot = await ref.call(
                    SubscribePresence(subscriber), timeout=left
                )
            except actors.ActorExitedError:
                # It ended before it answered (it stopped, or in a cluster its
                # owner moved): the next one to run it takes the subscription.
                if attempts == SUBSCRIBE_ATTEMPTS:
                    raise
                attempts += 1
                continue
            return snapshot

    async def unsubscribe_presence(
        self, topic: str, subscriber: actors.ActorRef, *, timeout: float = PUBLISH_TIMEOUT_SECONDS
    ) -> None:
        """Stop sending `subscriber` the presence changes of `topic` (nothing if it is not live)."""
        ref = self._live_topic(topic)
        if ref is not None:
            with contextlib.suppress(actors.ActorExitedError):
                await ref.call(UnsubscribePresence(subscriber), timeout=timeout)

    def _live_topic(self, topic: str) -> actors.ActorRef | None:
        if self.topics.route_for(topic) is None:
            raise UnknownTopicError(f"no service serves topic {topic!r}")
        return self.topics.whereis(topic)

    async def start_topic(self, topic: str, init: Payload = None) -> None:
        """Start `topic` from the server with `init` (see `HubServices.start_topic`)."""
        route = self.topics.route_for(topic)
        if route is None:
            raise UnknownTopicError(f"no service serves topic {topic!r}")
        await self.topics.actor_for(topic, route, init=init, new=True)

    def actor(self, name: str) -> actors.ActorRef:
        """The running backend actor declared as `name` with `Hub.actor`."""
        ref = self.system.registry.whereis(name)
        if ref is None or not any(spec.id == name for spec in self.app.backend_actors):
            raise NoSuchActorError(f"no backend actor named {name!r} is running")
        return ref

    def sessions(self) -> actors.Supervisor:
        """The supervisor of the client sessions (a new one if it was restarted)."""
        return _child_supervisor(self.system, "sessions")

    def connection_count(self) -> int:
        """Clients connected now (a session counts until its client is gone)."""
        return len(self._sessions)

    def session(self, ref: actors.ActorRef) -> Session | None:
        """The session of the actor `ref`, while its client is connected."""
        connected = self._sessions.get(ref)
        return None if connected is None else connected.session

    def connections(self) -> Iterable[Connection]:
        """The clients connected now (a live view: copy it to keep it across a checkpoint)."""
        return self._sessions.values()

    # --- gateway callbacks ------------------------------------------------------

    async def serve_transport(self, transport: Transport, info: ConnectInfo) -> None:
        """Run one client's session over `transport` until it ends (the gateway's handler).

        This task is the session's reader; the session actor runs under the
        sessions supervisor. Any transport will do: WebSocket, or in memory.
        """
        session = Session(self, transport, info.identity, self._session_settings)
        remote, observer = info.remote, isinstance(info.identity, ObserverIdentity)
        del info  # the request's headers and query need not live as long as the client
        spec = actors.ChildSpec(
            id=None,
            start=functools.partial(_the_session, session),
            restart=actors.Restart.TEMPORARY,
            shutdown=self.config.server.drain_seconds,
            mailbox_capacity=SESSION_MAILBOX_CAPACITY,
            overflow=actors.Overflow.FAIL,
            label="session",
        )
        try:
            ref = await self.sessions().start_child(spec)
        except (actors.ActorExitedError, actors.NoSuchChildError):
            # The sessions supervisor is stopping (or being restarted): the
            # client should come back shortly, which is no error of ours.
            transport.close(CloseCode.TRY_AGAIN_LATER, "server restarting")
            return
        since = trio.current_time()
        connection = Connection(session, since, remote, observer, time.time())
        self._sessions[ref] = connection
        self.metrics.connection_opened()
        self.log.connection_opened(session.id, transport, remote)
        closed: TransportClosed | None = None
        accepted = False
        try:
            accepted = await self._accept(connection)
            closed = await serve_session(session, ref)
            # The session closed its transport: finish (bounded; a no-op for
            # one its gateway finishes too). A memory client learns the code.
            await transport.aclose()
        finally:
            if closed is None and ref.alive:
                ref.kill()  # `_accept` was cancelled; serve_session ends it otherwise
            del self._sessions[ref]
            self._sessions = actors.compacted(self._sessions)
            if accepted:
                self.users.disconnected(connection)
            self.metrics.connection_closed()
            self.trimmer.closed()
            seconds = trio.current_time() - since
            if closed is None:  # cancelled: the hub is ending at once
                self.log.connection_closed(session.id, None, "the hub stopped", seconds)
            else:
                self.log.connection_closed(session.id, closed.code, closed.reason, seconds)
        if accepted and not observer and self.app.on_disconnect is not None:
            assert closed is not None
            await run_hook(
                "on_disconnect",
                self.app.on_disconnect,
                connection,
                closed.code,
                closed.reason,
                timeout=self.config.users.hook_timeout_seconds,
                metrics=self.metrics,
            )

    async def _accept(self, connection: Connection) -> bool:
        """Run the application's `on_connect`; count the client as its user's if it accepts.

        A refusal closes the client with the refusal's code and reason; a
        hook that fails (raises, or runs too long) closes it with 1011.
        """
        hook = self.app.on_connect
        if hook is not None and not connection.observer:
            try:
                returned = await run_hook(
                    "on_connect",
                    hook,
                    connection,
                    timeout=self.config.users.hook_timeout_seconds,
                    metrics=self.metrics,
                )
            except ConnectRefusedError as refusal:
                self.metrics.connects_refused.inc()
                connection.close(refusal.code, refusal.reason)
                return False
            if not returned:
                connection.close(CloseCode.INTERNAL_ERROR, "internal error")
                return False
        if connection.session.ended:
            return False  # gone while the hook ran
        self.users.connected(connection)
        return True

    async def healthz(self, request: HttpRequest) -> HttpResponse:
        """200 `ok` (or `degraded`: no backplane); 503 `shutting_down`, or `full` with the
        reason while no client can connect."""
        full = None if self.gateway is None else self.gateway.full
        backplane = self.backplane
        # Without its backplane a node still serves its own clients: degraded, not down.
        status = "ok" if backplane.healthy else "degraded"
        if full:
            status = "full"
        if self._stopping:
            status = "shutting_down"
        body: dict[str, object] = {
            "status": status,
            "connections": self.connection_count(),
            "topics": self.topics.count(),
            "backplane": {"kind": backplane.kind, "connected": backplane.healthy},
        }
        if full and not self._stopping:
            body["reason"] = full
        worker = worker_index()
        if worker is not None:
            body["worker"] = worker  # which of `hub serve --workers N` answered
        return HttpResponse(
            status=503 if status in ("full", "shutting_down") else 200,
            body=json.dumps(body).encode(),
            content_type="application/json",
        )

    @property
    def observer(self) -> bool:
        """Whether the observer is served (by the application's choice or the settings)."""
        return self.app.observer or self.config.admin.observer

    async def serve_metrics(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(body=self.metrics.render(), content_type=CONTENT_TYPE)

    async def _drain(self) -> None:
        """Stop accepting, close every client (1001) after its queue is written."""
        self._stopping = True
        if self.gateway is not None:
            await self.gateway.stop_accepting()
        if self.metrics_gateway is not None:
            await self.metrics_gateway.stop_accepting()
        hub_supervisor = _child_supervisor(self.system, "hub", under_root=True)
        # Stopping the sessions supervisor stops its sessions concurrently,
        # in batches; each writes what is queued, then closes 1001.
        await hub_supervisor.stop_child("sessions")
        if self.gateway is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                await self.gateway.wait_drained()


def gateway_config(config: HubConfig) -> GatewayConfig:
    """The gateway's part of the hub's settings."""
    server, http, websocket, limits = config.server, config.http, config.websocket, config.limits
    return GatewayConfig(
        host=server.host,
        port=server.port,
        origins=server.origins,
        certfile=server.certfile,
        keyfile=server.keyfile,
        max_message_size=websocket.max_message_size,
        ping_interval=websocket.ping_interval,
        idle_timeout=websocket.idle_timeout,
        head_timeout=http.head_timeout,
        max_head_size=http.max_head_size,
        max_body_size=http.max_body_size,
        auth_timeout=http.auth_timeout,
        close_timeout=websocket.close_timeout,
        outbox_capacity=websocket.outbox_capacity,
        max_fragments=websocket.max_fragments,
        message_timeout=websocket.message_timeout,
        # 0 is "no limit" in the settings, None in the gateway.
        max_connections=limits.max_connections or None,
        max_connections_per_address=limits.max_connections_per_address or None,
        handshakes_per_second=limits.handshakes_per_second or None,
        max_handshakes_per_second=limits.max_handshakes_per_second or None,
        unlimited_addresses=limits.unlimited_addresses,
        trusted_proxies=server.trusted_proxies,
        client_address_header=server.client_address_header,
        poll_timeout=config.longpoll.poll_timeout,
        reap_timeout=config.longpoll.reap_timeout,
        max_longpoll_sessions=config.longpoll.max_sessions,
        reuse_port=server.workers > 1,
    )


def presence_settings(config: HubConfig) -> PresenceSettings:
    """The hub's presence defaults, under what each route declares."""
    presence = config.presence
    return PresenceSettings(
        interval=presence.interval_seconds,
        grace=presence.grace_seconds,
        max_meta_bytes=presence.max_meta_bytes,
        max_subscribers=presence.max_subscribers,
    )


def session_settings(config: HubConfig) -> SessionSettings:
    """Every session's part of the hub's settings (one object, shared)."""
    websocket, session, topics = config.websocket, config.session, config.topics
    return SessionSettings(
        # The codec refuses what the transport would: one limit, not two.
        max_message_size=websocket.max_message_size,
        max_malformed=session.max_malformed,
        malformed_window_seconds=session.malformed_window_seconds,
        call_timeout=topics.call_timeout_seconds,
        max_call_timeout=topics.max_call_timeout_seconds,
        write_timeout=websocket.write_timeout,
        close_timeout=websocket.close_timeout,
        max_topics=session.max_topics,
        joins_per_second=session.joins_per_second,
        messages_per_second=session.messages_per_second,
        bytes_per_second=session.bytes_per_second,
        max_calls_in_flight=session.max_calls_in_flight,
        refresh_lead=config.auth.refresh_lead_seconds,
        token_leeway=config.auth.leeway_seconds,
    )


@contextlib.contextmanager
def _tuned_gc(threshold: int) -> Iterator[None]:
    """Collect the young generation every `threshold` allocations while the hub runs.

    A hub holds a great many long-lived objects (every connection's); with
    Python's default (700) collections come often and, in a storm of
    connects or disconnects, older generations that walk all of them come
    in bursts. What exists once the hub listens is frozen (never walked).
    0 leaves the collector alone.
    """
    if not threshold:
        yield
        return
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _the_session(session: Session) -> Session:
    """The supervisor's factory for a session made beforehand (its reader holds it too)."""
    return session


def _personal_topics_free(routes: Iterable[Route]) -> bool:
    """Whether no application route serves personal topics (`user:...`); say so if one does."""
    for route in routes:
        if route.pattern.startswith(PERSONAL_PREFIX) or route.matches(PERSONAL_PREFIX + "x"):
            logger.warning(
                "the application routes %r itself, so the hub does not serve %s* as personal "
                "topics: notifications wait in their inboxes, and reach no device (set "
                "notifications.personal_topics = false to say this is meant)",
                route.pattern,
                PERSONAL_PREFIX,
            )
            return False
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _child_supervisor(
    system: actors.System, child_id: Hashable, *, under_root: bool = False
) -> actors.Supervisor:
    """The current Supervisor object of a child (it changes when one is restarted)."""
    parent = system.root
    if not under_root:
        parent = _child_supervisor(system, "hub", under_root=True)
    for info in parent.which_children():
        if info.id == child_id and info.supervisor is not None:
            return info.supervisor
    raise actors.NoSuchChildError(parent.ctx.name, child_id)


def _notifications(config: HubConfig, backplane: Backplane, metrics: HubMetrics) -> Notifications:
    """The users' inboxes: in Redis with the Redis backplane (shared by every node), else here."""
    limits = config.notifications
    if backplane.kind == "redis":
        from hub.backplane.redis import RedisBackplane
        from hub.redis_inbox import RedisInbox

        assert isinstance(backplane, RedisBackplane)
        shared = RedisInbox(
            backplane.run_script,
            prefix=backplane.prefix,
            max_per_user=limits.max_per_user,
            max_age=limits.max_age_seconds,
            on_dropped=metrics.notification_dropped,
        )
        return Notifications(shared, metrics=metrics, backplane=backplane)
    inbox = LocalInbox(
        max_per_user=limits.max_per_user,
        max_age=limits.max_age_seconds,
        on_dropped=metrics.notification_dropped,
    )
    return Notifications(inbox, metrics=metrics)


@contextlib.asynccontextmanager
async def _running_backplane(config: HubConfig) -> AsyncIterator[Backplane]:
    """The hub's backplane, running for as long as the hub does (closed after its actors)."""
    async with trio.open_nursery() as nursery:
        backplane = await _open_backplane(config, nursery)
        yield backplane
        await backplane.aclose()
        nursery.cancel_scope.cancel()  # its tasks that run until cancelled (expiry)


async def _open_backplane(config: HubConfig, nursery: trio.Nursery) -> Backplane:
    """The backplane the settings name: Redis (started in `nursery`) or this process's own."""
    redis_url = config.backplane.redis_url
    if redis_url is None:
        local = LocalBackplane(
            history_size=config.topics.history_size,
            retention_seconds=config.topics.history_retention_seconds,
        )
        await nursery.start(local.serve_expiry)
        return local
    try:
        from hub.backplane.redis import RedisBackplane
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "backplane.redis_url is set but the Redis client is missing: "
            "pip install 'triohub[redis]'"
        ) from error
    redis = RedisBackplane(
        redis_url.get_secret_value(),
        history_size=config.topics.history_size,
        retention_seconds=config.topics.history_retention_seconds,
        prefix=config.backplane.prefix,
    )
    await nursery.start(redis.run)
    # Normally Redis answers at once; if not, the hub serves its own clients
    # (degraded, topics that need Redis refused) while it keeps trying.
    with trio.move_on_after(REDIS_START_WAIT_SECONDS):
        await redis.wait_healthy()
    return redis


async def serve_hub(
    app: Hub,
    config: HubConfig | None = None,
    *,
    listen: bool = True,
    task_status: trio.TaskStatus[HubRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `app` until `request_shutdown()`, then drain and return.

    Reports the HubRuntime (with its URL and port) through `task_status` once
    listening. Cancelling this task instead ends everything at once.
    Raises OSError if the port cannot be bound. With `listen=False` no port
    is opened: clients come through `HubRuntime.serve_transport` alone
    (in memory: `hub.testing`).
    """
    config = config or HubConfig()
    tokens = config.auth.verifier()  # a ConfigError before anything starts
    metrics = HubMetrics()
    async with (
        _running_backplane(config) as backplane,
        actors.open_system(app.name, handle_signals=False) as system,
    ):
        runtime = HubRuntime(
            app, config, system, metrics, backplane, Fanout(backplane, metrics), tokens=tokens
        )
        admin = config.admin
        guard = AdminGuard(None if admin.token is None else admin.token.get_secret_value())
        routes = tuple(app.routes)
        if config.notifications.personal_topics and _personal_topics_free(routes):
            # First, so that the personal topics are always the hub's own.
            personal = functools.partial(PersonalService, notifications=runtime.notifications)
            routes = (Route(PERSONAL_PREFIX + "*", personal, PERSONAL), *routes)
            runtime.notifications.personal_topics = True
        if runtime.observer:
            snapshots = Snapshotter(runtime, interval=admin.observer_interval_seconds)
            # First, so that no route of the application's can take the topic.
            routes = (
                Route(OBSERVER_TOPIC, functools.partial(ObserverService, snapshots=snapshots)),
                *routes,
            )
        runtime.topics = Topics(
            routes=routes,
            registry=system.registry,
            supervisor_of=lambda: _child_supervisor(system, "topics"),
            backplane=backplane,
            metrics=metrics,
            hub=runtime,
            settings=TopicSettings(
                empty_grace=config.topics.empty_grace_seconds,
                hook_timeout=config.topics.hook_timeout_seconds,
                presence=presence_settings(config),
                history_max_read=config.topics.history_max_read,
            ),
            mailbox_capacity=config.topics.mailbox_capacity,
            start_timeout=config.topics.start_timeout_seconds,
            max_live=config.topics.max_live,
            crashes=CrashLedger(
                max_crashes=config.topics.max_crashes,
                window_seconds=config.topics.crash_window_seconds,
            ),
            lifecycle=runtime.log,
        )
        runtime.notifications.topics = runtime.topics
        if backplane.kind != "local":
            runtime.cluster = runtime.topics.cluster = ClusterNode(
                backplane,
                runtime.fanout,
                runtime.topics.started,
                lambda: _child_supervisor(system, "cluster"),
                ClusterSettings(
                    lease_seconds=config.backplane.lease_seconds,
                    heartbeat_seconds=config.backplane.heartbeat_seconds,
                ),
                lifecycle=runtime.log,
                metrics=metrics,
            )
            # The topics this node runs tell the cluster when they end (it gives their lease back).
            runtime.topics.lifecycle = runtime.cluster
            runtime.member_suffix = f"@{backplane.node}"
        await system.start_supervisor(
            [
                # The application's backend actors first: topics and
                # sessions may call them from their first message on. The
                # hub's notifier before them: they may notify from the start.
                actors.Supervisor.spec(
                    "services",
                    [
                        actors.ChildSpec(
                            id=NOTIFIER,
                            start=functools.partial(Notifier, runtime.notifications),
                            label="notifications",
                            register=NOTIFIER,
                        ),
                        *app.backend_actors,
                    ],
                ),
                # These hold temporary children only (topics are started by
                # a join, sessions by a client): nothing under them is
                # restarted, so no client can drain a restart budget.
                actors.Supervisor.spec("topics"),
                # The stand-ins of other nodes' members in the topics run here.
                *((actors.Supervisor.spec("cluster"),) if runtime.cluster is not None else ()),
                actors.Supervisor.spec("sessions"),
            ],
            id="hub",
            strategy=actors.Strategy.REST_FOR_ONE,
        )
        metrics.watch_actors(system.snapshot)
        cluster = runtime.cluster
        metrics.watch_backplane(
            backplane, (lambda: cluster.dropped) if cluster is not None else lambda: 0
        )
        if cluster is not None:
            metrics.watch_cluster(cluster)
        static = static_files(importlib.resources.files("hub") / "static", prefix="/")
        metrics_route = HttpRoute("/metrics", guard.protect(runtime.serve_metrics))
        on_port = admin.metrics and admin.metrics_address is None
        http_routes = [
            HttpRoute("/healthz", runtime.healthz),
            *((metrics_route,) if on_port else ()),
            *admin_routes(runtime, guard),
            *(observer_routes(guard) if runtime.observer else ()),
            *app.http_routes,
            # The demo page, or the JS client alone (applications load it).
            static if app.demo_page else HttpRoute("/triohub.js", static.handler),
        ]
        websocket_routes = [
            WebSocketRoute(config.server.path, runtime.serve_transport, SUBPROTOCOLS),
            *((WebSocketRoute(ECHO_PATH, serve_echo),) if app.echo else ()),
        ]
        longpoll_routes = []
        # The same sessions over HTTP, for clients that cannot open a WebSocket.
        # Not with --workers: the kernel spreads a session's requests over
        # the workers, and the session lives in one of them.
        if config.longpoll.enabled and config.server.workers == 1:
            longpoll_routes.append(
                LongPollRoute(config.longpoll.path, runtime.serve_transport, SUBPROTOCOLS)
            )
        # One function decides who connects, whatever the transport: a
        # token, else the application's own hook (docs/auth.md).
        authenticate = token_authenticate(tokens, app.authenticate, required=config.auth.required)
        if runtime.observer:
            websocket_routes.append(
                WebSocketRoute(OBSERVER_WS_PATH, runtime.serve_transport, SUBPROTOCOLS)
            )
            authenticate = observer_authenticate(authenticate, guard)
        runtime.authenticate = authenticate
        async with trio.open_nursery() as nursery:
            runtime.topics.nursery = nursery
            nursery.start_soon(runtime.log.serve_summaries)
            await nursery.start(runtime.users.serve)
            await nursery.start(runtime.notifications.serve)
            await nursery.start(runtime.trimmer.serve)
            if runtime.cluster is not None:
                await nursery.start(runtime.cluster.serve)
            if backplane.kind == "redis":
                # `hub publish` and `hub.publisher`, from outside the hub.
                from hub.backplane.redis import RedisBackplane
                from hub.publish_requests import PublishRequests

                assert isinstance(backplane, RedisBackplane)
                await nursery.start(PublishRequests(backplane, runtime.topics).serve)
            if listen:
                runtime.gateway = await nursery.start(
                    functools.partial(
                        serve_gateway,
                        gateway_config(config),
                        websocket_routes=websocket_routes,
                        http_routes=http_routes,
                        longpoll_routes=longpoll_routes,
                        authenticate=authenticate,
                        observe=metrics.observe_gateway,
                    )
                )
            if listen and admin.metrics and admin.metrics_address is not None:
                host, port = admin.metrics_address
                runtime.metrics_gateway = await nursery.start(
                    functools.partial(
                        serve_gateway,
                        attrs.evolve(gateway_config(config), host=host, port=port),
                        http_routes=[metrics_route],
                        observe=metrics.observe_gateway,
                    )
                )
            runtime.started_at = trio.current_time()
            task_status.started(runtime)
            with _tuned_gc(config.server.gc_threshold):
                await runtime._shutdown.wait()
            await runtime._drain()
            nursery.cancel_scope.cancel()
