"""Snapshots of a running hub, as the observer's page and `hub top` draw them.

A snapshot is a plain payload (dicts, lists, strings and numbers, for
either codec), bounded in size however large the hub: each supervisor
lists its first MAX_CHILDREN children and counts the rest, and the topics
and connections are the MAX_ROWS busiest. Rates (messages a second) come
from the counts of the previous snapshot, so the first one has none.

    {
      "hub": {"name", "version", "uptime", "connections", "topics",
              "messages_in_rate", "messages_out_rate", "interval"},
      "tree": {"id", "name", "child_id", "kind", "state", "mailbox",
               "capacity", "dropped", "restarts", "children": [...], "more"},
      "topics": [{"name", "route", "state", "members", "rate", "mailbox",
                  "capacity"}],
      "topics_more": n,
      "connections": [{"id", "transport", "remote", "observer", "topics",
                       "topic_count", "outbox", "mailbox", "age"}],
      "connections_more": n,
      "crashes": [{"actor", "supervisor", "restart", "at", "error",
                   "traceback"}],   # newest first
    }
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import actors
from hub.logs import describe_remote, transport_kind
from hub.topics import topic_name_key
from hub.version import version

if TYPE_CHECKING:
    from hub.app import HubRuntime

__all__ = ["MAX_CHILDREN", "MAX_ROWS", "Snapshotter"]

#: Children listed per supervisor; the others are counted (`more`).
MAX_CHILDREN: Final = 50
#: Topics and connections listed, the busiest first; the others are counted.
MAX_ROWS: Final = 100
#: Topics listed per connection.
MAX_TOPICS_PER_CONNECTION: Final = 20
#: The end of a crash's traceback that is sent (the end says what and where).
TRACEBACK_CHARS: Final = 6000


@attrs.define(eq=False)
class Snapshotter:
    """Builds snapshots of `runtime`, remembering counts between them for rates."""

    runtime: HubRuntime
    interval: float = 1.0
    _last_at: float | None = None
    _last_records: dict[str, int] = attrs.Factory(dict)
    _last_messages: tuple[int, int] = (0, 0)

    def take(self) -> dict[str, Any]:
        """A snapshot now (see the module docstring); never waits."""
        runtime = self.runtime
        now = trio.current_time()
        elapsed = None if self._last_at is None else now - self._last_at
        self._last_at = now
        counts = runtime.metrics.counts
        messages = (counts.messages_in, counts.messages_out)
        last_messages, self._last_messages = self._last_messages, messages
        topics, topics_more = self._topics(elapsed)
        connections, connections_more = self._connections(now)
        return {
            "hub": {
                "name": runtime.app.name,
                "version": version(),
                "uptime": round(now - runtime.started_at, 1),
                "connections": runtime.connection_count(),
                "topics": runtime.topics.count(),
                "messages_in_rate": _rate(messages[0] - last_messages[0], elapsed),
                "messages_out_rate": _rate(messages[1] - last_messages[1], elapsed),
                "interval": self.interval,
            },
            "tree": _actor(runtime.system.snapshot(max_children=MAX_CHILDREN)),
            "topics": topics,
            "topics_more": topics_more,
            "connections": connections,
            "connections_more": connections_more,
            "crashes": [_crash(report) for report in reversed(runtime.system.crash_reports)],
        }

    def _topics(self, elapsed: float | None) -> tuple[list[dict[str, Any]], int]:
        runtime = self.runtime
        fanout = runtime.fanout
        records: dict[str, int] = {}
        rows = []
        for key, ref in runtime.system.registry.names().items():
            name = _topic_name(key)
            if name is None:
                continue
            count = records[name] = fanout.records(name)
            before = self._last_records.get(name)
            # A count lower than before: the node subscribed afresh, from 0.
            delta = None if before is None else count - before if count >= before else count
            route = runtime.topics.route_for(name)
            rows.append(
                {
                    "name": name,
                    "route": route.pattern if route is not None else None,
                    "state": ref.state,
                    "members": fanout.local_members(name),
                    "rate": None if delta is None else _rate(delta, elapsed),
                    "mailbox": ref.mailbox_depth,
                    "capacity": ref.mailbox_capacity,
                }
            )
        self._last_records = records
        busiest = heapq.nlargest(
            MAX_ROWS, rows, key=lambda row: (row["members"], row["rate"] or 0.0)
        )
        return busiest, len(rows) - len(busiest)

    def _connections(self, now: float) -> tuple[list[dict[str, Any]], int]:
        connected = list(self.runtime.connections())
        # The ones most behind first (a slow consumer shows), then the oldest.
        busiest = heapq.nlargest(
            MAX_ROWS,
            connected,
            key=lambda client: (client.session.transport.queued, now - client.since),
        )
        rows = []
        for client in busiest:
            session = client.session
            topics = session.topics
            rows.append(
                {
                    "id": session.id,
                    "transport": transport_kind(session.transport),
                    "remote": describe_remote(client.remote),
                    "observer": client.observer,
                    "topics": list(topics[:MAX_TOPICS_PER_CONNECTION]),
                    "topic_count": len(topics),
                    "outbox": session.transport.queued,
                    "mailbox": session.ref.mailbox_depth,
                    "age": round(now - client.since, 1),
                }
            )
        return rows, len(connected) - len(rows)


def _topic_name(key: Hashable) -> str | None:
    """The topic a registry name is the actor of, or None for another name."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str):
        name = key[1]
        if key == topic_name_key(name):
            return name
    return None


def _rate(count: int, elapsed: float | None) -> float | None:
    if elapsed is None or elapsed <= 0:
        return None
    return round(count / elapsed, 1)


def _actor(info: actors.ActorInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "child_id": str(info.child_id),
        "kind": info.kind,
        "state": info.state,
        "mailbox": info.mailbox_depth,
        "capacity": info.mailbox_capacity,
        "dropped": info.dropped,
        "restarts": info.restarts,
        "children": [_actor(child) for child in info.children],
        "more": info.more_children,
    }


def _crash(report: actors.CrashReport) -> dict[str, Any]:
    return {
        "actor": report.actor,
        "supervisor": report.supervisor,
        "restart": report.restart,
        "at": report.wall_time,
        "error": report.error,
        "traceback": report.traceback[-TRACEBACK_CHARS:],
    }
