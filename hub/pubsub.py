"""This node's fan-out: a topic's records to the sessions here that joined it.

A session is added when its join is accepted and removed when it leaves or
ends. The node subscribes to a topic on the backplane when its first local
member arrives and unsubscribes when its last one leaves: one subscription
per node per topic, never one per connection. Each record that arrives is
encoded once per codec in use here (`Outbound`) and handed to every local
member without waiting on any of them (a member too far behind is evicted
by its session).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs

import actors
from hub.backplane import Backplane, Record
from hub.protocol import Codec
from hub.topics.messages import Subscriber, outbound_for

if TYPE_CHECKING:
    from hub.metrics import HubMetrics

__all__ = ["Fanout"]


@attrs.define(eq=False)
class _LocalTopic:
    """The members of one topic on this node, and how many use each codec."""

    members: dict[str, Subscriber] = attrs.Factory(dict)
    codecs: dict[Codec, int] = attrs.Factory(dict)
    #: Holds on the subscription without a member (a relay's, `Fanout.hold`).
    holds: int = 0
    #: Records fanned out here since the node subscribed (the observer's rates).
    records: int = 0


@attrs.define(eq=False)
class Fanout:
    """The sessions on this node per topic (see the module docstring)."""

    backplane: Backplane
    metrics: HubMetrics | None = None
    _topics: dict[str, _LocalTopic] = attrs.Factory(dict)

    def add(self, topic: str, member_id: str, subscriber: Subscriber) -> None:
        """Deliver `topic`'s records to `subscriber` from now on."""
        local = self._subscribed(topic)
        if member_id in local.members:
            return
        local.members[member_id] = subscriber
        codec = subscriber.codec
        local.codecs[codec] = local.codecs.get(codec, 0) + 1

    def remove(self, topic: str, member_id: str) -> None:
        """Stop delivering `topic` to the member; the last one out unsubscribes the node."""
        local = self._topics.get(topic)
        if local is None:
            return
        subscriber = local.members.pop(member_id, None)
        if subscriber is None:
            return
        local.members = actors.compacted(local.members)
        codec = subscriber.codec
        left = local.codecs[codec] - 1
        if left:
            local.codecs[codec] = left
        else:
            del local.codecs[codec]
        self._unsubscribe_if_unused(topic, local)

    def hold(self, topic: str) -> None:
        """Subscribe the node to `topic` now, before any member is added, until `unhold`.

        A relay (`hub.cluster`) holds its topic from its start, so that the
        broadcasts that follow a member's join reply are not published before
        this node listens.
        """
        self._subscribed(topic).holds += 1

    def unhold(self, topic: str) -> None:
        """Let go of a `hold`; the node unsubscribes once no hold and no member is left."""
        local = self._topics.get(topic)
        if local is None or not local.holds:
            return
        local.holds -= 1
        self._unsubscribe_if_unused(topic, local)

    def _subscribed(self, topic: str) -> _LocalTopic:
        """This node's table of `topic`, subscribing the node to it first if it has none."""
        local = self._topics.get(topic)
        if local is None:
            local = self._topics[topic] = _LocalTopic()
            self.backplane.subscribe(topic, functools.partial(self._deliver, local))
        return local

    def _unsubscribe_if_unused(self, topic: str, local: _LocalTopic) -> None:
        """The last member or hold gone: the node lets go of `topic`."""
        if not local.members and not local.holds:
            del self._topics[topic]
            self.backplane.unsubscribe(topic)

    def local_members(self, topic: str) -> int:
        """How many sessions on this node receive `topic`."""
        local = self._topics.get(topic)
        return 0 if local is None else len(local.members)

    def records(self, topic: str) -> int:
        """How many of `topic`'s records this node fanned out since it subscribed."""
        local = self._topics.get(topic)
        return 0 if local is None else local.records

    def _deliver(self, local: _LocalTopic, record: Record) -> None:
        local.records += 1
        outbound = outbound_for(record, local.codecs, self.metrics)
        excluded = record.exclude
        # Delivering never removes a member synchronously (an evicted
        # session leaves when its actor has ended), so no copy is needed.
        for member_id, subscriber in local.members.items():
            if member_id != excluded:
                subscriber.deliver(outbound)
