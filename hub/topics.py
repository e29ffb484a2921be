"""Topics: routes from topic patterns to services, and one actor per live topic.

A topic actor is started on the first join of its topic, under the hub's
topics supervisor (temporary: when it crashes its members are told, and
their next join starts it afresh). It owns its service's state, decides who
may join, handles its members' events and calls one at a time, and stops a
while after its last member leaves. It watches its members' connections
with monitors, so a connection that dies is removed without anyone having
to remember to.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

import actors
from hub.errors import (
    EncodeError,
    ErrorCode,
    JoinRefusedError,
    ServiceError,
    TopicUnavailableError,
)
from hub.protocol import Codec, EndCode, Error, Payload, Push, Reply
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.services import Service

logger = logging.getLogger(__name__)

# Requests queued for one topic actor. Connection readers wait when it is
# full, which slows the clients sending to a busy topic (TCP backpressure)
# and no one else.
TOPIC_MAILBOX_CAPACITY: Final = 4096

# A topic actor whose last member left waits this long for a member before
# it stops, so that a client reloading a page finds its topic, and its
# history, still there.
EMPTY_TOPIC_GRACE_SECONDS: Final = 10.0

# How long a topic's service may take to start (its `started` hook) before
# the join that started it fails.
TOPIC_START_TIMEOUT_SECONDS: Final = 10.0

# A topic whose actor crashes this often within the window is not served
# again until the window has passed (its joins are refused meanwhile), so
# that one buggy topic cannot use up the restart budget every topic shares.
TOPIC_MAX_CRASHES: Final = 3
TOPIC_CRASH_WINDOW_SECONDS: Final = 30.0

# How long a Call may wait for its service unless the client asks for less,
# and the most it may ask for.
DEFAULT_CALL_TIMEOUT_SECONDS: Final = 5.0
MAX_CALL_TIMEOUT_SECONDS: Final = 60.0


@attrs.define(eq=False)
class CrashLedger:
    """When each topic's actor crashed lately, to stop serving one that keeps crashing."""

    max_crashes: int = TOPIC_MAX_CRASHES
    window_seconds: float = TOPIC_CRASH_WINDOW_SECONDS
    _crashes: dict[str, deque[float]] = attrs.Factory(dict)

    def record(self, topic: str, now: float) -> None:
        for name in list(self._crashes):
            self._forget_old(name, now)
        self._crashes.setdefault(topic, deque()).append(now)

    def closed_until(self, topic: str, now: float) -> float | None:
        """When `topic` may be served again, or None if it may be now."""
        self._forget_old(topic, now)
        times = self._crashes.get(topic)
        if times is None or len(times) < self.max_crashes:
            return None
        return times[0] + self.window_seconds

    def _forget_old(self, topic: str, now: float) -> None:
        times = self._crashes.get(topic)
        if times is None:
            return
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._crashes[topic]


def topic_name_key(name: str) -> Hashable:
    """The registry key of the topic actor for `name`."""
    return ("topic", name)


@attrs.frozen
class Route:
    """Topics matching `pattern` are served by services made by `factory`.

    A pattern ending in `*` matches every topic that starts with what comes
    before it (`room:*` matches `room:lobby`, not `room:`); any other pattern
    matches only itself.
    """

    pattern: str
    factory: Callable[[Topic], Service]

    def matches(self, topic: str) -> bool:
        if self.pattern.endswith("*"):
            prefix = self.pattern[:-1]
            return len(topic) > len(prefix) and topic.startswith(prefix)
        return topic == self.pattern


class Subscriber(Protocol):
    """What a topic needs of a member's connection: a ref, a codec, a mailbox slot."""

    @property
    def ref(self) -> actors.ActorRef: ...

    @property
    def codec(self) -> Codec: ...

    def deliver(self, item: Outbound | ToConnection) -> None:
        """Queue `item` for the client without waiting (slow consumers are evicted)."""


@attrs.frozen(eq=False)
class Member:
    """One connection's membership of one topic, as its service sees it.

    `id` is the connection's id, unique in this hub; `identity` is what the
    hub's authenticate hook returned for the connection (None without one);
    `params` are the join's params as the client sent them.
    """

    id: str
    identity: object
    params: Mapping[str, Payload]
    connection: Subscriber = attrs.field(repr=False)


# --- what connections send to topic actors -------------------------------------


@attrs.frozen(eq=False)
class JoinTopic:
    member: Member
    ref: int
    offset: int | None


@attrs.frozen(eq=False)
class LeaveTopic:
    connection: actors.ActorRef


@attrs.frozen(eq=False)
class PublishEvent:
    connection: actors.ActorRef
    ref: int
    event: str
    payload: Payload


@attrs.frozen(eq=False)
class CallService:
    connection: actors.ActorRef
    ref: int
    event: str
    payload: Payload
    deadline: float


@attrs.frozen
class _CheckEmpty:
    """The empty-topic grace period is over: stop unless someone joined."""


# --- what topic actors send to connections ------------------------------------


@attrs.frozen(eq=False)
class Outbound:
    """A Push for a topic's members, encoded once per codec in use.

    One Outbound goes to every member of a broadcast: the session takes the
    Wire of its own codec, and every transport of one kind frames that Wire
    once for all (`hub.transport`).
    """

    topic: str
    event: str
    #: None for a codec that cannot carry the payload: those members miss it.
    messages: Mapping[Codec, Wire | None]
    #: A member behind on this topic gets only the newest of these per event.
    latest_only: bool = False


@attrs.frozen(eq=False)
class JoinAnswered:
    topic: str
    topic_ref: actors.ActorRef
    ok: bool
    payload: Payload = None
    code: str = ""
    message: str = ""


@attrs.frozen(eq=False)
class SendFrame:
    """A frame for one client (a Reply or Error); the connection encodes it."""

    frame: Reply | Error


@attrs.frozen(eq=False)
class MembershipEnded:
    topic: str
    code: str
    reason: str


ToConnection = JoinAnswered | SendFrame | MembershipEnded


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


# --- the actor ------------------------------------------------------------------


class TopicActor(actors.Actor):
    """The actor behind one topic: membership, and its service's handlers."""

    mailbox_capacity = TOPIC_MAILBOX_CAPACITY

    def __init__(
        self,
        name: str,
        route: Route,
        metrics: HubMetrics | None = None,
        *,
        crashes: CrashLedger | None = None,
        empty_grace: float = EMPTY_TOPIC_GRACE_SECONDS,
    ) -> None:
        self.topic = Topic(name, metrics)
        self._crashes = crashes or CrashLedger()
        self._route = route
        self._empty_grace = empty_grace
        self._monitors: dict[actors.ActorRef, actors.Monitor] = {}
        self._nursery: trio.Nursery | None = None
        self._empty_since = 0.0
        self._empty_timer_running = False
        self.service: Service | None = None

    async def run(self) -> None:
        self.ctx.register(topic_name_key(self.topic.name))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._became_empty()
            await super().run()
            nursery.cancel_scope.cancel()

    async def started(self) -> None:
        self.service = self._route.factory(self.topic)
        await self.service.started()

    async def stopped(self, reason: actors.ExitReason) -> None:
        if isinstance(reason, actors.Crashed):
            self._crashes.record(self.topic.name, trio.current_time())
        if self.service is not None:
            await self.service.stopped()

    def _became_empty(self) -> None:
        """Start the grace period: stop unless a member joins before it ends."""
        self._empty_since = trio.current_time()
        self._arm_empty_timer()

    def _arm_empty_timer(self) -> None:
        # One timer task at most, however often the topic empties: it
        # follows `_empty_since` as that moves.
        if not self._empty_timer_running:
            assert self._nursery is not None
            self._empty_timer_running = True
            self._nursery.start_soon(self._expire_when_empty)

    async def _expire_when_empty(self) -> None:
        try:
            while True:
                await trio.sleep_until(self._empty_since + self._empty_grace)
                if self.topic.members:
                    return  # someone joined; the next emptiness arms a new timer
                if trio.current_time() < self._empty_since + self._empty_grace:
                    continue  # emptied again meanwhile: wait the rest of the new period
                if self.ref.cast(_CheckEmpty()):
                    return
                # The mailbox is full of requests: the topic is busy, look again later.
                await trio.sleep(self._empty_grace)
        finally:
            self._empty_timer_running = False

    async def handle(self, message: Any) -> None:
        await self._handle(message)
        while self.topic._kicked:
            member = self.topic._kicked.pop()
            await self._remove(member.connection.ref, already_removed=member)

    async def _handle(self, message: Any) -> None:
        assert self.service is not None
        topic = self.topic
        match message:
            case PublishEvent(connection=connection, ref=ref, event=event, payload=payload):
                member = topic.members.get(connection)
                if member is None:
                    return  # left (or was kicked) while this was queued
                try:
                    await self.service.handle_event(member, event, payload)
                except ServiceError as error:
                    _answer_error(member, ref, topic.name, error.code, error.message)
                else:
                    if ref:
                        member.connection.deliver(SendFrame(Reply(ref, topic.name, True)))
            case CallService(connection=connection):
                await self._call(message)
            case JoinTopic():
                await self._join(message)
            case LeaveTopic(connection=connection):
                await self._remove(connection)
            case actors.Down(ref=connection):
                # The connection is gone, whichever of its monitors says so.
                await self._remove(connection)
            case _CheckEmpty():
                if topic.members:
                    return
                if trio.current_time() - self._empty_since >= self._empty_grace:
                    self.ctx.stop()
                else:
                    self._arm_empty_timer()
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, message)

    async def _join(self, request: JoinTopic) -> None:
        assert self.service is not None
        member = request.member
        connection = member.connection
        name = self.topic.name
        try:
            payload = await self.service.join(member, dict(member.params))
        except (JoinRefusedError, ServiceError) as error:
            connection.deliver(
                JoinAnswered(name, self.ref, False, code=error.code, message=error.message)
            )
            return
        self.topic._add(member)
        self._monitors[connection.ref] = self.ctx.monitor(connection.ref)
        connection.deliver(JoinAnswered(name, self.ref, True, payload))
        await self.service.joined(member, request.offset)

    async def _remove(
        self, connection: actors.ActorRef, *, already_removed: Member | None = None
    ) -> None:
        assert self.service is not None
        member = self.topic._remove(connection) or already_removed
        monitor = self._monitors.pop(connection, None)
        if monitor is not None:
            # No flush: a Down already queued is harmless (see `_handle`), and
            # flushing would rebuild the mailbox on every leave.
            self.ctx.demonitor(monitor)
        if member is not None:
            await self.service.leave(member)
            if not self.topic.members:
                self._became_empty()

    async def _call(self, request: CallService) -> None:
        assert self.service is not None
        member = self.topic.members.get(request.connection)
        if member is None:
            return
        name = self.topic.name
        if request.deadline <= trio.current_time():
            _answer_error(member, request.ref, name, ErrorCode.CALL_TIMEOUT, "call timed out")
            return
        with trio.move_on_at(request.deadline):
            try:
                result = await self.service.handle_call(member, request.event, request.payload)
            except ServiceError as error:
                _answer_error(member, request.ref, name, error.code, error.message)
                return
            try:
                reply = Reply(request.ref, name, True, result)
                member.connection.codec.encode(reply)
            except (EncodeError, ValueError) as error:
                # Something this client's codec cannot carry (bytes for a JSON
                # client, say): told to the client, not a crash of the topic.
                subprotocol = member.connection.codec.subprotocol
                message = f"the service's answer cannot be sent over {subprotocol}: {error}"
                _answer_error(member, request.ref, name, ErrorCode.SERVICE_ERROR, message)
                return
            member.connection.deliver(SendFrame(reply))
            return
        _answer_error(
            member,
            request.ref,
            name,
            ErrorCode.CALL_TIMEOUT,
            f"the service of {name!r} did not answer in time",
        )


def _answer_error(member: Member, ref: int, topic: str, code: str, message: str) -> None:
    """Tell the client its request failed: an error Reply, or an Error frame for ref 0."""
    frame: Reply | Error = (
        Reply.error(ref, topic, code, message) if ref else Error(None, code, message)
    )
    member.connection.deliver(SendFrame(frame))


def call_deadline(now: float, timeout: float | None) -> float:
    """When a Call with the client's `timeout` must be answered by."""
    if timeout is None:
        timeout = DEFAULT_CALL_TIMEOUT_SECONDS
    return now + min(timeout, MAX_CALL_TIMEOUT_SECONDS)


@attrs.define(eq=False)
class Topics:
    """Finds the actor of a topic, starting it on first use.

    Shared by every connection of one hub; it is not an actor because it owns
    no state that needs one writer: the registry holds who serves a topic, and
    a start in progress is awaited rather than repeated.
    """

    routes: tuple[Route, ...]
    registry: actors.Registry
    #: The topics supervisor now (a new one if it was restarted).
    supervisor_of: Callable[[], actors.Supervisor]
    metrics: HubMetrics | None = None
    empty_grace: float = EMPTY_TOPIC_GRACE_SECONDS
    start_timeout: float = TOPIC_START_TIMEOUT_SECONDS
    crashes: CrashLedger = attrs.Factory(CrashLedger)
    #: Where joins that must first start their topic run (the hub's nursery).
    nursery: trio.Nursery | None = None
    _starting: dict[str, trio.Event] = attrs.Factory(dict)

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run `async_fn(*args)` in the hub's nursery (a join waiting for its topic to start)."""
        assert self.nursery is not None, "Topics.nursery is set by serve_hub"
        self.nursery.start_soon(async_fn, *args)

    def route_for(self, name: str) -> Route | None:
        """The first route matching `name`, in declaration order."""
        for route in self.routes:
            if route.matches(name):
                return route
        return None

    def whereis(self, name: str) -> actors.ActorRef | None:
        """The live actor of topic `name`, or None if it is not running."""
        return self.registry.whereis(topic_name_key(name))

    async def actor_for(self, name: str, route: Route) -> actors.ActorRef:
        """The live actor of topic `name`, started now if there is none.

        Raises actors.StartError if the service fails to start, and
        TopicUnavailableError if the topic crashed too often lately.
        """
        key = topic_name_key(name)
        closed_until = self.crashes.closed_until(name, trio.current_time())
        if closed_until is not None:
            seconds = max(1, math.ceil(closed_until - trio.current_time()))
            raise TopicUnavailableError(
                f"topic {name!r} crashed {self.crashes.max_crashes} times lately; "
                f"try again in {seconds} s"
            )
        while True:
            ref = self.registry.whereis(key)
            if ref is not None:
                return ref
            starting = self._starting.get(name)
            if starting is None:
                break
            await starting.wait()
        starting = self._starting[name] = trio.Event()
        try:
            # Bounded: a service whose `started` hangs (a database that does
            # not answer) must not hold its joiners, and the joiners waiting
            # behind them, forever. A start cut short cancels the child.
            with trio.move_on_after(self.start_timeout):
                return await self.supervisor_of().start_child(
                    actors.ChildSpec(
                        id=None,
                        start=functools.partial(
                            TopicActor, crashes=self.crashes, empty_grace=self.empty_grace
                        ),
                        args=(name, route, self.metrics),
                        # Not restarted by the supervisor: a topic that crashed has
                        # lost its members and state, its members are told and
                        # join again, and that join starts it afresh. So a topic
                        # a client can crash at will never drains a restart
                        # budget that every topic shares.
                        restart=actors.Restart.TEMPORARY,
                        label=f"topic {name}",
                    )
                )
            raise actors.StartError(name, TimeoutError(f"not ready within {self.start_timeout} s"))
        except actors.StartError:
            self.crashes.record(name, trio.current_time())
            raise
        finally:
            del self._starting[name]
            starting.set()

    def count(self) -> int:
        return self.supervisor_of().count_children()
