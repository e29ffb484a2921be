"""The topic as its service sees it: its name, its members, and the ways to reach them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

import actors
from hub.errors import EncodeError
from hub.protocol import Codec, EndCode, Payload, Push
from hub.topics.messages import Member, MembershipEnded, Outbound
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.metrics import HubMetrics


# --- the topic as its service sees it -----------------------------------------


@attrs.define(eq=False)
class Topic:
    """One live topic: its name, its members, and the ways to reach them.

    A service gets its Topic at construction and uses it from its handlers,
    which all run in the topic's actor: no locks are needed.
    """

    name: str
    metrics: HubMetrics | None = attrs.field(default=None, repr=False)
    #: The offset of the last event kept with `broadcast(..., keep=True)`.
    offset: int = 0
    _members: dict[actors.ActorRef, Member] = attrs.Factory(dict)
    # How many members use each codec: a broadcast encodes once per codec in
    # use without walking the members to find out which.
    _codecs: dict[Codec, int] = attrs.Factory(dict)
    # Kicked since the topic actor last looked: it calls their `leave` and
    # drops its monitors once the current handler returns.
    _kicked: list[Member] = attrs.Factory(list)

    @property
    def members(self) -> Mapping[actors.ActorRef, Member]:
        """The current members, by connection, in join order."""
        return self._members

    def broadcast(
        self,
        event: str,
        payload: Payload = None,
        *,
        exclude: Member | None = None,
        keep: bool = False,
        latest_only: bool = False,
    ) -> int | None:
        """Push `event` to every member (but `exclude`), encoded once per codec.

        Never waits on any member: a member too far behind is disconnected.
        With `keep`, the event gets the topic's next offset (returned), for
        services that keep history and replay it to rejoining clients. With
        `latest_only` (game state, cursors), a member that has not yet been
        sent the previous such event gets only this one: slow members see
        fewer updates instead of falling behind. A member whose codec cannot
        carry `payload` (bytes for a JSON client) misses the event.
        """
        offset: int | None = None
        if keep:
            self.offset += 1
            offset = self.offset
        outbound = self._encode(event, payload, offset, self._codecs, latest_only)
        excluded = exclude.connection.ref if exclude is not None else None
        for connection_ref, member in self._members.items():
            if connection_ref is not excluded:
                member.connection.deliver(outbound)
        return offset

    def push(
        self, member: Member, event: str, payload: Payload = None, *, offset: int | None = None
    ) -> None:
        """Push `event` to one member (history replay passes the event's `offset`)."""
        member.connection.deliver(
            self._encode(event, payload, offset, (member.connection.codec,), False)
        )

    def kick(self, member: Member, reason: str, *, code: str = EndCode.KICKED) -> None:
        """End `member`'s membership: the client gets an Ended frame with `code`."""
        if self._remove(member.connection.ref) is not None:
            member.connection.deliver(MembershipEnded(self.name, code, reason))
            self._kicked.append(member)

    def _add(self, member: Member) -> None:
        self._members[member.connection.ref] = member
        codec = member.connection.codec
        self._codecs[codec] = self._codecs.get(codec, 0) + 1

    def _remove(self, connection: actors.ActorRef) -> Member | None:
        member = self._members.pop(connection, None)
        if member is not None:
            codec = member.connection.codec
            left = self._codecs[codec] - 1
            if left:
                self._codecs[codec] = left
            else:
                del self._codecs[codec]
        return member

    def _encode(
        self,
        event: str,
        payload: Payload,
        offset: int | None,
        codecs: Iterable[Codec],
        latest_only: bool,
    ) -> Outbound:
        push = Push(self.name, event, payload, offset)
        messages: dict[Codec, Wire | None] = {}
        for codec in codecs:  # each codec once: the members' codecs, counted
            try:
                messages[codec] = Wire(codec.encode(push))
            except EncodeError:
                # Say, bytes published by a msgpack client: JSON members
                # cannot receive them, the others still do.
                messages[codec] = None
                if self.metrics is not None:
                    self.metrics.unencodable.inc()
        return Outbound(self.name, event, messages, latest_only)
