"""The Redis backplane: topics' history and fan-out shared by every node on one Redis (or Valkey).

Each node (a hub process) keeps one command connection and one pub/sub
connection, whatever its number of clients:

- `publish` never waits: a kept record is delivered to this node's own
  subscribers at once and queued, with every other command, for the writer
  task, which sends whatever has queued up in one pipelined round trip. A
  Lua script appends it to the topic's stream (its history, the record's
  offset as the entry's id, trimmed to `history_size`) and publishes it on
  the topic's channel, both or neither, so history and live delivery never
  disagree.
- `subscribe` is this node's interest in a topic, taken once when its first
  local member joins: one SUBSCRIBE on the shared pub/sub connection. The
  reader task hands each record to the topic's local fan-out, in the order
  Redis published them; records this node published itself were delivered
  locally already and are skipped.

A topic's history position (epoch, last offset, how many owners run it, when
an unowned history expires) lives in one hash per topic. The epoch changes
when an unowned history has outlived its retention: a client coming back with
the old epoch is told that what it missed is gone. Offsets are given out by
the topic's owner, one node at a time, and checked again by the script.

For the cluster (`hub.cluster`): a topic's lease is a key holding its
owner's node id, set with an expiry and renewed by that node; a node's
heartbeat is a key that expires unless renewed; messages for one node go on
its own channel, on the same pub/sub connection as the topics' (so a node
reads everything in the order Redis published it, and one node's messages to
another follow the records it published before them: one command connection).

A node's messages to another reach it in the order sent, once each: they are
numbered (its node drops one it had), and one that reached no one (its node
not subscribed at that moment) is held and sent again, and every later one
to that node waits behind it (`send_to_node`, `_NODE_PUBLISH`).

Keys, under `prefix` (default "triohub"): `<prefix>:pos:<topic>` (hash),
`<prefix>:hist:<topic>` (stream), `<prefix>:owner:<topic>` (a topic's lease),
`<prefix>:alive:<node>` (a node's heartbeat), `<prefix>:held:<node>:<to>`
(node's messages to node `to` are held: later ones wait); channels
`<prefix>:topic:<topic>` and `<prefix>:node:<node>`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import attrs
import msgpack
import trio

from hub.backplane.base import (
    MAX_HISTORY_READ,
    Backplane,
    BackplaneStats,
    Deliver,
    History,
    NodeHandler,
    Position,
    Record,
)
from hub.backplane.local import DEFAULT_HISTORY_SIZE, DEFAULT_RETENTION_SECONDS, new_epoch

__all__ = ["RedisBackplane", "RedisUnavailableError"]

logger = logging.getLogger(__name__)

# Commands queued for the writer beyond this are refused (publish drops and
# counts them): a Redis that stalls must not grow the node without bound.
MAX_QUEUED: Final = 100_000

# Most commands sent in one pipelined round trip.
MAX_BATCH: Final = 1_000

# How long to wait between attempts to reach Redis, at most.
MAX_RECONNECT_DELAY: Final = 5.0

# How long a stopping node may take to send what it queued (its last records,
# its leases given back) before its connections close.
STOP_FLUSH_SECONDS: Final = 2.0

# How often an idle node checks that Redis still answers, in seconds.
PING_INTERVAL: Final = 1.0

# How long one round trip to Redis (a pipelined batch, a PING) may take, by
# the wall clock, before Redis counts as gone (`call_timeout`): a Redis that
# accepts and never answers must not hold the topic actors waiting on it.
CALL_TIMEOUT_SECONDS: Final = 10.0

# How often the watchdog looks at the round trips in flight, at most.
_WATCH_INTERVAL: Final = 0.5

# How long node messages that reached no one are held and sent again, at
# most, in seconds. A node's pub/sub connection is down for a moment after
# an outage (it subscribes again); a node silent for longer is dead to the
# cluster (its lease and heartbeat run out sooner: hub.cluster), and what
# was held for it is dropped (counted in `dropped_node_messages`).
NODE_MESSAGE_HOLD_SECONDS: Final = 30.0

# Most node messages held for one node. While Redis is away none can be sent
# again, and the time limit above is only looked at when Redis answers: this
# bounds what piles up meanwhile (past it, the newest are dropped, counted).
MAX_HELD_NODE_MESSAGES: Final = 10_000

# How often held node messages are tried again, in seconds.
_RESEND_INTERVAL: Final = 0.05

# How many of each sender's latest node message numbers a node remembers, to
# act on each message once: one sent again (its round trip failed after Redis
# ran it) is dropped. Past a whole batch sent again (MAX_BATCH), and past the
# reordering a node of an older version could make (it had no held mark,
# `_NODE_PUBLISH`): a message that overtook an earlier one is still new.
_SEEN_WINDOW: Final = 4 * 1_000

# The key layout's version, so that a later layout can live beside this one.
_LAYOUT: Final = 1


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached, or did not answer in time."""


# The expiry rule shared by every script that reads a position: an unowned
# history whose retention has passed is dropped, and a new epoch starts.
_LOAD_POSITION = """
local pos, hist = KEYS[1], KEYS[2]
local now, fresh_epoch, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local h = redis.call('HMGET', pos, 'epoch', 'offset', 'owners', 'expires')
local epoch, offset = h[1], tonumber(h[2] or '0')
local owners, expires = tonumber(h[3] or '0'), tonumber(h[4] or '-1')
if (not epoch) or (owners <= 0 and expires >= 0 and expires <= now) then
  redis.call('DEL', hist)
  epoch, offset = fresh_epoch, 0
  if owners <= 0 then
    owners, expires = 0, now + retention
  end
  redis.call('HSET', pos, 'epoch', epoch, 'offset', 0, 'owners', owners, 'expires', expires)
end
"""

# ARGV: now, fresh epoch, retention -> {epoch, offset}
_POSITION = _LOAD_POSITION + "return {epoch, offset}\n"

# ARGV: now, fresh epoch, retention, after, limit -> {epoch, offset, first kept, entries}
_HISTORY = (
    _LOAD_POSITION
    + """
local after, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local first = redis.call('XRANGE', hist, '-', '+', 'COUNT', 1)
local first_kept = offset + 1
if #first > 0 then first_kept = tonumber(string.match(first[1][1], '^(%d+)')) end
local entries = redis.call('XRANGE', hist, (after + 1) .. '-0', '+', 'COUNT', limit + 1)
local records = {}
for i, entry in ipairs(entries) do records[i] = entry[2][2] end
return {epoch, offset, first_kept, records}
"""
)

# KEYS: position, history, channel, lease
# ARGV: now, fresh epoch, retention, epoch, offset, maxlen, record, message, node
#
# Only the lease's holder appends (fencing): a node whose lease lapsed and
# was taken by another (it stalled, or lost Redis for longer than a lease)
# is refused until it learns so at its next renewal and stops the topic; its
# offsets would otherwise take the new owner's, whose appends Redis would
# then refuse. A lease nobody holds (it expired, or Redis restarted empty)
# does not refuse: its owner takes it again at its next renewal.
# A position that is gone while its owner publishes means Redis lost its data
# (a restart without persistence): the owner's position is the truth, and the
# history starts again at this record, in the owner's epoch (what was kept
# before is gone, and clients that missed it are told: not recovered). The
# very record already appended (a round trip that failed after Redis applied
# it, sent again) is skipped; another record at its offset is refused.
_APPEND = (
    """
local leased = redis.call('GET', KEYS[4])
if leased and leased ~= ARGV[9] then
  return redis.error_reply('NOT_OWNER ' .. leased)
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[4], 'offset', tonumber(ARGV[5]) - 1,
             'owners', 1, 'expires', -1)
end
"""
    + _LOAD_POSITION
    + """
local want_epoch, want_offset = ARGV[4], tonumber(ARGV[5])
if epoch == want_epoch and want_offset <= offset then
  local kept = redis.call('XRANGE', hist, want_offset .. '-0', want_offset .. '-0')
  if #kept > 0 and kept[1][2][2] == ARGV[7] then return want_offset end
end
if epoch ~= want_epoch or want_offset ~= offset + 1 then
  return redis.error_reply('OUT_OF_SEQUENCE ' .. epoch .. ':' .. offset)
end
redis.call('XADD', hist, 'MAXLEN', ARGV[6], want_offset .. '-0', 'r', ARGV[7])
redis.call('HSET', pos, 'offset', want_offset)
redis.call('PUBLISH', KEYS[3], ARGV[8])
return want_offset
"""
)

# ARGV: (none) -- an owner has started: the history is kept while it runs.
_CLAIM = """
redis.call('HINCRBY', KEYS[1], 'owners', 1)
redis.call('HSET', KEYS[1], 'expires', -1)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
return 1
"""

# ARGV: now, retention, gc ms -- an owner has stopped.
_RELEASE = """
local owners = redis.call('HINCRBY', KEYS[1], 'owners', -1)
if owners <= 0 then
  redis.call('HSET', KEYS[1], 'owners', 0, 'expires', tonumber(ARGV[1]) + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return owners
"""


# ARGV: node, ttl ms -> the holder: take the lease if free or ours.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""

# ARGV: node, ttl ms -> the indexes (1-based) of the KEYS another node holds.
# A lease that expired meanwhile (Redis restarted empty, say) is taken again.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if (not holder) or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""

# ARGV: node -- give the lease back if it is still ours.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: any -> their values (MGET, as a script so that it is queued like the rest).
_READ = "return redis.call('MGET', unpack(KEYS))\n"

# ARGV: ttl ms -- this node is alive.
_HEARTBEAT = "return redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"

# ARGV: message -> how many subscribers got it (a PUBLISH whose count is read).
_PUBLISH = "return redis.call('PUBLISH', KEYS[1], ARGV[1])"

# KEYS: the node's channel, the held mark (this node's messages to it)
# ARGV: message, the mark's ttl ms -> how many got it (0: held, to be sent again)
#
# Why the order of one node's messages to another is kept by the sender, here:
# pub/sub tells only the sender, and only by PUBLISH's count, that a message
# reached no one (its node not subscribed at that moment, coming back after an
# outage), and the sender holds it and everything after it to that node
# (`_hold`). But it learns the count only when the whole pipelined round trip
# is answered, and Redis may run the node's SUBSCRIBE between two commands of
# that round trip: the first would reach no one, the next its node, before the
# first sent again. So the check is made in Redis, with the PUBLISH, in one
# script (atomic): a message that reached no one sets the mark, and a later
# one sees it and is not published (0: held behind the first, in order). The
# receiver could not do it: it cannot tell a message held at its sender from
# one that will never come (messages are numbered per sender, across all the
# nodes it sends to), so it would have to wait out each gap; and the wire
# stays as it was (a rolling upgrade mixes nodes freely).
#
# The mark needs to live only while the rest of its round trip may still run
# (the sender holds what follows, once answered): it expires after the hold
# time, or the round trip's timeout if longer, and the first message sent
# again that reaches the node clears it (`_NODE_RESEND`).
_NODE_PUBLISH = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local received = redis.call('PUBLISH', KEYS[1], ARGV[1])
if received == 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return received
"""

# KEYS, ARGV: as _NODE_PUBLISH's -- the oldest held message, sent again whatever
# the mark says (it is first in line: nothing to that node is sent meanwhile).
_NODE_RESEND = """
local received = redis.call('PUBLISH', KEYS[1], ARGV[1])
if received > 0 then redis.call('DEL', KEYS[2]) end
return received
"""

# What marks a request (`RedisBackplane.request`) among a topic's records.
_REQUEST: Final = "request"


@attrs.define(eq=False)
class _Command:
    """One queued command; `done` is set once its `result` (or `error`) is in."""

    script: str
    keys: list[str]
    args: list[Any]
    done: trio.Event | None = None
    result: Any = None
    error: BaseException | None = None
    #: The node a node message is for (`send_to_node`): held if it reaches no one.
    #: Its message is then `args[0]`.
    node: str | None = None


@attrs.define
class _Seen:
    """The node message numbers one sender's latest messages had (`_SEEN_WINDOW`)."""

    highest: int = 0
    numbers: set[int] = attrs.Factory(set)
    heard: float = 0.0

    def first_time(self, number: int, now: float) -> bool:
        """Whether message `number` is new (not had before); remember it if so."""
        self.heard = now
        if number <= self.highest - _SEEN_WINDOW or number in self.numbers:
            return False
        self.numbers.add(number)
        if number > self.highest:
            self.highest = number
            if len(self.numbers) > 2 * _SEEN_WINDOW:
                floor = self.highest - _SEEN_WINDOW
                self.numbers = {seen for seen in self.numbers if seen > floor}
        return True


def _brief(error: BaseException) -> str:
    """An error in one line: coredis's messages can carry whole exception groups."""
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _encode_record(record: Record) -> bytes:
    data: bytes = msgpack.packb(
        [
            record.event,
            record.payload,
            record.epoch,
            record.offset,
            record.exclude,
            record.latest_only,
            # How each member gets it (docs/services.md#delivery): its
            # latest-value key and whether it is volatile.
            record.key,
            record.volatile,
        ],
        use_bin_type=True,
    )
    return data


def _decode_record(topic: str, data: bytes) -> Record:
    fields = msgpack.unpackb(data, raw=False)
    # Six fields: a record of a hub from before delivery modes (no key, not volatile).
    event, payload, epoch, offset, exclude, latest_only, key, volatile = (
        fields if len(fields) == 8 else [*fields, None, False]
    )
    if not (
        isinstance(event, str)
        and isinstance(epoch, str)
        and (offset is None or (isinstance(offset, int) and not isinstance(offset, bool)))
        and (exclude is None or isinstance(exclude, str))
        and isinstance(latest_only, bool)
        and (key is None or isinstance(key, str))
        and isinstance(volatile, bool)
    ):
        raise ValueError(f"not a record of topic {topic!r}: {fields!r:.200}")
    return Record(topic, event, payload, epoch, offset, exclude, latest_only, key, volatile)


@attrs.define(eq=False)
class RedisBackplane(Backplane):
    """The backplane on a Redis or Valkey server at `url` (see the module docstring).

    Run its tasks with `await nursery.start(backplane.run)` before use; it is
    ready at once and connects in the background, retrying with backoff
    (`healthy` says when Redis answers; what is queued meanwhile waits).
    `clock` is the time the retention is measured in: wall-clock seconds,
    the same on every node (tests pass trio's clock).
    """

    url: str
    history_size: int = DEFAULT_HISTORY_SIZE
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    prefix: str = "triohub"
    clock: Callable[[], float] = time.time
    #: This node's id, in every record it publishes (so it skips its own).
    node: str = attrs.Factory(lambda: secrets.token_hex(8))
    #: How long one round trip may take, in wall-clock seconds (measured
    #: with time.monotonic, not trio's clock: a test's autojump clock would
    #: fire a trio timeout while Redis is still answering).
    call_timeout: float = CALL_TIMEOUT_SECONDS
    _client: Any = attrs.field(default=None, init=False)
    _pubsub: Any = attrs.field(default=None, init=False)
    _queue: deque[_Command] = attrs.field(factory=deque, init=False)
    _wakeup: trio.Event = attrs.field(factory=trio.Event, init=False)
    _subscribers: dict[str, Deliver] = attrs.field(factory=dict, init=False)
    # Channel subscriptions to change, in order: (topic, subscribe?).
    _subscriptions: deque[tuple[str, bool]] = attrs.field(factory=deque, init=False)
    _subscriptions_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The owner's view of its topics' positions, for `publish`'s check.
    _positions: dict[str, Position] = attrs.field(factory=dict, init=False)
    _scripts: dict[str, str] = attrs.field(factory=dict, init=False)
    #: Records refused because too much was queued (Redis too slow or away).
    dropped: int = attrs.field(default=0, init=False)
    #: Writes Redis refused or that a lost connection took (each logged).
    failed_writes: int = attrs.field(default=0, init=False)
    #: Whether Redis answered the last round trip.
    connected: bool = attrs.field(default=False, init=False)
    _channel_prefix: bytes = attrs.field(default=b"", init=False)
    _health_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _stopping: trio.Event = attrs.field(factory=trio.Event, init=False)
    # Whether the pub/sub connection is up and subscribed (`connected` is the command one's).
    _listening: bool = attrs.field(default=False, init=False)
    _stopped: trio.Event = attrs.field(factory=trio.Event, init=False)
    _node_handler: NodeHandler | None = attrs.field(default=None, init=False)
    _node_channel: bytes = attrs.field(default=b"", init=False)
    # Whether the writer has a batch out, and the event of its end.
    _sending: bool = attrs.field(default=False, init=False)
    _sent: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: Told of each request sent to a topic this node subscribes to (`request`),
    #: with the topic and the request's bytes; must not wait.
    on_request: Callable[[str, bytes], None] | None = attrs.field(default=None, init=False)
    # The topics whose subscriptions Redis has confirmed (`wait_subscribed`).
    _subscribed: set[str] = attrs.field(factory=set, init=False)
    _subscribed_changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The round trips in flight: their cancel scopes and wall-clock deadlines.
    _in_flight: dict[trio.CancelScope, float] = attrs.field(factory=dict, init=False)
    # Node messages that reached no one, per node, in order, and since when
    # (time.monotonic) the oldest has waited; sent again by `_resend_held`.
    _held: dict[str, deque[bytes]] = attrs.field(factory=dict, init=False)
    _held_since: dict[str, float] = attrs.field(factory=dict, init=False)
    _held_waiting: trio.Event = attrs.field(factory=trio.Event, init=False)
    # What was logged of the nodes whose messages are held, (node, what), so
    # that it is logged once for each time they are held.
    _held_warned: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    #: Node messages dropped after NODE_MESSAGE_HOLD_SECONDS without reaching their node.
    dropped_node_messages: int = attrs.field(default=0, init=False)
    #: Messages on a topic's or this node's channel that did not decode
    #: (not sent by a node of this version), and publish requests refused
    #: (`hub.publish_requests`: not one, or naming no publisher to answer).
    refused_messages: int = attrs.field(default=0, init=False)
    #: Node messages had already (sent again after a round trip Redis ran), dropped.
    duplicate_node_messages: int = attrs.field(default=0, init=False)
    # The number of the next node message this node sends (any node).
    _node_message_number: int = attrs.field(default=0, init=False)
    # Per node heard from: the numbers of its latest messages (`_Seen`).
    _seen: dict[str, _Seen] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.history_size < 0:
            raise ValueError(f"history_size must be >= 0, got {self.history_size}")
        if self.retention_seconds < 0:
            raise ValueError(f"retention_seconds must be >= 0, got {self.retention_seconds}")
        self._channel_prefix = f"{self.prefix}:topic:".encode()
        self._node_channel = self._node_channel_of(self.node)

    @property
    def kind(self) -> str:
        return "redis"

    @property
    def healthy(self) -> bool:
        """Whether both connections (commands, and subscriptions) are up."""
        return self.connected and self._listening

    def stats(self) -> BackplaneStats:
        return BackplaneStats(
            dropped=self.dropped,
            failed_writes=self.failed_writes,
            held_node_messages=sum(len(held) for held in self._held.values()),
            dropped_node_messages=self.dropped_node_messages,
            refused_messages=self.refused_messages,
            duplicate_node_messages=self.duplicate_node_messages,
        )

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self._health_changed_now()

    def _health_changed_now(self) -> None:
        self._health_changed.set()
        self._health_changed = trio.Event()

    async def wait_healthy(self, healthy: bool = True) -> None:
        """Return once Redis answers both connections (with False: once it does not)."""
        while self.healthy != healthy:
            await self._health_changed.wait()

    # --- keys ------------------------------------------------------------------------

    def _keys(self, topic: str) -> list[str]:
        return [f"{self.prefix}:pos:{topic}", f"{self.prefix}:hist:{topic}"]

    def _channel(self, topic: str) -> bytes:
        return self._channel_prefix + topic.encode()

    def _node_channel_of(self, node: str) -> bytes:
        return f"{self.prefix}:node:{node}".encode()

    def _lease_key(self, topic: str) -> str:
        return f"{self.prefix}:owner:{topic}"

    def _alive_key(self, node: str) -> str:
        return f"{self.prefix}:alive:{node}"

    def _held_key(self, node: str) -> str:
        return f"{self.prefix}:held:{self.node}:{node}"

    # --- the Backplane interface ----------------------------------------------------

    async def position(self, topic: str) -> Position:
        if not self.connected:
            # A topic cannot start without its history's position: its join
            # is answered at once (an error) rather than held until Redis is back.
            raise RedisUnavailableError(f"Redis at {self.url} is not connected")
        epoch, offset = await self._call(
            _POSITION, self._keys(topic), [self.clock(), new_epoch(), self.retention_seconds]
        )
        position = Position(epoch.decode(), int(offset))
        self._positions[topic] = position
        return position

    def publish(self, record: Record) -> None:
        topic = record.topic
        if record.offset is not None:
            position = self._positions.get(topic)
            if position is None:
                raise ValueError(
                    f"record {record.epoch}:{record.offset} of topic {topic!r} does not follow "
                    "a position this node read: only the topic's owner, which reads its "
                    "position first, publishes kept records"
                )
            if record.epoch != position.epoch or record.offset != position.offset + 1:
                raise ValueError(
                    f"record {record.epoch}:{record.offset} of topic {topic!r} does not "
                    f"follow {position.epoch}:{position.offset}"
                )
            self._positions[topic] = Position(position.epoch, record.offset)
        message = msgpack.packb([self.node, _encode_record(record)], use_bin_type=True)
        if record.offset is None:
            self._queue_command(_Command("PUBLISH", [], [self._channel(topic), message]))
        else:
            keys = [*self._keys(topic), self._channel(topic).decode(), self._lease_key(topic)]
            args = [
                self.clock(),
                new_epoch(),
                self.retention_seconds,
                record.epoch,
                record.offset,
                max(self.history_size, 1),
                _encode_record(record),
                message,
                self.node,
            ]
            self._queue_command(_Command(_APPEND, keys, args))
        deliver = self._subscribers.get(topic)
        if deliver is not None:
            deliver(record)

    def subscribe(self, topic: str, deliver: Deliver) -> None:
        if topic not in self._subscribers:
            self._subscribed.discard(topic)  # live again once Redis confirms
            self._subscriptions.append((topic, True))
            self._subscriptions_changed.set()
        self._subscribers[topic] = deliver

    def unsubscribe(self, topic: str) -> None:
        if self._subscribers.pop(topic, None) is not None:
            self._subscribed.discard(topic)
            self._subscriptions.append((topic, False))
            self._subscriptions_changed.set()

    async def history(self, topic: str, *, after: int, limit: int = MAX_HISTORY_READ) -> History:
        if not self.connected:
            # Not queued until Redis is back: the topic actor reading it
            # answers its client (not recovered, or an error) at once.
            raise RedisUnavailableError(f"Redis at {self.url} is not connected")
        epoch, offset, first_kept, entries = await self._call(
            _HISTORY,
            self._keys(topic),
            [self.clock(), new_epoch(), self.retention_seconds, after, limit],
        )
        position = Position(epoch.decode(), int(offset))
        records = [_decode_record(topic, data) for data in entries]
        if self.history_size == 0:
            records = []
        complete = (
            len(records) <= limit and int(first_kept) <= after + 1 and after <= position.offset
        )
        return History(position, records[:limit], complete)

    def claim(self, topic: str) -> None:
        self._queue_command(_Command(_CLAIM, self._keys(topic), []))

    def release(self, topic: str) -> None:
        self._positions.pop(topic, None)
        gc_ms = math.ceil((self.retention_seconds + 60.0) * 1000)
        self._queue_command(
            _Command(_RELEASE, self._keys(topic), [self.clock(), self.retention_seconds, gc_ms])
        )

    async def subscribed(self, topic: str) -> None:
        while topic not in self._subscribed:
            if topic not in self._subscribers:
                raise ValueError(f"this node is not subscribing to topic {topic!r}")
            await self._subscribed_changed.wait()

    # --- the cluster -------------------------------------------------------------------

    def send_to_node(self, node: str, message: bytes) -> None:
        # Numbered, so that its node acts on it once however often it is sent.
        self._node_message_number += 1
        message = msgpack.packb([self.node, self._node_message_number, message], use_bin_type=True)
        held = self._held.get(node)
        if held is not None:
            held.append(message)  # behind the ones not received yet: in order
            self._bound_held(node, held)
            return
        keys = [self._node_channel_of(node).decode(), self._held_key(node)]
        mark_ms = _ms(max(NODE_MESSAGE_HOLD_SECONDS, self.call_timeout))
        self._queue_command(_Command(_NODE_PUBLISH, keys, [message, mark_ms], node=node))

    def _hold(self, node: str, messages: list[bytes]) -> None:
        """Keep node messages that reached no one, to send again (`_resend_held`), in order.

        Pub/sub is fire and forget: a message published while its node is
        not subscribed (its connection to Redis lost, and not yet back) is
        gone, so the sender holds it. Messages to that node still queued
        are held behind it, and later ones too until the held are through;
        those of the same round trip reached no one either (`_NODE_PUBLISH`).
        """
        held = self._held.get(node)
        if held is None:
            held = self._held[node] = deque()
            self._held_since[node] = time.monotonic()
        held.extend(messages)
        queued = [command for command in self._queue if command.node == node]
        if queued:
            rest = [command for command in self._queue if command.node != node]
            self._queue.clear()  # in place: the writer holds this deque
            self._queue.extend(rest)
            held.extend(command.args[0] for command in queued)
        self._bound_held(node, held)
        self._held_waiting.set()

    def _bound_held(self, node: str, held: deque[bytes]) -> None:
        """Drop the newest of a node's held messages past MAX_HELD_NODE_MESSAGES (counted).

        Logged once for each time the node's held messages fill up (until
        they are through, or dropped after the hold time).
        """
        excess = len(held) - MAX_HELD_NODE_MESSAGES
        if excess > 0:
            for _ in range(excess):
                held.pop()
            self.dropped_node_messages += excess
            if self._first_warning(node, "full"):
                logger.warning(
                    "node %s is not listening: %d messages held for it, newer ones dropped",
                    node,
                    MAX_HELD_NODE_MESSAGES,
                )

    async def _resend_held(self) -> None:
        """Send held node messages again, oldest first, one at a time, until `aclose`."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on_stop, nursery.cancel_scope)
            while True:
                if not self._held:
                    self._held_waiting = trio.Event()
                    await self._held_waiting.wait()
                    continue
                await trio.sleep(_RESEND_INTERVAL)
                for node in list(self._held):
                    await self._resend_to(node)

    async def _resend_to(self, node: str) -> None:
        held = self._held[node]
        keys = [self._node_channel_of(node).decode(), self._held_key(node)]
        while held:
            try:
                receivers = await self._call(_NODE_RESEND, keys, [held[0]])
            except RedisUnavailableError:
                return  # Redis away: try again later
            except Exception as error:  # Redis refused it: as if it reached no one
                if self._first_warning(node, "refused"):
                    logger.warning(
                        "Redis at %s refused a message held for node %s: %s",
                        self.url,
                        node,
                        _brief(error),
                    )
                receivers = 0
            if receivers:
                held.popleft()
                self._held_since[node] = time.monotonic()
                continue
            if time.monotonic() - self._held_since[node] > NODE_MESSAGE_HOLD_SECONDS:
                self.dropped_node_messages += len(held)
                logger.warning(
                    "node %s has not listened for %.0f s: %d messages for it dropped",
                    node,
                    NODE_MESSAGE_HOLD_SECONDS,
                    len(held),
                )
                held.clear()
            else:
                return
        del self._held[node]
        del self._held_since[node]
        self._held_warned = {warned for warned in self._held_warned if warned[0] != node}

    def _first_warning(self, node: str, what: str) -> bool:
        """Whether `what` is new for `node` since its messages were held (remember it if so)."""
        if (node, what) in self._held_warned:
            return False
        self._held_warned.add((node, what))
        return True

    def on_node_message(self, handler: NodeHandler | None) -> None:
        self._node_handler = handler

    async def acquire_lease(self, topic: str, *, ttl: float) -> str:
        if not self.connected:
            raise RedisUnavailableError(f"Redis at {self.url} is not connected")
        holder = await self._call(_ACQUIRE, [self._lease_key(topic)], [self.node, _ms(ttl)])
        return str(holder.decode())

    async def renew_leases(self, topics: Sequence[str], *, ttl: float) -> list[str]:
        if not topics:
            return []
        topics = list(topics)
        keys = [self._lease_key(topic) for topic in topics]
        lost = await self._call(_RENEW, keys, [self.node, _ms(ttl)])
        return [topics[int(index) - 1] for index in lost]

    def release_lease(self, topic: str) -> None:
        self._queue_command(_Command(_RELEASE_LEASE, [self._lease_key(topic)], [self.node]))

    async def lease_holders(self, topics: Sequence[str]) -> list[str | None]:
        if not topics:
            return []
        values = await self._call(_READ, [self._lease_key(topic) for topic in topics], [])
        return [None if value is None else value.decode() for value in values]

    async def heartbeat(self, *, ttl: float) -> None:
        await self._call(_HEARTBEAT, [self._alive_key(self.node)], [_ms(ttl)])

    async def nodes_alive(self, nodes: Sequence[str]) -> list[bool]:
        if not nodes:
            return []
        values = await self._call(_READ, [self._alive_key(node) for node in nodes], [])
        return [value is not None for value in values]

    # --- beyond the interface: what the hub's Redis-backed parts use ---------------

    async def run_script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run the Lua `script` on Redis, in the next pipelined round trip; its answer.

        Raises RedisUnavailableError at once while Redis is away, or when it
        goes away or does not answer within `call_timeout`, and coredis's
        error for a script that fails.
        """
        if not self.connected:
            raise RedisUnavailableError(f"Redis at {self.url} is not connected")
        return await self._call(script, keys, args)

    async def request(self, topic: str, data: bytes) -> int:
        """Send `data` to the nodes subscribed to `topic`: how many nodes got it.

        Not a record: no node delivers it to a client; each hands it to its
        `on_request` (the hub's, for `hub publish` from outside the hub).
        """
        message = msgpack.packb([self.node, data, _REQUEST], use_bin_type=True)
        receivers = await self.run_script(_PUBLISH, [self._channel(topic).decode()], [message])
        return int(receivers)

    async def flush(self) -> None:
        """Return once everything published before has been written to Redis."""
        await self.run_script("return 1", [], [])  # queued behind them: answered after

    async def aclose(self) -> None:
        """Stop `run`'s loops and wait for its connections to close."""
        self._subscribers.clear()
        if self._client is None:
            return
        self._stopping.set()
        await self._stopped.wait()

    # --- the tasks ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then write queued commands and read subscribed channels until `aclose`.

        Reports ready once Redis answers. Stop it with `aclose()`, which lets
        the connections close in order; cancelling this task instead drops them.
        """
        import anyio
        import coredis  # the `redis` extra: only a hub on Redis needs it

        self._client = coredis.Redis.from_url(self.url, decode_responses=False)
        try:
            async with self._client:
                # Ready at once: a node whose Redis is away at its start serves
                # its own clients (degraded) while it keeps trying.
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_round_trips)
                    await self._wait_for_redis()
                    nursery.start_soon(self._write_until_stopped)
                    nursery.start_soon(self._listen)
                    nursery.start_soon(self._resend_held)
        except* anyio.ClosedResourceError:
            # coredis's clean-up fails when its tasks are cancelled around it
            # (this task cancelled instead of stopped with `aclose`). The
            # cancellation goes on; only that failure is not an error.
            if trio.current_effective_deadline() != -math.inf:
                raise
        self._stopped.set()

    async def _watch_round_trips(self) -> None:
        """Cut short every round trip past its deadline, until `aclose`.

        The writer and the listener wait on Redis inside `_answer_within`;
        this task, not a trio timeout, ends a wait that has gone on too
        long, by the wall clock, so that a test's autojump clock cannot.
        """
        interval = min(_WATCH_INTERVAL, self.call_timeout / 4)
        while not self._stopping.is_set():
            with trio.move_on_after(interval):
                await self._stopping.wait()
            now = time.monotonic()
            for scope, deadline in list(self._in_flight.items()):
                if now >= deadline:
                    scope.cancel()

    @contextlib.contextmanager
    def _answer_within(self) -> Iterator[None]:
        """Raise RedisUnavailableError if Redis takes over `call_timeout` to answer inside.

        coredis drops the connection of a round trip cut short (its
        `disconnect_on_cancellation`), so a reply that comes later is never
        read as the answer to the next command (the test checks this).
        """
        scope = trio.CancelScope()
        self._in_flight[scope] = time.monotonic() + self.call_timeout
        try:
            with scope:
                yield
        finally:
            del self._in_flight[scope]
        if scope.cancelled_caught:
            raise RedisUnavailableError(
                f"Redis at {self.url} did not answer within {self.call_timeout} s"
            )

    async def _write_until_stopped(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_then_cancel, nursery.cancel_scope)
            await self._write()

    async def _flush_then_cancel(self, scope: trio.CancelScope) -> None:
        """On `aclose`, let the writer send what is queued (bounded), then stop it."""
        await self._stopping.wait()
        with trio.move_on_after(STOP_FLUSH_SECONDS):
            while (self._queue or self._sending) and self.connected:
                await self._sent.wait()
        scope.cancel()

    async def _cancel_on_stop(self, scope: trio.CancelScope) -> None:
        await self._stopping.wait()
        scope.cancel()

    async def _listen(self) -> None:
        """Hold the pub/sub connection; after an outage, open it again and resubscribe."""
        from coredis.retry import NoRetryPolicy

        while not self._stopping.is_set():
            try:
                # No retries of coredis's own: a lost connection ends this
                # block, so that this node knows (it is degraded until it is
                # subscribed again) and what it missed meanwhile is seen to.
                async with self._client.pubsub(retry_policy=NoRetryPolicy()) as pubsub:
                    # What this node wants now, whatever changed while it was away.
                    self._subscriptions.clear()
                    self._subscribed.clear()
                    topics = set(self._subscribers)
                    # This node's own channel too: messages other nodes send it.
                    await pubsub.subscribe(
                        self._node_channel, *(self._channel(topic) for topic in topics)
                    )
                    self._subscribed_now(topics)
                    # Cancelled on `aclose` inside the pub/sub block, so that
                    # coredis closes it in order (it fails if cancelled itself).
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._cancel_on_stop, nursery.cancel_scope)
                        nursery.start_soon(self._apply_subscriptions, pubsub)
                        self._listening = True
                        self._health_changed_now()
                        await self._read(pubsub)
            except Exception as error:  # the connection to Redis was lost
                self._listening = False
                self._subscribed.clear()
                self._health_changed_now()
                logger.warning("Redis at %s: subscriptions lost (%s)", self.url, _brief(error))
                await self._wait_for_redis()

    async def _wait_for_redis(self) -> None:
        """Return once Redis answers a PING, or once `aclose` is asked (retrying with backoff)."""
        delay = 0.05
        while not self._stopping.is_set():
            try:
                with self._answer_within():
                    await self._client.ping()
            except Exception as error:  # any failure to connect: try again
                logger.warning(
                    "Redis at %s is not answering (%s); retrying", self.url, _brief(error)
                )
                with trio.move_on_after(delay):
                    await self._stopping.wait()
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
                continue
            self._set_connected(True)
            return

    def _queue_command(self, command: _Command) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            if command.done is not None:
                command.error = RedisUnavailableError(
                    f"{MAX_QUEUED} commands are waiting for Redis at {self.url}; try again"
                )
                command.done.set()
            return
        self._queue.append(command)
        self._wakeup.set()

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        command = _Command(script, keys, args, trio.Event())
        self._queue_command(command)
        assert command.done is not None
        await command.done.wait()
        if command.error is not None:
            raise command.error
        return command.result

    async def _write(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup = trio.Event()
                with trio.move_on_after(PING_INTERVAL):
                    await self._wakeup.wait()
                if not queue:
                    await self._ping()  # idle: notice an outage before a client does
                    continue
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
            self._sending = True
            try:
                await self._send(batch)
            finally:
                self._sending = False
                self._sent.set()
                self._sent = trio.Event()

    async def _ping(self) -> None:
        try:
            with self._answer_within():
                await self._client.ping()
        except Exception as error:
            if self.connected:
                logger.warning("Redis at %s stopped answering (%s)", self.url, _brief(error))
            self._set_connected(False)
            self._fail_calls()
            await self._wait_for_redis()
        else:
            self._set_connected(True)

    async def _send(self, batch: list[_Command]) -> None:
        results: list[Any] = []
        try:
            with self._answer_within():
                async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    for command in batch:
                        if command.script == "PUBLISH":
                            results.append(pipe.publish(*command.args))
                        else:
                            results.append(pipe.eval(command.script, command.keys, command.args))
        except Exception as error:  # Redis went away mid-batch
            self._set_connected(False)
            logger.warning("Redis at %s: a round trip failed (%s)", self.url, _brief(error))
            lost = RedisUnavailableError(f"Redis at {self.url} did not answer ({_brief(error)})")
            # Kept records go again, first and in order, once Redis is back
            # (appending one twice is harmless: the script skips it), so
            # that the history has no hole where the outage began. The rest
            # (live-only records, reads) are not sent twice.
            again = [command for command in batch if command.script is _APPEND]
            self._queue.extendleft(reversed(again))
            # Node messages, too, are held to go again (one Redis ran before
            # it went away reaches its node twice, which acts on it once:
            # they are numbered, `_node_message`).
            self._hold_unreceived(batch, [0] * len(batch))
            for command in batch:
                if command.script is not _APPEND and command.node is None:
                    self._finish(command, None, lost)
            self._fail_calls()
            await self._wait_for_redis()
            return
        self._set_connected(True)
        values: list[Any] = []
        for command, pending in zip(batch, results, strict=True):
            try:
                value = await pending
            except Exception as error:
                values.append(None)
                self._finish(command, None, error)
            else:
                values.append(value)
                if command.node is None:
                    self._finish(command, value, None)
        self._hold_unreceived(batch, values)

    def _hold_unreceived(self, batch: list[_Command], receivers: list[Any]) -> None:
        """Hold the batch's node messages that no node received (PUBLISH answered 0)."""
        unreceived: dict[str, list[bytes]] = {}
        for command, count in zip(batch, receivers, strict=True):
            if command.node is not None and not count:
                unreceived.setdefault(command.node, []).append(command.args[0])
        for node, messages in unreceived.items():
            self._hold(node, messages)

    def _fail_calls(self) -> None:
        """Answer the reads waiting in the queue with RedisUnavailableError (Redis went away).

        Their callers (a topic reading a joiner's history, a `$history`
        call) answer their clients now rather than wait for Redis to come
        back; the writes stay queued, to be sent when it does.
        """
        if not any(command.done is not None for command in self._queue):
            return
        lost = RedisUnavailableError(f"Redis at {self.url} is not answering")
        queue = self._queue
        calls = [command for command in queue if command.done is not None]
        writes = [command for command in queue if command.done is None]
        queue.clear()  # in place: the writer holds this deque
        queue.extend(writes)
        for command in calls:
            self._finish(command, None, lost)

    def _finish(self, command: _Command, value: Any, error: BaseException | None) -> None:
        if command.done is None:
            if error is not None:
                self.failed_writes += 1
                logger.warning("a backplane write failed: %s", error)
            return
        command.result, command.error = value, error
        command.done.set()

    async def _read(self, pubsub: Any) -> None:
        prefix_length = len(self._channel_prefix)
        # Not `async for`: coredis ends that iteration while nothing is
        # subscribed. Read at once whatever arrives (its buffer is unbounded).
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True)
            if message is None or message["type"] != "message":
                continue
            if message["channel"] == self._node_channel:
                self._node_message(message["data"])
                continue
            try:
                topic = message["channel"][prefix_length:].decode()
                node, data, *kind = msgpack.unpackb(message["data"], raw=False)
                if node == self.node:
                    continue  # delivered locally when published
                if kind:  # a request from outside the hub (`request`), not a record
                    if kind == [_REQUEST] and self.on_request is not None:
                        self.on_request(topic, data)
                    continue
                deliver = self._subscribers.get(topic)
                record = None if deliver is None else _decode_record(topic, data)
            except Exception as error:  # whatever malformed bytes make msgpack or Record raise
                # Anything that can write to Redis can publish here: bytes no
                # node of this version sent are refused and counted, never
                # raised into this loop (which would drop the connection,
                # and the records behind them with it).
                self.refused_messages += 1
                logger.warning(
                    "Redis at %s: refused a message on %r: %s",
                    self.url,
                    message["channel"],
                    _brief(error),
                )
                continue
            if deliver is not None and record is not None:
                deliver(record)

    def _node_message(self, data: bytes) -> None:
        """Hand a message another node sent to the handler, once (`send_to_node`)."""
        try:
            sender, number, message = msgpack.unpackb(data, raw=False)
            if not (isinstance(sender, str) and isinstance(number, int)):
                raise ValueError(f"not a node message: {data!r:.100}")
        except Exception as error:  # whatever malformed bytes make msgpack raise
            self.refused_messages += 1
            logger.warning("Redis at %s: refused a node message: %s", self.url, _brief(error))
            return
        now = time.monotonic()
        seen = self._seen.get(sender)
        if seen is None:
            # A node not heard from for twice the hold time sends nothing again.
            for gone in [
                node
                for node, it in self._seen.items()
                if now - it.heard > 2 * NODE_MESSAGE_HOLD_SECONDS
            ]:
                del self._seen[gone]
            seen = self._seen[sender] = _Seen()
        if not seen.first_time(number, now):
            self.duplicate_node_messages += 1
            return
        handler = self._node_handler
        if handler is not None:
            handler(message)

    async def _apply_subscriptions(self, pubsub: Any) -> None:
        changes = self._subscriptions
        while True:
            if not changes:
                self._subscriptions_changed = trio.Event()
                await self._subscriptions_changed.wait()
            topic, wanted = changes.popleft()
            if wanted:
                await pubsub.subscribe(self._channel(topic))
                # Live unless a later change of it waits (an unsubscribe).
                if topic in self._subscribers and all(later != topic for later, _ in changes):
                    self._subscribed_now({topic})
            else:
                self._subscribed.discard(topic)
                await pubsub.unsubscribe(self._channel(topic))

    def _subscribed_now(self, topics: set[str]) -> None:
        self._subscribed |= topics
        self._subscribed_changed.set()
        self._subscribed_changed = trio.Event()

    async def wait_subscribed(self, topic: str) -> None:
        """Return once Redis has confirmed this node's subscription to `topic`."""
        while topic not in self._subscribed:
            await self._subscribed_changed.wait()
