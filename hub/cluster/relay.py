"""The relay: a topic's stand-in on a node that does not run it.

Sessions find a topic's actor by name on their own node. Where another node
holds the topic's lease, the actor they find is this relay, registered under
the topic's name: it takes their JoinTopic, LeaveTopic, PublishEvent and
CallService as a topic would, sends them to the owner node
(`hub.cluster.wire`), and hands each member what the owner sends back (join
replies, call replies, pushes for one member, kicks), with its own ref as
the topic's, so that sessions cannot tell it from the topic. Broadcasts do
not pass through it: the node's fan-out gets them from the backplane, and
the relay subscribes the node to the topic from its start, before any
member's join is sent, so none published after a join's reply is missed.
It takes the presence calls of the hub's too: a list is asked of the owner,
and the presence subscriptions of this node's backend actors go through it
(`hub.cluster.presence`).

It ends when its last member and presence subscriber have been gone for
the topics' empty grace, when the owner says its topic ended, or when the
owner's lease lapses (the owner died): joined members are then told the
topic crashed, and their next join takes the lease on a live node; joins
still waiting are sent again by their sessions (a relay that ends normally
is a topic that stopped); presence subscribers get an empty snapshot, as
from a topic that ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import msgpack
import trio

import actors
from hub.cluster.presence import PresenceFromOwner, RelaySubscriptions
from hub.cluster.wire import (
    CallFromNode,
    JoinFromNode,
    LeaveFromNode,
    PublishFromNode,
    ToMember,
    identity_to_wire,
)
from hub.presence import ListPresence, SubscribePresence, UnsubscribePresence
from hub.protocol import Error, Reply
from hub.topics.actor import (
    EMPTY_TOPIC_GRACE_SECONDS,
    TOPIC_MAILBOX_CAPACITY,
    ServerPublish,
    ServiceMessage,
    topic_name_key,
)
from hub.topics.messages import (
    CallService,
    JoinAnswered,
    JoinTopic,
    LeaveTopic,
    Member,
    MembershipEnded,
    Outbound,
    PublishEvent,
    SendFrame,
)
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.cluster.node import ClusterNode

__all__ = ["OwnerGone", "Relay"]

logger = logging.getLogger(__name__)


@attrs.frozen
class OwnerGone:
    """The topic's owner is gone or its topic ended: tell the members `code`, and end."""

    code: str
    reason: str


@attrs.frozen
class _CheckEmpty:
    """The empty grace is over: end unless a member came."""


@attrs.define(eq=False)
class _Relayed:
    member: Member
    monitor: actors.Monitor
    joined: bool = False


class Relay(actors.Actor):
    """The stand-in for topic `name`, run by the node `owner` (see the module docstring)."""

    mailbox_capacity = TOPIC_MAILBOX_CAPACITY

    def __init__(
        self,
        name: str,
        owner: str,
        cluster: ClusterNode,
        *,
        empty_grace: float = EMPTY_TOPIC_GRACE_SECONDS,
    ) -> None:
        self.topic = name
        self.owner = owner
        self._cluster = cluster
        self._empty_grace = empty_grace
        self._members: dict[actors.ActorRef, _Relayed] = {}
        self._by_id: dict[str, actors.ActorRef] = {}
        self._owner_gone = False
        self._held = False
        self._empty_timer: actors.Timer | None = None
        self._said_unportable = False
        self._presence: RelaySubscriptions

    async def run(self) -> None:
        cluster = self._cluster
        self._presence = RelaySubscriptions(
            self.topic, cluster.node, self.ctx, self._send, cluster.subscription_numbers
        )
        self.ctx.register(topic_name_key(self.topic))
        await super().run()

    async def started(self) -> None:
        cluster = self._cluster
        cluster.relay_started(self.topic, self.owner, self.ref)
        cluster.fanout.hold(self.topic)
        self._held = True
        # Bounded by the topics' start timeout (Topics.actor_for).
        await cluster.backplane.subscribed(self.topic)
        self._maybe_empty()

    async def stopped(self, reason: actors.ExitReason) -> None:
        cluster = self._cluster
        cluster.relay_stopped(self.topic, self.ref)
        if self._held:
            cluster.fanout.unhold(self.topic)
        if not self._owner_gone:
            # Stopped with members (the hub is stopping): the owner lets them go.
            for relayed in self._members.values():
                self._send(LeaveFromNode(self.topic, cluster.node, relayed.member.id, True))
        self._presence.ended(tell_owner=not self._owner_gone)

    def _send(self, message: Any) -> None:
        self._cluster.send(self.owner, message)

    def _maybe_empty(self) -> None:
        if self._members or self._presence:
            return
        if self._empty_timer is None or not self._empty_timer.active:
            self._empty_timer = self.ctx.send_after(self._empty_grace, _CheckEmpty())

    async def handle(self, message: Any) -> None:
        node = self._cluster.node
        match message:
            case JoinTopic(member=member, ref=ref, offset=offset, epoch=epoch):
                connection = member.connection
                previous = self._members.pop(connection.ref, None)
                if previous is not None:
                    self.ctx.demonitor(previous.monitor)
                monitor = self.ctx.monitor(connection.ref)
                self._members[connection.ref] = _Relayed(member, monitor)
                self._by_id[member.id] = connection.ref
                self._send(
                    JoinFromNode(
                        self.topic,
                        node,
                        member.id,
                        identity_to_wire(member.identity),
                        dict(member.params),
                        connection.codec.subprotocol,
                        _portable(connection.data),
                        ref,
                        offset,
                        epoch,
                    )
                )
            case LeaveTopic(connection=connection):
                left = self._drop(connection)
                if left is not None:
                    self._send(LeaveFromNode(self.topic, node, left.member.id, False))
            case actors.Down(ref=ref):
                if self._presence.down(ref):
                    self._maybe_empty()
                    return
                ended = self._drop(ref)
                if ended is not None:
                    self._send(LeaveFromNode(self.topic, node, ended.member.id, True))
            case PublishEvent(connection=connection, ref=ref, event=event, payload=payload):
                relayed = self._members.get(connection)
                if relayed is not None:
                    self._send(
                        PublishFromNode(self.topic, node, relayed.member.id, ref, event, payload)
                    )
            case CallService(connection=connection, ref=ref, event=event, payload=payload):
                relayed = self._members.get(connection)
                if relayed is not None:
                    timeout = max(0.0, message.deadline - trio.current_time())
                    self._send(
                        CallFromNode(
                            self.topic, node, relayed.member.id, ref, event, payload, timeout
                        )
                    )
            case ToMember(member=member_id, item=item):
                self._to_member(member_id, item)
            case PresenceFromOwner():
                self._presence.received(message)
                self._maybe_empty()
            case OwnerGone(code=code, reason=reason):
                self._owner_gone = True
                for relayed in self._members.values():
                    if relayed.joined:
                        relayed.member.connection.deliver(MembershipEnded(self.topic, code, reason))
                self.ctx.stop()
            case ServiceMessage(message=info):
                try:
                    msgpack.packb(info, use_bin_type=True)
                except (TypeError, ValueError, OverflowError):
                    # Only what crosses a wire can reach a service on another
                    # node; said once per relay. (The hub's own wakes of
                    # personal topics need no relay: they reach every node,
                    # the owner's included: hub.notifications.)
                    if not self._said_unportable:
                        self._said_unportable = True
                        logger.warning(
                            "topic %r runs on node %s: service messages such as %r cannot "
                            "reach it from here (only what msgpack carries crosses nodes)",
                            self.topic,
                            self.owner,
                            info,
                        )
                    return
                self._cluster.ask(self.topic, self.owner, ["info", info], None)
            case _CheckEmpty():
                self._empty_timer = None
                if not self._members and not self._presence:
                    self.ctx.stop()
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, message)

    async def handle_call(self, request: Any, call: actors.Call) -> Any:
        match request:
            case ServerPublish(event=event, payload=payload, keep=keep):
                request = ["publish", event, payload, keep]
                self._cluster.ask(self.topic, self.owner, request, _answer_to(call))
            case ListPresence():
                self._cluster.ask(self.topic, self.owner, ["presence"], _answer_to(call))
            case SubscribePresence(subscriber=subscriber):
                self._presence.subscribe(subscriber, call)  # the owner's snapshot answers it
            case UnsubscribePresence(subscriber=subscriber):
                if self._presence.unsubscribe(subscriber):
                    self._maybe_empty()
                return None
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, request)
        return actors.NO_REPLY

    def _drop(self, connection: actors.ActorRef) -> _Relayed | None:
        """Forget the member of `connection` (None if it is not one)."""
        relayed = self._members.pop(connection, None)
        if relayed is None:
            return None
        self.ctx.demonitor(relayed.monitor)
        self._by_id.pop(relayed.member.id, None)
        self._maybe_empty()
        return relayed

    def _to_member(self, member_id: str, item: list[Any]) -> None:
        connection_ref = self._by_id.get(member_id)
        relayed = None if connection_ref is None else self._members.get(connection_ref)
        if relayed is None:
            return  # left meanwhile: its leave is on its way to the owner
        connection = relayed.member.connection
        match item:
            case ["joined", ok, payload, code, text]:
                if ok:
                    relayed.joined = True
                else:
                    self._drop(relayed.member.connection.ref)
                connection.deliver(JoinAnswered(self.topic, self.ref, ok, payload, code, text))
            case ["reply", ref, ok, payload, wire]:
                frame = Reply(ref, self.topic, ok, payload)
                connection.deliver(SendFrame(frame, None if wire is None else Wire(wire)))
            case ["error", ref, code, text, wire]:
                connection.deliver(SendFrame(Error(ref, code, text), Wire(wire)))
            case ["push", event, wire, key, volatile]:
                messages = {connection.codec: None if wire is None else Wire(wire)}
                connection.deliver(Outbound(self.topic, event, messages, key, volatile))
            case ["ended", code, reason]:
                if not relayed.joined:
                    # Its join is not answered yet: this ends an earlier
                    # membership (what the owner sent comes in order, and
                    # ends a membership only after its join's answer).
                    return
                self._drop(relayed.member.connection.ref)
                connection.deliver(MembershipEnded(self.topic, code, reason))
            case _:
                raise ValueError(f"unknown item for a member of {self.topic!r}: {item!r}")


def _answer_to(call: actors.Call) -> Callable[[bool, Any], None]:
    """Answer `call` with what the owner answers (a late answer goes nowhere: `Call.reply`)."""

    def answered(ok: bool, value: Any) -> None:
        if ok:
            call.reply(value)
        else:
            call.fail(value)

    return answered


def _portable(data: dict[str, Any]) -> dict[str, Any]:
    """The part of a connection's data bag that can cross nodes (what msgpack carries)."""
    portable = {}
    for key, value in data.items():
        try:
            msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            continue  # an object of the application's: it stays on its node
        portable[key] = value
    return portable
