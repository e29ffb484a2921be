"""This node in the cluster: its heartbeat, its topics' leases, and the messages between nodes.

One `ClusterNode` per hub process on a shared (Redis) backplane. It:

- says the node is alive (`Backplane.heartbeat`) every `heartbeat_seconds`,
  for `lease_seconds`; renews, in the same round, the leases of the topics
  this node runs (`Leases`), and stops a topic whose lease another node
  took (it cannot run in two places);
- checks, in the same round, that the owners of the topics it relays still
  hold their leases (else the relay ends, its members told the topic
  crashed, and their next join takes the lease on a live node), and that
  the nodes of the remote members of its own topics still beat (else those
  members leave their topics, presence entries and all);
- takes the messages other nodes send it (`hub.cluster.wire`): requests of
  remote members and presence subscribers for the topics it runs, in order,
  through one inbox; and what the owners of the topics it relays send their
  members and subscribers, handed to the relay at once.

Bounds, with lease L and heartbeat H seconds: a node that dies without a
word has its topics taken over, and its members removed from other nodes'
topics, within L + H seconds (its keys expire after L; the others look every H).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import actors
from hub.backplane import Backplane
from hub.cluster.errors import LeaseLostError, TopicElsewhereError
from hub.cluster.leases import Leases
from hub.cluster.presence import (
    RemoteSubscribers,
    error_from_wire,
    error_to_wire,
    presence_from_owner,
)
from hub.cluster.relay import OwnerGone, Relay
from hub.cluster.remote import RemoteConnection, serve_stand_in
from hub.cluster.wire import (
    Answer,
    Ask,
    CallFromNode,
    JoinFromNode,
    LeaveFromNode,
    NodeMessage,
    PublishFromNode,
    ResendFromNode,
    SubscribeFromNode,
    ToMember,
    TopicEnded,
    ToSubscriber,
    UnsubscribeFromNode,
    decode,
    encode,
    identity_from_wire,
    users_from_wire,
    users_to_wire,
)
from hub.errors import ErrorCode
from hub.presence import ListPresence, PresenceSnapshot
from hub.protocol import EndCode, Error, Reply, codec_for
from hub.topics.actor import ServerPublish, ServiceMessage
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
    ToConnection,
)
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.pubsub import Fanout
    from hub.topics.actor import TopicLifecycle

__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "NODE_INBOX_CAPACITY",
    "ClusterNode",
    "ClusterSettings",
]

logger = logging.getLogger(__name__)

# How long a node's heartbeat and its topics' leases hold without renewal.
DEFAULT_LEASE_SECONDS: Final = 5.0

# How often a node renews them, and checks on the owners and members it depends on.
DEFAULT_HEARTBEAT_SECONDS: Final = 1.0

# Requests of remote members waiting for this node's inbox loop. When full, a
# request is dropped and counted; a join or call dropped so is answered
# `overloaded` (its client is told), a presence subscription refused; a leave
# or an unsubscribe is lost (the stand-in stays until its node's next leave,
# its topic's end or its node's death).
NODE_INBOX_CAPACITY: Final = 10_000

# How long a hub's call to a topic run elsewhere (`Ask`) may take at most.
ASK_TIMEOUT_SECONDS: Final = 5.0


@attrs.frozen
class ClusterSettings:
    """How long leases and heartbeats hold, and how often they are renewed (`[backplane]`)."""

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS

    def __attrs_post_init__(self) -> None:
        if not 0 < self.heartbeat_seconds * 2 <= self.lease_seconds:
            raise ValueError(
                f"a lease of {self.lease_seconds} s must hold for at least two heartbeats "
                f"of {self.heartbeat_seconds} s, or a slow round would lose it"
            )


# What an Ask's answer is given to: (True, value) or (False, the error).
_Answered = Callable[[bool, Any], None]


@attrs.define(eq=False)
class _Remote:
    """A member on another node, in one of this node's topics."""

    node: str
    topic_ref: actors.ActorRef
    connection: RemoteConnection


@attrs.define(eq=False)
class _Relayed:
    """A topic this node relays to its owner."""

    owner: str
    ref: actors.ActorRef


@attrs.define(eq=False)
class ClusterNode:
    """This node's part in the cluster (see the module docstring).

    Run `serve` in the hub's nursery. `supervisor_of` gives the supervisor
    the stand-ins of remote members run under; `started` finds a topic's
    actor on this node.
    """

    backplane: Backplane
    fanout: Fanout
    #: The live actor of a topic on this node (after its start, if one is in progress).
    started: Callable[[str], Awaitable[actors.ActorRef | None]]
    supervisor_of: Callable[[], actors.Supervisor]
    settings: ClusterSettings = attrs.Factory(ClusterSettings)
    #: Told of each topic's start and end, after this node (the hub's log).
    lifecycle: TopicLifecycle | None = None
    metrics: HubMetrics | None = None
    leases: Leases = attrs.field(init=False)
    #: The presence subscriptions of other nodes' backend actors to topics run here.
    subscribers: RemoteSubscribers = attrs.field(init=False)
    #: Numbers for this node's presence subscriptions to topics run elsewhere.
    subscription_numbers: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    #: Node messages dropped: a full inbox, or bytes no node of this version sends.
    dropped: int = 0
    _inbox_send: trio.MemorySendChannel[NodeMessage] = attrs.field(init=False)
    _inbox_receive: trio.MemoryReceiveChannel[NodeMessage] = attrs.field(init=False)
    # (topic, member id) -> the member of another node in a topic run here.
    _remotes: dict[tuple[str, str], _Remote] = attrs.Factory(dict)
    # Topic run here -> the nodes whose relays sent it members.
    _relay_nodes: dict[str, set[str]] = attrs.Factory(dict)
    # Topic run elsewhere -> its relay here.
    _relays: dict[str, _Relayed] = attrs.Factory(dict)
    # Asks sent, by number: what to do with the answer, what was asked, until when.
    _asks: dict[int, tuple[_Answered, str, float]] = attrs.Factory(dict)
    _ask_numbers: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        self.leases = Leases(self.backplane, self.settings.lease_seconds)
        self.subscribers = RemoteSubscribers(self)
        self._inbox_send, self._inbox_receive = trio.open_memory_channel(NODE_INBOX_CAPACITY)

    @property
    def node(self) -> str:
        return self.backplane.node

    def send(self, node: str, message: NodeMessage) -> None:
        """Send `message` to `node`; one msgpack cannot carry is logged and dropped."""
        try:
            data = encode(message)
        except ValueError as error:
            logger.warning("topic %r: %s", getattr(message, "topic", "?"), error)
            return
        self.backplane.send_to_node(node, data)

    # --- the loops ------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat, renew and check every heartbeat, and serve the inbox, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.backplane.on_node_message(self._received)
            try:
                nursery.start_soon(self._serve_inbox)
                # The first heartbeat before the node takes any topic.
                with trio.move_on_after(self.settings.lease_seconds):
                    await self._beat()
                task_status.started()
                await self._serve_liveness()
            finally:
                self.backplane.on_node_message(None)

    async def _serve_liveness(self) -> None:
        heartbeat, lease = self.settings.heartbeat_seconds, self.settings.lease_seconds
        # Until when a key found missing proves nothing: after Redis was away
        # (it may have come back empty, and the other nodes renew theirs once
        # they are back too), nobody is judged dead for one lease.
        quiet_until = trio.current_time() + lease
        while True:
            await trio.sleep(heartbeat)  # a timer: nothing to wait on
            started = trio.current_time()
            # Bounded: a Redis that does not answer holds the round, not the node.
            with trio.move_on_after(lease) as round_scope:
                try:
                    await self._beat()
                    judge = self.backplane.healthy and trio.current_time() >= quiet_until
                    await self._check_owners(judge=judge)
                    await self._check_member_nodes(judge=judge)
                except ConnectionError as error:
                    logger.warning("cluster: this node's round failed: %s", error)
                    quiet_until = trio.current_time() + lease
            slow = trio.current_time() - started > heartbeat
            if round_scope.cancelled_caught or slow or not self.backplane.healthy:
                quiet_until = trio.current_time() + lease
            self._forget_abandoned_asks()

    async def _beat(self) -> None:
        await self.backplane.heartbeat(ttl=self.settings.lease_seconds)
        for topic in await self.leases.renew():
            ref = await self.started(topic)
            if ref is not None and topic not in self._relays:
                logger.warning("cluster: another node took the lease of topic %r", topic)
                ref.kill(LeaseLostError(f"another node took the lease of topic {topic!r}"))

    async def _check_owners(self, *, judge: bool) -> None:
        """End the relays whose owner no longer holds the lease (another node's: always)."""
        relayed = list(self._relays.items())
        if not relayed:
            return
        holders = await self.backplane.lease_holders([topic for topic, _ in relayed])
        for (topic, relay), holder in zip(relayed, holders, strict=True):
            if holder != relay.owner and (judge or holder is not None):
                reason = f"the node that ran topic {topic!r} stopped; join again"
                relay.ref.notify(OwnerGone(EndCode.TOPIC_CRASHED, reason))

    async def _check_member_nodes(self, *, judge: bool) -> None:
        """Remove the members and subscribers of nodes whose heartbeat lapsed (not while quiet)."""
        members = {remote.node for remote in self._remotes.values()}
        nodes = sorted(members | self.subscribers.nodes())
        if not nodes or not judge:
            return
        alive = await self.backplane.nodes_alive(nodes)
        for node, beating in zip(nodes, alive, strict=True):
            if not beating:
                self._node_died(node)

    def _node_died(self, node: str) -> None:
        """`node` stopped beating: its members leave this node's topics now."""
        logger.warning("cluster: node %s stopped beating; its members leave", node)
        for key, remote in list(self._remotes.items()):
            if remote.node == node:
                del self._remotes[key]
                # A leave, not an end: its presence goes now, not after a grace.
                remote.topic_ref.notify(LeaveTopic(remote.connection.ref))
                remote.connection.ref.kill()
        self.subscribers.node_died(node)
        for topic, nodes in self._relay_nodes.items():
            if node in nodes:
                nodes.discard(node)
                # Should it only have stalled (and be back within the 30 s its
                # messages are held), its relay ends rather than hold members
                # and subscribers this topic no longer has: they join again.
                reason = f"topic {topic!r} lost this node's members for a while; join again"
                self.send(node, TopicEnded(topic, self.node, EndCode.TOPIC_CRASHED, reason))

    def _forget_abandoned_asks(self) -> None:
        now = trio.current_time()
        for number, (_answered, _kind, until) in list(self._asks.items()):
            if until < now:
                del self._asks[number]  # its owner never answered (gone); its caller gave up

    # --- messages from other nodes ---------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            message = decode(data)
            self._route(message)
        except Exception as error:
            # Bytes from another process (another version, say): refused and
            # logged here, never raised into the backplane's reader.
            self.dropped += 1
            logger.warning("cluster: dropped a message: %r", error)

    def _route(self, message: NodeMessage) -> None:
        match message:
            case ToMember(topic=topic) | TopicEnded(topic=topic) | ToSubscriber(topic=topic):
                relay = self._relays.get(topic)
                if relay is not None and relay.owner == message.node:
                    # Past capacity: what the owner says of its members must not be lost.
                    relay.ref.notify(_from_owner(message))
            case Answer(ask=number, ok=ok, value=value):
                asked = self._asks.pop(number, None)
                if asked is not None:
                    answered, kind, _until = asked
                    if ok:
                        answered(True, _answer_value(message.topic, kind, value))
                    else:
                        answered(False, error_from_wire(value))
            case _:
                try:
                    self._inbox_send.send_nowait(message)
                except trio.WouldBlock:
                    self.dropped += 1
                    self._refuse_overloaded(message)

    def _refuse_overloaded(self, message: NodeMessage) -> None:
        text = f"the node running topic {message.topic!r} is overloaded; try again"
        match message:
            case JoinFromNode(topic=topic, node=node, member=member):
                item = ["joined", False, None, ErrorCode.OVERLOADED, text]
                self.send(node, ToMember(topic, self.node, member, item))
            case CallFromNode(topic=topic, node=node, member=member, ref=ref):
                reply = Reply.error(ref, topic, ErrorCode.OVERLOADED, text)
                item = ["reply", ref, False, reply.payload, None]
                self.send(node, ToMember(topic, self.node, member, item))
            case SubscribeFromNode(topic=topic, node=node, subscription=number):
                item = ["refused", "error", text]
                self.send(node, ToSubscriber(topic, self.node, number, 0, item))
            case _:
                logger.warning("cluster: inbox full, dropped %s", type(message).__name__)

    async def _serve_inbox(self) -> None:
        async for message in self._inbox_receive:
            try:
                await self._take(message)
            except Exception as error:
                # From another process (another version, mid-upgrade, say):
                # what it sent is refused and logged, and this node goes on.
                self.dropped += 1
                logger.warning(
                    "cluster: a %s from node %s failed: %r",
                    type(message).__name__,
                    message.node,
                    error,
                )

    async def _take(self, message: NodeMessage) -> None:
        """Apply one request of another node's member to a topic run here, in arrival order."""
        match message:
            case JoinFromNode():
                await self._join(message)
            case LeaveFromNode(topic=topic, member=member, ended=ended):
                remote = self._remotes.pop((topic, member), None)
                if remote is not None:
                    if not ended:
                        remote.topic_ref.notify(LeaveTopic(remote.connection.ref))
                    # Its end is the topic's Down: a connection that ended.
                    remote.connection.ref.kill()
            case PublishFromNode(topic=topic, member=member, ref=ref):
                remote = self._remotes.get((topic, member))
                if remote is None:
                    self._not_a_member(message)
                else:
                    request = PublishEvent(
                        remote.connection.ref, ref, message.event, message.payload
                    )
                    self._to_topic(remote, ref, request)
            case CallFromNode(topic=topic, member=member, ref=ref):
                remote = self._remotes.get((topic, member))
                if remote is None:
                    self._not_a_member(message)
                else:
                    deadline = trio.current_time() + message.timeout
                    call = CallService(
                        remote.connection.ref, ref, message.event, message.payload, deadline
                    )
                    self._to_topic(remote, ref, call)
            case Ask():
                assert self._nursery is not None
                self._nursery.start_soon(self._answer_ask, message)
            case SubscribeFromNode():
                await self._subscribe(message)
            case UnsubscribeFromNode():
                self.subscribers.unsubscribe(message)
            case ResendFromNode():
                self.subscribers.resend(message)
            case _:
                raise actors.UnexpectedMessageError("cluster node", message)

    def _not_a_member(self, message: PublishFromNode | CallFromNode) -> None:
        """A request of a member the topic here does not have: its membership ends there.

        Its node was judged gone (its heartbeat lapsed) and its members
        removed, but it came back with its relay holding them; or the
        membership ended here while the request was on its way (the relay
        then has nothing to end). Without this its publishes and calls
        would vanish, and each call hold a place of its client's for ever.
        """
        topic, node = message.topic, message.node
        if self.leases.holds(topic) and topic not in self._relays:
            reason = f"this connection is no longer a member of topic {topic!r}; join again"
            item = ["ended", EndCode.TOPIC_CRASHED, reason]
            self.send(node, ToMember(topic, self.node, message.member, item))
        else:
            # Not run here any more: the relay ends, its members join again.
            reason = f"topic {topic!r} no longer runs on node {self.node}; join again"
            self.send(node, TopicEnded(topic, self.node, EndCode.TOPIC_CRASHED, reason))

    def _to_topic(self, remote: _Remote, ref: int, request: PublishEvent | CallService) -> None:
        try:
            remote.topic_ref.send_nowait(request)
        except actors.MailboxFullError:
            text = f"topic {remote.connection.topic!r} is overloaded; try again"
            frame = Reply.error(ref, remote.connection.topic, ErrorCode.OVERLOADED, text)
            remote.connection.deliver(
                SendFrame(frame if ref else Error(None, ErrorCode.OVERLOADED, text))
            )
        except actors.ActorExitedError:
            pass  # its end reaches the member's relay (TopicEnded)

    async def _join(self, join: JoinFromNode) -> None:
        topic, node = join.topic, join.node
        # A topic whose lease this node has just taken may still be starting:
        # its first remote joins wait for it (bounded by the topics' start timeout).
        topic_ref = await self.started(topic)
        if topic_ref is None or not self.leases.holds(topic) or topic in self._relays:
            # Not run here (any more): the relay ends, its joins try again.
            self.send(node, TopicEnded(topic, self.node, EndCode.TOPIC_CLOSED, "not run here"))
            return
        self._relay_nodes.setdefault(topic, set()).add(node)
        key = (topic, join.member)
        remote = self._remotes.get(key)
        if remote is None or remote.topic_ref is not topic_ref:
            if remote is not None:
                remote.connection.ref.kill()
            try:
                stand_in = await self.supervisor_of().start_child(
                    actors.ChildSpec(
                        id=None,
                        start=serve_stand_in,
                        restart=actors.Restart.TEMPORARY,
                        mailbox_capacity=1,
                        label=f"remote {join.member}",
                    )
                )
            except (actors.NoSuchChildError, actors.ActorExitedError):
                return  # the hub is stopping: the relay learns it from the lease
            connection = RemoteConnection(
                stand_in,
                codec_for(join.subprotocol),
                dict(join.data),
                node,
                topic,
                join.member,
                self,
            )
            remote = self._remotes[key] = _Remote(node, topic_ref, connection)
        member = Member(
            join.member,
            identity_from_wire(join.identity),
            join.params,
            remote.connection,
        )
        try:
            topic_ref.send_nowait(JoinTopic(member, join.ref, join.offset, join.epoch))
        except actors.MailboxFullError:
            text = f"topic {topic!r} is overloaded; try again"
            remote.connection.deliver(
                JoinAnswered(topic, topic_ref, False, code=ErrorCode.OVERLOADED, message=text)
            )
        except actors.ActorExitedError:
            self._forget(remote.connection)
            self.send(node, TopicEnded(topic, self.node, EndCode.TOPIC_CLOSED, "not run here"))

    async def _subscribe(self, request: SubscribeFromNode) -> None:
        topic, node = request.topic, request.node
        topic_ref = await self.started(topic)
        if topic_ref is None or not self.leases.holds(topic) or topic in self._relays:
            # Not run here (any more): the relay ends, its subscribers subscribe again.
            self.send(node, TopicEnded(topic, self.node, EndCode.TOPIC_CLOSED, "not run here"))
            return
        self._relay_nodes.setdefault(topic, set()).add(node)  # told when the topic ends
        await self.subscribers.subscribe(request, topic_ref)

    async def _answer_ask(self, ask: Ask) -> None:
        topic_ref = await self.started(ask.topic)
        if topic_ref is None or not self.leases.holds(ask.topic):
            self.send(ask.node, Answer(ask.topic, self.node, ask.ask, False, "not run here"))
            return
        value: Any = None
        try:
            match ask.request:
                case ["publish", event, payload, keep]:
                    value = await topic_ref.call(
                        ServerPublish(event, payload, keep), timeout=ASK_TIMEOUT_SECONDS
                    )
                case ["presence"]:
                    snapshot = await topic_ref.call(ListPresence(), timeout=ASK_TIMEOUT_SECONDS)
                    value = users_to_wire(snapshot.users)
                case ["info", info]:
                    await topic_ref.send(ServiceMessage(info))
                    return
                case _:
                    raise ValueError(f"unknown ask {ask.request!r}")
        except Exception as error:  # the caller on the other node is told, as a call fails
            if ask.ask:
                answer = Answer(ask.topic, self.node, ask.ask, False, error_to_wire(error))
                self.send(ask.node, answer)
            return
        self.send(ask.node, Answer(ask.topic, self.node, ask.ask, True, value))

    # --- what relays ask of the node ---------------------------------------------------

    def relay_started(self, topic: str, owner: str, ref: actors.ActorRef) -> None:
        self._relays[topic] = _Relayed(owner, ref)

    def relay_stopped(self, topic: str, ref: actors.ActorRef) -> None:
        relay = self._relays.get(topic)
        if relay is not None and relay.ref is ref:
            del self._relays[topic]

    def relay_spec(
        self, topic: str, owner: str, *, empty_grace: float, mailbox_capacity: int
    ) -> actors.ChildSpec:
        """How to start the relay of `topic`, run by node `owner` (under the topics supervisor)."""
        return actors.ChildSpec(
            id=None,
            start=functools.partial(Relay, cluster=self, empty_grace=empty_grace),
            args=(topic, owner),
            # As a topic: a relay that ended is started afresh by the next join.
            restart=actors.Restart.TEMPORARY,
            mailbox_capacity=mailbox_capacity,
            label=f"relay {topic}",
        )

    def ask(self, topic: str, owner: str, request: list[Any], answered: _Answered | None) -> None:
        """Ask `owner` for `request` of `topic`; `answered(ok, value)` (None: no answer wanted).

        `value` is the error (TopicElsewhereError) when not ok. An owner
        that never answers (it died) is forgotten after twice ASK_TIMEOUT_SECONDS.
        """
        number = 0
        if answered is not None:
            number = next(self._ask_numbers)
            until = trio.current_time() + 2 * ASK_TIMEOUT_SECONDS
            self._asks[number] = (answered, request[0], until)
        self.send(owner, Ask(topic, self.node, number, request))

    async def presence(self, topic: str, *, timeout: float) -> PresenceSnapshot | None:
        """Who is present in `topic`, asked of the node that runs it; None if none does.

        Raises TopicElsewhereError if that node fails or does not answer in `timeout`.
        """
        (owner,) = await self.backplane.lease_holders([topic])
        if owner is None or owner == self.node:
            return None
        answers: list[tuple[bool, Any]] = []
        done = trio.Event()

        def answered(ok: bool, value: Any) -> None:
            answers.append((ok, value))
            done.set()

        self.ask(topic, owner, ["presence"], answered)
        with trio.move_on_after(timeout):
            await done.wait()
        if not answers:
            raise TopicElsewhereError(f"node {owner}, which runs topic {topic!r}, did not answer")
        ok, value = answers[0]
        if not ok:
            raise value
        snapshot: PresenceSnapshot = value
        return snapshot

    # --- what the stand-ins of remote members do ----------------------------------------

    def to_member(self, connection: RemoteConnection, item: Outbound | ToConnection) -> None:
        """Send what a topic here gives a remote member to its node's relay."""
        wire: Wire | None
        sent: list[Any]
        match item:
            case Outbound(event=event, key=key, volatile=volatile):
                wire = item.messages.get(connection.codec)
                message = None if wire is None else wire.message
                sent = ["push", event, message, key, volatile]
            case SendFrame(frame=Reply() as frame, wire=wire):
                wire = wire or Wire(connection.codec.encode(frame))
                sent = ["reply", frame.ref, frame.ok, frame.payload, wire.message]
            case SendFrame(frame=Error() as frame, wire=wire):
                wire = wire or Wire(connection.codec.encode(frame))
                sent = ["error", frame.ref, frame.code, frame.message, wire.message]
            case JoinAnswered(ok=ok, payload=payload, code=code, message=text):
                sent = ["joined", ok, payload, code, text]
                if not ok:
                    self._forget(connection)
            case MembershipEnded(code=code, reason=reason):
                sent = ["ended", code, reason]
                self._forget(connection)
            case _:
                raise actors.UnexpectedMessageError("cluster node", item)
        self.send(connection.node, ToMember(connection.topic, self.node, connection.member, sent))

    def _forget(self, connection: RemoteConnection) -> None:
        """The remote membership ended here (refused, kicked): its stand-in ends."""
        key = (connection.topic, connection.member)
        remote = self._remotes.get(key)
        if remote is not None and remote.connection is connection:
            del self._remotes[key]
        connection.ref.kill()

    # --- the topics this node runs (TopicLifecycle) --------------------------------------

    def topic_started(self, topic: str, route: str) -> None:
        if self.lifecycle is not None:
            self.lifecycle.topic_started(topic, route)

    def topic_stopped(self, topic: str, reason: actors.ExitReason, seconds: float) -> None:
        """A topic run here ended: its relays elsewhere end, its lease goes back at once."""
        if isinstance(reason, actors.Normal):
            code, text = EndCode.TOPIC_CLOSED, "the topic has closed"
        else:
            code, text = EndCode.TOPIC_CRASHED, "the topic ended unexpectedly; join again"
        for node in self._relay_nodes.pop(topic, ()):
            self.send(node, TopicEnded(topic, self.node, code, text))
        for key, remote in list(self._remotes.items()):
            if key[0] == topic:
                del self._remotes[key]
                remote.connection.ref.kill()
        self.subscribers.topic_stopped(topic)
        self.leases.release(topic)
        if self.lifecycle is not None:
            self.lifecycle.topic_stopped(topic, reason, seconds)

    def remote_members(self) -> int:
        """How many members of other nodes the topics run here have."""
        return len(self._remotes)

    def relays(self) -> int:
        """How many topics run elsewhere this node relays."""
        return len(self._relays)

    def remote_subscribers(self) -> int:
        """How many presence subscriptions of other nodes' backend actors the topics here have."""
        return len(self.subscribers)


def _from_owner(message: ToMember | TopicEnded | ToSubscriber) -> object:
    """What the owner sent, as its relay takes it (ValueError: a presence item of another shape)."""
    if isinstance(message, TopicEnded):
        return OwnerGone(message.code, message.reason)
    if isinstance(message, ToSubscriber):
        return presence_from_owner(message)
    return message


def _answer_value(topic: str, kind: str, value: Any) -> Any:
    """An Answer's value as the hub's caller expects it (a PresenceSnapshot for presence)."""
    if kind == "presence":
        return PresenceSnapshot(topic, users_from_wire(value))
    return value
