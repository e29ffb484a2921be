"""The backplane seam: how a topic's events reach every node that serves its members.

A topic's owner (its actor, on one node) publishes `Record`s: serializable
values (topic, event, payload, offset, epoch), nothing that knows a socket
or a codec. The backplane keeps the ones with an offset as the topic's
history and hands every record, in publish order, to each node that
subscribed to the topic; each node then encodes it once per codec its own
clients use and writes it to them (`hub.pubsub`).

- `publish(record)` never waits: in process it is delivered at once; a Redis
  backplane queues it for a pipelined round trip that carries many.
- `subscribe(topic, deliver)` is a node's interest in a topic, taken once
  when its first local member joins (never once per connection), and
  `unsubscribe(topic)` when its last one leaves.
- `position(topic)` is where a topic's history stands: its epoch and last
  offset. A topic's owner reads it when it starts, so an emptied room that
  fills again carries on where it was.
- `history(topic, after=offset)` reads what was kept after an offset, bounded.

Across nodes (docs/deployment.md#ownership), each topic runs on one node at a
time: the node that holds its lease. The backplane gives the cluster what it
needs for that (`hub.cluster` decides what to do with it):

- `node` is this node's id; `send_to_node(node, message)` sends bytes to one
  node, whose `on_node_message` handler gets them, in the order sent; never waits.
- `acquire_lease(topic)` takes a topic's lease if it is free (or ours) and
  says who holds it; `renew_leases` renews this node's in one round trip
  and says which it lost; `release_lease` gives one back at once.
- `heartbeat` says this node is alive for a while; `nodes_alive` reads it.

The in-process backplane is the one-node case: it is always the owner.

Offsets count up from 1 within an epoch. An epoch names one incarnation of a
topic's history: when the history is dropped (nobody used the topic for
longer than the retention), the next one starts with a new epoch at offset
1, so a client that comes back with an old epoch, or with an offset older
than what is kept, can be told that what it missed is gone.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from hub.protocol import Payload

__all__ = [
    "MAX_HISTORY_READ",
    "Backplane",
    "BackplaneStats",
    "Deliver",
    "History",
    "NodeHandler",
    "Position",
    "Record",
    "Recovery",
    "recovery_for",
]

# How many records one `history` read returns at most.
MAX_HISTORY_READ: Final = 1000


@attrs.frozen
class Record:
    """One event published to a topic, as it crosses the backplane.

    `offset` is None for an event that is not kept (volatile, latest-value
    state). `exclude` is the id of one member who must not get it (the
    sender of a chat message that echoes locally). `key`: a member behind
    on this topic gets only the newest record per key (latest-value state;
    `latest_only` is the key `event`). `volatile`: a member with anything
    waiting to be written does not get it at all.
    """

    topic: str
    event: str
    payload: Payload
    epoch: str
    offset: int | None = None
    exclude: str | None = None
    latest_only: bool = False
    key: str | None = None
    volatile: bool = False


@attrs.frozen
class Position:
    """Where a topic's history stands: its epoch, and the last offset given out (0: none)."""

    epoch: str
    offset: int


@attrs.frozen
class History:
    """Records kept after an offset, oldest first.

    `complete` is False when some of what was asked for is no longer kept
    (the oldest kept offset is past `after` + 1) or the epoch has changed:
    the reader has missed events it cannot get back.
    """

    position: Position
    records: Sequence[Record]
    complete: bool


@attrs.frozen
class Recovery:
    """What a rejoining client missed, and whether it can have all of it.

    Given to a service's `joined` hook. `recovered` is True when the client
    named the current epoch and every record after its offset is still kept:
    `missed` then holds exactly those, in order. Otherwise the client must
    refetch its state; `missed` holds what is kept (the recent history).
    """

    recovered: bool
    position: Position
    missed: Sequence[Record]
    #: What the client said it had seen (None for a first join).
    epoch: str | None = None
    offset: int | None = None


def recovery_for(history: History, epoch: str | None, offset: int | None) -> Recovery:
    """Judge a rejoin with (`epoch`, `offset`) against `history` read after that offset."""
    recovered = (
        offset is not None
        and epoch == history.position.epoch
        and history.complete
        and offset <= history.position.offset
    )
    return Recovery(recovered, history.position, history.records, epoch, offset)


@attrs.frozen
class BackplaneStats:
    """A backplane's counts since it started (`Backplane.stats`), read at each metrics scrape."""

    #: Records refused because too much waited to be written (the other nodes away or slow).
    dropped: int = 0
    #: Writes the other side refused, or that a lost connection took.
    failed_writes: int = 0
    #: Messages for another node that reached no one yet, held to be sent again.
    held_node_messages: int = 0
    #: Messages for another node dropped: held as long as allowed, or too many for one node.
    dropped_node_messages: int = 0
    #: Messages on topic channels that did not decode (not a node of this version's),
    #: and requests on them refused (a publish request naming no publisher to answer).
    refused_messages: int = 0
    #: Messages from another node had already (sent again after all), dropped.
    duplicate_node_messages: int = 0


Deliver = Callable[[Record], None]

#: What a node does with a message another node sent it (`Backplane.send_to_node`).
NodeHandler = Callable[[bytes], None]


class Backplane(abc.ABC):
    """Pubsub and history for topics (see the module docstring)."""

    @abc.abstractmethod
    async def position(self, topic: str) -> Position:
        """The epoch and last offset of `topic`'s history (a new epoch if it has none)."""

    @abc.abstractmethod
    def publish(self, record: Record) -> None:
        """Keep `record` if it has an offset, and deliver it to every subscribed node.

        Never waits. Records of one topic are delivered in the order they
        were published. Raises ValueError for an offset that does not follow
        the topic's last one in its epoch: one owner gives out a topic's offsets.
        """

    @abc.abstractmethod
    def subscribe(self, topic: str, deliver: Deliver) -> None:
        """Deliver `topic`'s records to this node's `deliver` from now on (once per node)."""

    @abc.abstractmethod
    def unsubscribe(self, topic: str) -> None:
        """Stop delivering `topic`'s records to this node."""

    @abc.abstractmethod
    async def history(self, topic: str, *, after: int, limit: int = MAX_HISTORY_READ) -> History:
        """Read up to `limit` kept records of `topic` with offsets above `after`."""

    @abc.abstractmethod
    def release(self, topic: str) -> None:
        """The topic's owner has stopped: its history is kept for the retention time."""

    @abc.abstractmethod
    def claim(self, topic: str) -> None:
        """An owner has started for `topic`: its history is kept while it runs."""

    @abc.abstractmethod
    async def subscribed(self, topic: str) -> None:
        """Return once this node's subscription to `topic` takes effect (records reach it)."""

    # --- the cluster: nodes and who runs a topic (see the module docstring) ---------

    @property
    @abc.abstractmethod
    def node(self) -> str:
        """This node's id, unique among the nodes on one backplane."""

    @abc.abstractmethod
    def send_to_node(self, node: str, message: bytes) -> None:
        """Send `message` to node `node`'s handler; never waits.

        Messages to one node arrive in the order sent, and after the records
        this node published before them. A message to a node that is gone is lost.
        """

    @abc.abstractmethod
    def on_node_message(self, handler: NodeHandler | None) -> None:
        """Hand each message sent to this node to `handler` from now on (None: drop them)."""

    @abc.abstractmethod
    async def acquire_lease(self, topic: str, *, ttl: float) -> str:
        """Take `topic`'s lease for `ttl` seconds if nobody (or this node) holds it.

        Returns the node that holds it now: this node's id when taken.
        """

    @abc.abstractmethod
    async def renew_leases(self, topics: Sequence[str], *, ttl: float) -> list[str]:
        """Renew this node's leases on `topics` for `ttl` seconds; return those another holds."""

    @abc.abstractmethod
    def release_lease(self, topic: str) -> None:
        """Give `topic`'s lease back now, if this node holds it; never waits."""

    @abc.abstractmethod
    async def lease_holders(self, topics: Sequence[str]) -> list[str | None]:
        """Who holds each topic's lease now (None: nobody)."""

    @abc.abstractmethod
    async def heartbeat(self, *, ttl: float) -> None:
        """Say that this node is alive for the next `ttl` seconds."""

    @abc.abstractmethod
    async def nodes_alive(self, nodes: Sequence[str]) -> list[bool]:
        """Whether each node's last heartbeat still holds."""

    async def aclose(self) -> None:
        """Release what the backplane holds (connections to a server, say)."""
        return None

    @property
    def kind(self) -> str:
        """What carries the events, for /healthz and the metrics: "local", "redis"."""
        return "local"

    @property
    def healthy(self) -> bool:
        """Whether the other nodes can be reached now (always, in process)."""
        return True

    def stats(self) -> BackplaneStats:
        """What the backplane has lost or holds back so far, for the metrics (none, in process)."""
        return BackplaneStats()
