"""The in-process backplane: one node, nothing to install (the default)."""

from __future__ import annotations

import heapq
import itertools
import math
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import trio

from actors import compacted
from hub.backplane.base import (
    MAX_HISTORY_READ,
    Backplane,
    Deliver,
    History,
    NodeHandler,
    Position,
    Record,
)

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_RETENTION_SECONDS",
    "LOCAL_NODE",
    "LocalBackplane",
    "new_epoch",
]

# Records kept per topic.
DEFAULT_HISTORY_SIZE: Final = 100

# How long a topic's history outlives its owner (the topic actor's idle stop).
DEFAULT_RETENTION_SECONDS: Final = 300.0

# The one node of an in-process backplane.
LOCAL_NODE: Final = "local"

_epoch_counter = itertools.count(1)


def new_epoch() -> str:
    """A fresh epoch: unique in this process, and unlikely to repeat across restarts."""
    return f"{secrets.token_hex(4)}{next(_epoch_counter):x}"


@attrs.define(eq=False)
class _Stream:
    """One topic's history: its epoch, the last offset given out, what is kept."""

    epoch: str
    records: deque[Record]
    offset: int = 0
    owners: int = 0
    #: When the history is dropped if no owner claims it again; None while owned.
    expires_at: float | None = None


@attrs.define(eq=False)
class LocalBackplane(Backplane):
    """Topics' history in memory, delivered by plain calls within this process.

    `history_size` records are kept per topic; a topic nobody owns keeps its
    history for `retention_seconds`, then a later owner starts a new epoch.
    """

    history_size: int = DEFAULT_HISTORY_SIZE
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    clock: Callable[[], float] = trio.current_time
    _streams: dict[str, _Stream] = attrs.Factory(dict)
    _subscribers: dict[str, Deliver] = attrs.Factory(dict)
    #: Hears how many histories were dropped each time some are (`hub.trimmer`).
    on_expired: Callable[[int], None] | None = None
    # (expires_at, topic) of released streams; stale entries are skipped.
    _expiring: list[tuple[float, str]] = attrs.Factory(list)
    # Set when a release may have brought the next expiry forward.
    _released: trio.Event = attrs.Factory(trio.Event)
    _node_handler: NodeHandler | None = None

    def __attrs_post_init__(self) -> None:
        if self.history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {self.history_size}")
        if self.retention_seconds < 0:
            raise ValueError(f"retention_seconds must be >= 0, got {self.retention_seconds}")

    @property
    def topics_kept(self) -> int:
        """How many topics have a history kept now."""
        self._expire()
        return len(self._streams)

    def _stream(self, topic: str) -> _Stream:
        self._expire()
        stream = self._streams.get(topic)
        if stream is None:
            stream = self._streams[topic] = _Stream(new_epoch(), deque(maxlen=self.history_size))
        return stream

    def _expire(self) -> None:
        now = self.clock()
        expiring = self._expiring
        dropped = 0
        while expiring and expiring[0][0] <= now:
            expires_at, topic = heapq.heappop(expiring)
            stream = self._streams.get(topic)
            if stream is not None and stream.expires_at == expires_at and not stream.owners:
                del self._streams[topic]
                dropped += 1
        if dropped:
            self._streams = compacted(self._streams)
            if self.on_expired is not None:
                self.on_expired(dropped)

    async def serve_expiry(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Drop each released history when its retention is over, not at the next use; forever.

        Without it histories are dropped lazily, by the next call that
        touches the backplane, and what they held stays until then. Needs
        the default clock (trio's).
        """
        task_status.started()
        while True:
            self._expire()
            next_expiry = self._expiring[0][0] if self._expiring else math.inf
            with trio.move_on_at(next_expiry):
                await self._released.wait()
            self._released = trio.Event()

    async def position(self, topic: str) -> Position:
        await trio.lowlevel.checkpoint()
        stream = self._stream(topic)
        return Position(stream.epoch, stream.offset)

    def publish(self, record: Record) -> None:
        if record.offset is not None:
            stream = self._stream(record.topic)
            if record.epoch != stream.epoch or record.offset != stream.offset + 1:
                raise ValueError(
                    f"record {record.epoch}:{record.offset} of topic {record.topic!r} does not "
                    f"follow {stream.epoch}:{stream.offset}"
                )
            stream.offset = record.offset
            stream.records.append(record)
        deliver = self._subscribers.get(record.topic)
        if deliver is not None:
            deliver(record)

    def subscribe(self, topic: str, deliver: Deliver) -> None:
        self._subscribers[topic] = deliver

    def unsubscribe(self, topic: str) -> None:
        self._subscribers.pop(topic, None)

    async def history(self, topic: str, *, after: int, limit: int = MAX_HISTORY_READ) -> History:
        await trio.lowlevel.checkpoint()
        stream = self._stream(topic)
        position = Position(stream.epoch, stream.offset)
        kept = stream.records
        first_kept = kept[0].offset if kept else stream.offset + 1
        assert first_kept is not None
        records = [record for record in kept if record.offset is not None and record.offset > after]
        complete = len(records) <= limit and first_kept <= after + 1 and after <= stream.offset
        return History(position, records[:limit], complete)

    def claim(self, topic: str) -> None:
        stream = self._stream(topic)
        stream.owners += 1
        stream.expires_at = None

    def release(self, topic: str) -> None:
        stream = self._streams.get(topic)
        if stream is None or stream.owners == 0:
            return
        stream.owners -= 1
        if stream.owners == 0:
            stream.expires_at = self.clock() + self.retention_seconds
            heapq.heappush(self._expiring, (stream.expires_at, topic))
            self._released.set()
        self._expire()

    async def subscribed(self, topic: str) -> None:
        await trio.lowlevel.checkpoint()  # in process, a subscription holds at once

    # --- the cluster of one: this node runs every topic --------------------------

    @property
    def node(self) -> str:
        return LOCAL_NODE

    def send_to_node(self, node: str, message: bytes) -> None:
        if node != LOCAL_NODE:
            raise ValueError(f"an in-process backplane has one node, {LOCAL_NODE!r}, not {node!r}")
        if self._node_handler is not None:
            self._node_handler(message)

    def on_node_message(self, handler: NodeHandler | None) -> None:
        self._node_handler = handler

    async def acquire_lease(self, topic: str, *, ttl: float) -> str:
        await trio.lowlevel.checkpoint()
        return LOCAL_NODE

    async def renew_leases(self, topics: Sequence[str], *, ttl: float) -> list[str]:
        await trio.lowlevel.checkpoint()
        return []

    def release_lease(self, topic: str) -> None:
        return None  # nobody else could take it

    async def lease_holders(self, topics: Sequence[str]) -> list[str | None]:
        await trio.lowlevel.checkpoint()
        return [LOCAL_NODE for _ in topics]

    async def heartbeat(self, *, ttl: float) -> None:
        await trio.lowlevel.checkpoint()

    async def nodes_alive(self, nodes: Sequence[str]) -> list[bool]:
        await trio.lowlevel.checkpoint()
        return [node == LOCAL_NODE for node in nodes]
