"""Prometheus metrics for one hub, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import actors
from hub.backplane import Backplane
from hub.gateway import (
    GatewayEvent,
    IdleClosed,
    LimitHit,
    ProtocolViolationClosed,
    RequestRejected,
    WebSocketAccepted,
)

if TYPE_CHECKING:
    from hub.cluster import ClusterNode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ActorTreeCollector(Collector):
    """Reads the actor tree at scrape time: mailbox drops, restarts, depth, topics."""

    def __init__(self, snapshot: Callable[[], actors.ActorInfo | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        tree = self._snapshot()
        if tree is None:
            return
        drops = restarts = depth = count = 0
        for info in tree.walk():
            count += 1
            drops += info.dropped
            restarts += info.restarts
            depth += info.mailbox_depth
        yield GaugeMetricFamily("triohub_actors", "Live actors in the hub's tree", value=count)
        yield GaugeMetricFamily(
            "triohub_mailbox_depth", "Messages queued in all mailboxes", value=depth
        )
        yield CounterMetricFamily(
            "triohub_mailbox_drops",
            "Messages dropped by mailbox overflow policies (live actors)",
            value=drops,
        )
        yield CounterMetricFamily(
            "triohub_restarts", "Restarts of the live actors by their supervisors", value=restarts
        )


class _BackplaneCollector(Collector):
    """Reads the backplane at scrape time: whether it reaches the other nodes, what it lost."""

    def __init__(self, backplane: Backplane, node_messages_refused: Callable[[], int]) -> None:
        self._backplane = backplane
        self._refused = node_messages_refused

    def collect(self) -> Iterator[Metric]:
        backplane = self._backplane
        stats = backplane.stats()
        connected = GaugeMetricFamily(
            "triohub_backplane_connected",
            "Whether the backplane reaches the other nodes now (1) or not (0), by kind",
            labels=["kind"],
        )
        connected.add_metric([backplane.kind], 1 if backplane.healthy else 0)
        yield connected
        yield CounterMetricFamily(
            "triohub_backplane_dropped",
            "Records refused because too much waited to be written to the backplane",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "triohub_backplane_failed_writes",
            "Backplane writes refused, or taken by a lost connection",
            value=stats.failed_writes,
        )
        yield GaugeMetricFamily(
            "triohub_node_messages_held",
            "Messages for other nodes that reached no one yet, held to be sent again",
            value=stats.held_node_messages,
        )
        yield CounterMetricFamily(
            "triohub_node_messages_dropped",
            "Messages for other nodes dropped: held as long as allowed, or too many for one node",
            value=stats.dropped_node_messages,
        )
        yield CounterMetricFamily(
            "triohub_backplane_refused_messages",
            "Messages on topic channels refused: bytes not decoded, publish requests refused",
            value=stats.refused_messages,
        )
        yield CounterMetricFamily(
            "triohub_node_messages_duplicate",
            "Messages from other nodes had already (sent again after all), dropped",
            value=stats.duplicate_node_messages,
        )
        yield CounterMetricFamily(
            "triohub_node_messages_refused",
            "Messages from other nodes refused: a full inbox, or bytes that do not decode",
            value=self._refused(),
        )


class _ClusterCollector(Collector):
    """Reads this node's part in the cluster at scrape time (several nodes on Redis)."""

    def __init__(self, cluster: ClusterNode) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster
        yield GaugeMetricFamily(
            "triohub_cluster_leases", "Topic leases this node holds", value=len(cluster.leases)
        )
        yield GaugeMetricFamily(
            "triohub_cluster_relays",
            "Topics run on another node that this node relays",
            value=cluster.relays(),
        )
        yield GaugeMetricFamily(
            "triohub_cluster_remote_members",
            "Members of other nodes in the topics this node runs",
            value=cluster.remote_members(),
        )
        yield GaugeMetricFamily(
            "triohub_cluster_remote_presence_subscribers",
            "Presence subscriptions of other nodes' backend actors to the topics this node runs",
            value=cluster.remote_subscribers(),
        )


class _TasksCollector(Collector):
    """Counts the process's live trio tasks at scrape time (a leak shows as a climb)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "triohub_tasks", "Live trio tasks in the hub's process", value=live_tasks()
        )


def live_tasks() -> int:
    """How many trio tasks this run has alive now (walks the task tree: O(tasks)).

    Call from inside `trio.run`.
    """
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


class HubCounts:
    """Counters on the per-message path, kept as plain integers.

    A Prometheus counter takes a lock on every increment; these are read at
    scrape time instead (`_CountsCollector`).
    """

    __slots__ = ("messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0


class _CountsCollector(Collector):
    def __init__(self, counts: HubCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        yield CounterMetricFamily(
            "triohub_messages_in",
            "WebSocket messages received from clients",
            value=counts.messages_in,
        )
        yield CounterMetricFamily(
            "triohub_messages_out",
            "WebSocket messages sent to clients",
            value=counts.messages_out,
        )
        yield CounterMetricFamily(
            "triohub_frames_out",
            "Frames sent to clients (the hub sends one frame per message)",
            value=counts.messages_out,
        )


class HubMetrics:
    """The hub's counters and gauges; `render()` gives the /metrics body."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("triohub_connections", "Open WebSocket connections", registry=r)
        self.connections_total = Counter(
            "triohub_connections_accepted", "WebSocket connections accepted", registry=r
        )
        self.joins = Counter("triohub_joins", "Topic joins accepted", registry=r)
        self.counts = HubCounts()
        r.register(_CountsCollector(self.counts))
        r.register(_TasksCollector())
        self.errors = Counter(
            "triohub_errors",
            "Error frames and error replies sent to clients, by code",
            ["code"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "triohub_slow_consumers", "Clients disconnected for falling behind", registry=r
        )
        self.conflated = Counter(
            "triohub_conflated", "Latest-only pushes replaced by a newer one unsent", registry=r
        )
        self.volatile_dropped = Counter(
            "triohub_volatile_dropped",
            "Volatile pushes dropped for a client with a backlog",
            registry=r,
        )
        self.tick_lateness = Histogram(
            "triohub_tick_lateness_seconds",
            "How late topics' repeating timers (match ticks) ran after they were due",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.ticks_missed = Counter(
            "triohub_ticks_missed",
            "Ticks of topics' repeating timers that came due while the previous one waited",
            registry=r,
        )
        self.unencodable = Counter(
            "triohub_unencodable",
            "Broadcasts some members' codec could not carry (bytes to JSON clients)",
            registry=r,
        )
        self.policy_closes = Counter(
            "triohub_policy_closes", "Connections closed for a flood of bad frames", registry=r
        )
        self.topic_limit_refusals = Counter(
            "triohub_topic_limit_refusals",
            "Joins refused because the hub runs as many topics as allowed",
            registry=r,
        )
        self.topic_start_failures = Counter(
            "triohub_topic_start_failures", "Topic services that failed to start", registry=r
        )
        self.rejections = Counter(
            "triohub_rejections", "Connect requests refused, by reason", ["reason"], registry=r
        )
        self.protocol_closes = Counter(
            "triohub_protocol_closes",
            "WebSockets closed for breaking RFC 6455, by close code",
            ["code"],
            registry=r,
        )
        self.idle_closes = Counter(
            "triohub_idle_closes", "WebSockets closed for silence past the idle timeout", registry=r
        )
        self.limit_hits = Counter(
            "triohub_limit_hits",
            "Times a client ran into a limit (docs/security.md), by limit",
            ["limit"],
            registry=r,
        )

        self.hook_failures = Counter(
            "triohub_hook_failures",
            "Application hooks that raised or ran too long, by hook",
            ["hook"],
            registry=r,
        )
        self.connects_refused = Counter(
            "triohub_connects_refused", "Connections the on_connect hook refused", registry=r
        )
        self.users_offline = Counter(
            "triohub_users_offline",
            "Users gone past the offline grace period (on_offline reports)",
            registry=r,
        )
        self.notifications = Counter(
            "triohub_notifications", "Notifications added to users' inboxes", registry=r
        )
        self.notifications_acked = Counter(
            "triohub_notifications_acks", "Acknowledgements of notifications by clients", registry=r
        )
        self.notifications_dropped = Counter(
            "triohub_notifications_dropped",
            "Notifications dropped unacknowledged by the inbox limits, by reason (full, expired)",
            ["reason"],
            registry=r,
        )
        self.memory_trims = Counter(
            "triohub_memory_trims",
            "Times freed memory was given back to the system after connections closed",
            registry=r,
        )
        self.memory_trimmed_bytes = Counter(
            "triohub_memory_trimmed_bytes",
            "Resident memory given back to the system by those trims",
            registry=r,
        )
        self.memory_trim_seconds = Counter(
            "triohub_memory_trim_seconds",
            "Time the hub spent in those trims (it serves no one meanwhile)",
            registry=r,
        )

    def limit_hit(self, limit: str) -> None:
        """Count one client running into `limit` ("messages", "handshakes_per_address"...)."""
        self.limit_hits.labels(limit=limit).inc()

    def notification_dropped(self, user: str, count: int, reason: str) -> None:
        """Count notifications an inbox dropped (its `on_dropped`)."""
        self.notifications_dropped.labels(reason=reason).inc(count)

    def connection_opened(self) -> None:
        self.connections.inc()
        self.connections_total.inc()

    def connection_closed(self) -> None:
        self.connections.dec()

    def trimmed(self, freed_bytes: int, seconds: float) -> None:
        """Count one trim of the heap (`hub.trimmer`): what it gave back, how long it took."""
        self.memory_trims.inc()
        self.memory_trimmed_bytes.inc(freed_bytes)
        self.memory_trim_seconds.inc(seconds)

    def watch_actors(self, snapshot: Callable[[], actors.ActorInfo | None]) -> None:
        """Report the actor tree's drops and restarts at each scrape."""
        self.registry.register(_ActorTreeCollector(snapshot))

    def watch_backplane(
        self, backplane: Backplane, node_messages_refused: Callable[[], int] = lambda: 0
    ) -> None:
        """Report the backplane's health and losses at each scrape."""
        self.registry.register(_BackplaneCollector(backplane, node_messages_refused))

    def watch_cluster(self, cluster: ClusterNode) -> None:
        """Report this node's leases, relays, remote members and subscribers at each scrape."""
        self.registry.register(_ClusterCollector(cluster))

    def observe_gateway(self, event: GatewayEvent) -> None:
        """Count a gateway event (the gateway's `observe` hook)."""
        match event:
            case RequestRejected(reason=reason):
                self.rejections.labels(reason=str(reason)).inc()
            case ProtocolViolationClosed(code=code):
                self.protocol_closes.labels(code=str(code)).inc()
            case IdleClosed():
                self.idle_closes.inc()
            case LimitHit(limit=limit):
                self.limit_hit(limit)
            case WebSocketAccepted():
                pass  # counted by the connection actor as it starts

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
