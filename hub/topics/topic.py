"""The topic as its service sees it: its name, members, history position, and the ways out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

import actors
from hub.backplane import Position, Record
from hub.protocol import EndCode, Payload
from hub.topics.messages import Member, MembershipEnded, outbound_for

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.presence import TopicPresence
    from hub.topics.hub_api import HubServices


@attrs.define(eq=False)
class TimerFired:
    """A service's timer (`Topic.send_after`, `Topic.every`) is due: `handle_timer` runs.

    A repeating timer's message carries its timer, so the topic's actor can
    tell how late each tick runs and how many were missed (`Topic.ticks`).
    """

    event: str
    payload: Payload
    timer: actors.Timer | None = None
    # The timer's `missed` when the actor last looked.
    missed_seen: int = 0


@attrs.define
class TickStats:
    """How a topic's repeating timers (`Topic.every`) keep their rate.

    A tick that comes due while the previous one still waits is counted in
    `missed`, never delivered late; `late` is how long after it was due the
    last tick's handler started.
    """

    #: Ticks handled so far.
    ticks: int = 0
    #: Ticks that came due while the previous one still waited (not delivered).
    missed: int = 0
    #: How late the last tick ran, in seconds.
    late: float = 0.0
    #: The latest any tick ran, in seconds.
    max_late: float = 0.0

    def record(self, late: float, missed: int) -> None:
        self.ticks += 1
        self.missed += missed
        self.late = late
        if late > self.max_late:
            self.max_late = late


@attrs.define(eq=False)
class Topic:
    """One live topic: its name, its members, and the ways to reach them.

    A service gets its Topic at construction and uses it from its handlers,
    which all run in the topic's actor: no locks are needed.
    """

    name: str
    # How a broadcast leaves: the backplane's publish.
    _publish: Callable[[Record], None] = attrs.field(repr=False)
    metrics: HubMetrics | None = attrs.field(default=None, repr=False)
    #: Where the topic's history stands: its epoch and the last kept offset.
    position: Position = attrs.field(factory=lambda: Position("", 0))
    #: The rest of the hub: publish to other topics, reach backend actors.
    hub: HubServices | None = attrs.field(default=None, repr=False)
    #: What the server gave the topic when it started it (`HubServices.start_topic`);
    #: None for a topic started by a member's join.
    init: Payload = None
    #: How its repeating timers keep their rate (see `every`).
    ticks: TickStats = attrs.Factory(TickStats)
    #: Who is present (`hub.presence.TopicPresence`), where the route keeps presence.
    presence: TopicPresence | None = attrs.field(default=None, repr=False)
    _members: dict[actors.ActorRef, Member] = attrs.Factory(dict)
    # Kicked since the topic actor last looked: it calls their `leave` and
    # drops its monitors once the current handler returns.
    _kicked: list[Member] = attrs.Factory(list)
    # The topic actor's context, for timers (set when the actor starts).
    _ctx: actors.Context | None = attrs.field(default=None, repr=False)

    @property
    def members(self) -> Mapping[actors.ActorRef, Member]:
        """The current members, by session, in join order.

        Read it within one hook: the topic may replace the mapping between
        hooks (when many have left, to give its memory back).
        """
        return self._members

    @property
    def offset(self) -> int:
        """The offset of the last event kept with `broadcast(..., keep=True)`."""
        return self.position.offset

    @property
    def epoch(self) -> str:
        """The epoch of the topic's history (see `hub.backplane`)."""
        return self.position.epoch

    def broadcast(
        self,
        event: str,
        payload: Payload = None,
        *,
        exclude: Member | None = None,
        keep: bool = False,
        latest_only: bool = False,
        key: str | None = None,
        volatile: bool = False,
    ) -> int | None:
        """Push `event` to every member (but `exclude`), on every node.

        Never waits on any member: a member too far behind is disconnected.
        Delivery, per event (docs/services.md#delivery):

        - reliable (the default): every member gets it, in order; with
          `keep`, it gets the topic's next offset (returned) and is kept in
          the topic's history, for members who rejoin after missing it.
        - latest-value, with `key` (game state per player, cursors): a
          member that has not yet been sent the previous push of the same
          key gets only this one, in the older one's place. Slow members
          see fewer updates instead of falling behind, and are not evicted
          for it. `latest_only=True` is `key=event`.
        - `volatile` (positions, effects): dropped, and counted, for a
          member with anything waiting to be written, rather than queued.

        A member whose codec cannot carry `payload` (bytes for a JSON
        client) misses the event.
        """
        if keep and (key is not None or latest_only or volatile):
            raise ValueError("a kept event is delivered reliably: no key, latest_only or volatile")
        offset: int | None = None
        if keep:
            offset = self.position.offset + 1
            self.position = Position(self.position.epoch, offset)
        self._publish(
            Record(
                self.name,
                event,
                payload,
                self.position.epoch,
                offset,
                exclude.id if exclude is not None else None,
                latest_only,
                key,
                volatile,
            )
        )
        return offset

    def push(
        self, member: Member, event: str, payload: Payload = None, *, offset: int | None = None
    ) -> None:
        """Push `event` to one member (history replay passes the event's `offset`)."""
        record = Record(self.name, event, payload, self.position.epoch, offset)
        member.connection.deliver(outbound_for(record, (member.connection.codec,), self.metrics))

    def push_each(self, members: Iterable[Member], event: str, payload: Payload = None) -> None:
        """Push `event` to each of `members`, encoded once per codec among them."""
        members = list(members)
        if not members:
            return
        codecs = tuple({member.connection.codec: None for member in members})
        record = Record(self.name, event, payload, self.position.epoch, None)
        outbound = outbound_for(record, codecs, self.metrics)
        for member in members:
            member.connection.deliver(outbound)

    def kick(self, member: Member, reason: str, *, code: str = EndCode.KICKED) -> None:
        """End `member`'s membership: the client gets an Ended frame with `code`."""
        if self._remove(member.connection.ref) is not None:
            member.connection.deliver(MembershipEnded(self.name, code, reason))
            self._kicked.append(member)

    def send_after(self, delay: float, event: str, payload: Payload = None) -> actors.Timer:
        """Call the service's `handle_timer(event, payload)` once, `delay` seconds from now.

        The timer is the topic's: cancelled when the topic ends. Returns it
        (`cancel()` stops it).
        """
        return self._context().send_after(delay, TimerFired(event, payload))

    def every(
        self, interval: float, event: str, payload: Payload = None, *, first: float | None = None
    ) -> actors.Timer:
        """Call `handle_timer(event, payload)` every `interval` seconds, at a fixed rate.

        The first call comes `first` seconds from now (`interval` by default).
        Topics that tick at one rate (matches) should each take a `first` of
        their own within the interval, so that their ticks do not all come
        due at the same instant and wait for one another.

        A tick that comes due while the previous one is still waiting is
        counted in the timer's `missed` (and `topic.ticks.missed`), not
        delivered late; how late each tick runs is in `topic.ticks` and the
        hub's `triohub_tick_lateness_seconds` histogram.
        """
        fired = TimerFired(event, payload)
        fired.timer = self._context().every(interval, fired, first=first)
        return fired.timer

    def _context(self) -> actors.Context:
        if self._ctx is None:
            raise RuntimeError("timers can be set once the topic's actor runs (from its hooks)")
        return self._ctx

    def _add(self, member: Member) -> None:
        self._members[member.connection.ref] = member

    def _remove(self, connection: actors.ActorRef) -> Member | None:
        member = self._members.pop(connection, None)
        # A table that held a crowd gives its memory back once it has left.
        self._members = actors.compacted(self._members)
        return member
