"""Presence subscriptions across nodes: a backend actor on one node, its topic on another.

A backend actor subscribes to a topic's presence (`HubRuntime.subscribe_presence`)
through the topic's actor on its own node. Where another node runs the topic,
that actor is the relay, and the subscription crosses to the owner as a
member does, Erlang-style: the owner subscribes a **stand-in** for it
(`serve_remote_subscriber`), an actor that the topic treats as it treats any
backend actor (the same limit, the same snapshot-first, the same stale
subscriber's snapshot), and that forwards what it receives to the
subscriber's node, numbered from 0 (`ToSubscriber`): the snapshot it
subscribed with, then each change, in the order the topic made them.

- On the owner, `RemoteSubscribers` keeps the stand-ins, by topic, node and
  subscription number. A stand-in ends when its subscriber unsubscribes or
  ends (its relay says so), when the topic ends, and when the subscriber's
  node stops beating (`ClusterNode`): the topic then drops it, and its place
  under `presence.max_subscribers` is free.
- On the subscriber's node, `RelaySubscriptions` (the relay's) answers the
  subscribe call with the snapshot and hands the subscriber each change. A
  change that cannot be used (a number skipped: a message lost between the
  nodes; or the subscriber's mailbox full) makes it stale: it gets nothing
  more until a snapshot, which the relay asks the owner for
  (`ResendFromNode`: the topic marks the stand-in stale) and hands it in
  place of what it missed; as from a topic to a local subscriber whose
  mailbox was full, the snapshot comes with the next change. When the
  relay ends (the topic ended, or its owner died: its lease lapsed), each
  subscriber gets an empty snapshot, as from a topic that ends; it
  subscribes again to reach whichever node runs the topic next.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs

import actors
from hub.cluster.errors import TopicElsewhereError
from hub.cluster.wire import (
    NodeMessage,
    ResendFromNode,
    SubscribeFromNode,
    ToSubscriber,
    UnsubscribeFromNode,
    users_from_wire,
    users_to_wire,
)
from hub.presence import (
    Diff,
    PresenceChanged,
    PresenceLimitError,
    PresenceSnapshot,
    ResendPresence,
    SubscribePresence,
    UnsubscribePresence,
)
from hub.topics.actor import TopicWithoutPresenceError

if TYPE_CHECKING:
    from hub.cluster.node import ClusterNode

__all__ = [
    "REMOTE_SUBSCRIBER_MAILBOX_CAPACITY",
    "PresenceFromOwner",
    "RelaySubscriptions",
    "RemoteSubscribers",
    "error_from_wire",
    "error_to_wire",
    "presence_from_owner",
    "serve_remote_subscriber",
]

# What the topic has cast to one remote subscriber's stand-in and the stand-in
# has not forwarded yet. When full, the topic marks the subscriber stale and
# sends it a whole snapshot at its next change instead (as to a local one).
REMOTE_SUBSCRIBER_MAILBOX_CAPACITY: Final = 64

# How long a stand-in waits for the topic to take its subscription.
SUBSCRIBE_TIMEOUT_SECONDS: Final = 5.0

# What a refused subscription's error is called between nodes.
_ERROR_KINDS: Final[dict[type[Exception], str]] = {
    PresenceLimitError: "limit",
    TopicWithoutPresenceError: "no_presence",
}
_ERROR_TYPES: Final = {kind: error_type for error_type, kind in _ERROR_KINDS.items()}


def error_to_wire(error: Exception) -> list[str]:
    """An error of a topic's as it crosses nodes: [kind, message]."""
    return [_ERROR_KINDS.get(type(error), "error"), str(error)]


def error_from_wire(value: Any) -> Exception:
    """The error of `error_to_wire`: the same class for the kinds a caller may catch,
    TopicElsewhereError for the others (and for a value of another shape)."""
    match value:
        case [str(kind), str(message)]:
            return _ERROR_TYPES.get(kind, TopicElsewhereError)(message)
        case _:
            return TopicElsewhereError(str(value))


@attrs.frozen
class PresenceFromOwner:
    """What the owner sent subscription `subscription`, numbered `seq`, made ready for its relay:
    a PresenceSnapshot, a PresenceChanged, or the error that refused the subscription."""

    subscription: int
    seq: int
    value: PresenceSnapshot | PresenceChanged | Exception


def presence_from_owner(message: ToSubscriber) -> PresenceFromOwner:
    """`message` as its relay takes it. Raises ValueError for an item of another shape."""
    topic = message.topic
    value: PresenceSnapshot | PresenceChanged | Exception
    match message.item:
        case ["snapshot", users]:
            value = PresenceSnapshot(topic, users_from_wire(users))
        case ["changed", joins, leaves]:
            value = PresenceChanged(topic, Diff(users_from_wire(joins), users_from_wire(leaves)))
        case ["refused", kind, text]:
            value = error_from_wire([kind, text])
        case item:
            raise ValueError(f"an item for a subscriber no node sends: {item!r:.100}")
    return PresenceFromOwner(message.subscription, message.seq, value)


# --- on the owner ------------------------------------------------------------------


async def serve_remote_subscriber(
    ctx: actors.Context,
    topic_ref: actors.ActorRef,
    forward: Callable[[int, list[Any]], None],
    ended: Callable[[], None],
) -> None:
    """Subscribe to the topic of `topic_ref` and `forward(seq, item)` what it sends, in order.

    The stand-in of a backend actor of another node (see the module
    docstring). Its subscribe call's answer is forwarded before anything in
    its mailbox, which holds only what the topic cast it after: so the
    snapshot comes first. `ended()` runs however it ends.
    """
    ctx.ready()
    try:
        try:
            snapshot = await topic_ref.call(
                SubscribePresence(ctx.ref), timeout=SUBSCRIBE_TIMEOUT_SECONDS
            )
        except actors.ActorExitedError:
            return  # the topic ended: its end reaches the relay (TopicEnded)
        except (PresenceLimitError, TopicWithoutPresenceError, actors.ActorError) as error:
            forward(0, ["refused", *error_to_wire(error)])
            return
        forward(0, ["snapshot", users_to_wire(snapshot.users)])
        seq = 0
        async for message in ctx:
            seq += 1
            match message:
                case PresenceChanged(diff=diff):
                    forward(seq, ["changed", users_to_wire(diff.joins), users_to_wire(diff.leaves)])
                case PresenceSnapshot(users=users):
                    forward(seq, ["snapshot", users_to_wire(users)])
                case _:
                    raise actors.UnexpectedMessageError(ctx.name, message)
    finally:
        ended()


@attrs.define(eq=False)
class _StandIn:
    """The stand-in of one subscription of another node's, in a topic run here."""

    node: str
    topic_ref: actors.ActorRef
    #: None until it has started.
    ref: actors.ActorRef | None = None
    #: The number of the last snapshot it forwarded.
    last_snapshot: int = 0
    #: A snapshot was asked of the topic since (`ResendFromNode`).
    asked: bool = False


class RemoteSubscribers:
    """The backend actors of other nodes subscribed to the presence of topics run here.

    The cluster node hands it their requests in arrival order (its inbox).
    """

    def __init__(self, cluster: ClusterNode) -> None:
        self._cluster = cluster
        # (topic, node, subscription number) -> its stand-in.
        self._stand_ins: dict[tuple[str, str, int], _StandIn] = {}

    def __len__(self) -> int:
        return len(self._stand_ins)

    def nodes(self) -> set[str]:
        """The nodes whose backend actors are subscribed here."""
        return {stand_in.node for stand_in in self._stand_ins.values()}

    async def subscribe(self, request: SubscribeFromNode, topic_ref: actors.ActorRef) -> None:
        """Start the stand-in of `request`'s subscription to the topic of `topic_ref`."""
        key = (request.topic, request.node, request.subscription)
        previous = self._stand_ins.pop(key, None)
        if previous is not None:
            self._end(previous)  # sent twice: the newer one stands
        stand_in = self._stand_ins[key] = _StandIn(request.node, topic_ref)
        spec = actors.ChildSpec(
            id=None,
            start=serve_remote_subscriber,
            args=(
                topic_ref,
                functools.partial(self._forward, request, stand_in),
                functools.partial(self._ended, key, stand_in),
            ),
            restart=actors.Restart.TEMPORARY,
            mailbox_capacity=REMOTE_SUBSCRIBER_MAILBOX_CAPACITY,
            label=f"presence subscriber {request.subscription}@{request.node}",
        )
        try:
            stand_in.ref = await self._cluster.supervisor_of().start_child(spec)
        except (actors.NoSuchChildError, actors.ActorExitedError):
            self._ended(key, stand_in)
            return  # the hub is stopping: the relay learns it from the lease
        if self._stand_ins.get(key) is not stand_in:
            stand_in.ref.kill()  # its topic or its node ended while it started

    def unsubscribe(self, request: UnsubscribeFromNode) -> None:
        stand_in = self._stand_ins.pop((request.topic, request.node, request.subscription), None)
        if stand_in is not None:
            self._end(stand_in)

    def resend(self, request: ResendFromNode) -> None:
        """Have the topic send the subscription a snapshot at its next change.

        One snapshot answers every request made before it was forwarded: a
        relay asks again for each change it cannot use meanwhile.
        """
        stand_in = self._stand_ins.get((request.topic, request.node, request.subscription))
        if stand_in is None or stand_in.ref is None:
            return
        if not stand_in.asked and stand_in.last_snapshot <= request.after:
            stand_in.asked = True
            stand_in.topic_ref.notify(ResendPresence(stand_in.ref))

    def node_died(self, node: str) -> None:
        """`node` stopped beating: its subscriptions end (their topics drop them)."""
        self._end_where(lambda key: key[1] == node)

    def topic_stopped(self, topic: str) -> None:
        self._end_where(lambda key: key[0] == topic)

    def _end_where(self, ends: Callable[[tuple[str, str, int]], bool]) -> None:
        for key in [key for key in self._stand_ins if ends(key)]:
            self._end(self._stand_ins.pop(key))

    @staticmethod
    def _end(stand_in: _StandIn) -> None:
        if stand_in.ref is not None:
            # Unsubscribed now, not at the stand-in's Down: in the topic's
            # mailbox before any subscribe that follows, which finds its
            # place under the limit free.
            stand_in.topic_ref.notify(UnsubscribePresence(stand_in.ref))
            stand_in.ref.kill()

    def _forward(
        self, request: SubscribeFromNode, stand_in: _StandIn, seq: int, item: list[Any]
    ) -> None:
        if item[0] == "snapshot":
            stand_in.last_snapshot, stand_in.asked = seq, False
        cluster = self._cluster
        message = ToSubscriber(request.topic, cluster.node, request.subscription, seq, item)
        cluster.send(request.node, message)

    def _ended(self, key: tuple[str, str, int], stand_in: _StandIn) -> None:
        if self._stand_ins.get(key) is stand_in:
            del self._stand_ins[key]


# --- on the subscriber's node ----------------------------------------------------------


@attrs.define(eq=False)
class _Subscription:
    number: int
    subscriber: actors.ActorRef
    monitor: actors.Monitor
    #: The subscribe calls waiting for its first snapshot (empty once it came).
    calls: list[actors.Call]
    #: The number of the next item expected from the owner.
    next_seq: int = 0
    #: It missed a change: it gets nothing more until a snapshot.
    stale: bool = False
    #: What it was last sent is an empty snapshot (the topic's end need not be said twice).
    empty: bool = False


class RelaySubscriptions:
    """The presence subscriptions of this node's backend actors to a topic run elsewhere.

    The relay of the topic owns it and hands it the subscribe and unsubscribe
    calls, the Down of subscribers, and what the owner sends them (see the
    module docstring). Its numbers come from the node (`numbers`), so that
    what the owner sent a subscription of an earlier relay reaches none of
    this one's.
    """

    def __init__(
        self,
        topic: str,
        node: str,
        ctx: actors.Context,
        send: Callable[[NodeMessage], None],
        numbers: Iterator[int],
    ) -> None:
        self._topic = topic
        self._node = node
        self._ctx = ctx
        self._send = send
        self._numbers = numbers
        self._by_number: dict[int, _Subscription] = {}
        self._by_subscriber: dict[actors.ActorRef, _Subscription] = {}

    def __len__(self) -> int:
        return len(self._by_number)

    def subscribe(self, subscriber: actors.ActorRef, call: actors.Call) -> None:
        """Ask the owner for a subscription of `subscriber`; its snapshot will answer `call`."""
        current = self._by_subscriber.get(subscriber)
        if current is not None and current.calls:
            current.calls.append(call)  # the snapshot on its way answers both
            return
        if current is not None:
            self._drop(current)  # subscribed again: a new snapshot, a new subscription
        number = next(self._numbers)
        subscription = _Subscription(number, subscriber, self._ctx.monitor(subscriber), [call])
        self._by_number[number] = self._by_subscriber[subscriber] = subscription
        self._send(SubscribeFromNode(self._topic, self._node, number))

    def unsubscribe(self, subscriber: actors.ActorRef) -> bool:
        """Send `subscriber` nothing more (False if it is not subscribed)."""
        subscription = self._by_subscriber.get(subscriber)
        if subscription is None:
            return False
        self._drop(subscription)
        return True

    def down(self, ref: actors.ActorRef) -> bool:
        """A Down for `ref`: drop it if it is a subscriber (True), else leave it to the relay."""
        return self.unsubscribe(ref)

    def received(self, item: PresenceFromOwner) -> None:
        """Hand what the owner sent on to its subscriber (or answer its subscribe call)."""
        subscription = self._by_number.get(item.subscription)
        if subscription is None or item.seq < subscription.next_seq:
            return  # unsubscribed meanwhile, or sent twice
        skipped = item.seq > subscription.next_seq
        subscription.next_seq = item.seq + 1
        match item.value:
            case PresenceSnapshot() as snapshot if subscription.calls:
                calls, subscription.calls = subscription.calls, []
                answered = [call.reply(snapshot) for call in calls]
                if not any(answered):
                    # Every caller gave up: none of them thinks it is subscribed.
                    self._drop(subscription)
                    return
                subscription.stale, subscription.empty = False, not snapshot.users
            case PresenceSnapshot() as snapshot:
                self._deliver(subscription, snapshot, item.seq)
            case PresenceChanged() as changed:
                # Changes after a lost snapshot are of no use to a caller still waiting for one.
                if skipped or subscription.stale or subscription.calls:
                    self._missed(subscription, item.seq)
                else:
                    self._deliver(subscription, changed, item.seq)
            case Exception() as error:
                # Refused instead of subscribed: the owner keeps nothing of it.
                self._forget(subscription)
                for call in subscription.calls:
                    call.fail(error)

    def ended(self, *, tell_owner: bool) -> None:
        """The relay ends: every subscriber learns that nobody is here any more.

        With `tell_owner` (the owner still runs the topic), the owner drops them.
        Subscribe calls still waiting fail as the relay ends (ActorExitedError).
        """
        empty = PresenceSnapshot(self._topic, {})
        for subscription in list(self._by_number.values()):
            if not subscription.calls and (subscription.stale or not subscription.empty):
                subscription.subscriber.cast(empty)
            if tell_owner:
                self._drop(subscription)
            else:
                self._forget(subscription)

    def _deliver(
        self, subscription: _Subscription, value: PresenceSnapshot | PresenceChanged, seq: int
    ) -> None:
        if subscription.subscriber.cast(value):
            subscription.stale = False
            subscription.empty = isinstance(value, PresenceSnapshot) and not value.users
        else:
            self._missed(subscription, seq)

    def _missed(self, subscription: _Subscription, seq: int) -> None:
        """The subscriber cannot have item `seq`: it waits for a snapshot, asked of the owner."""
        subscription.stale = True
        self._send(ResendFromNode(self._topic, self._node, subscription.number, seq))

    def _drop(self, subscription: _Subscription) -> None:
        """Forget `subscription` here and on the owner."""
        self._forget(subscription)
        self._send(UnsubscribeFromNode(self._topic, self._node, subscription.number))

    def _forget(self, subscription: _Subscription) -> None:
        self._ctx.demonitor(subscription.monitor)
        del self._by_number[subscription.number]
        if self._by_subscriber.get(subscription.subscriber) is subscription:
            del self._by_subscriber[subscription.subscriber]
