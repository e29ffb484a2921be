"""The topic actor: membership, and its service's handlers, one message at a time."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs
import trio

import actors
from hub.backplane import Backplane, History, recovery_for
from hub.errors import EncodeError, ErrorCode, HubError, JoinRefusedError, ServiceError
from hub.permissions import Action, Allow, action_of_call
from hub.presence import (
    META_EVENT,
    ListPresence,
    PresenceDue,
    PresenceLimitError,
    PresenceSettings,
    ResendPresence,
    SubscribePresence,
    TopicPresence,
    UnsubscribePresence,
)
from hub.presence import (
    PARAM as PRESENCE_PARAM,
)
from hub.protocol import Error, Payload, Reply
from hub.topics.crashes import CrashLedger
from hub.topics.history import (
    DEFAULT_HISTORY_MAX_READ,
    HISTORY_EVENT,
    HistoryRead,
    history_answer,
    is_reserved,
    join_reply_payload,
    replayed,
    resume_after,
)
from hub.topics.hooks import may_wait
from hub.topics.messages import (
    CallService,
    JoinAnswered,
    JoinTopic,
    LeaveTopic,
    Member,
    MembershipEnded,
    PublishEvent,
    SendFrame,
)
from hub.topics.routes import Route
from hub.topics.topic import TimerFired, Topic
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.services import Service
    from hub.topics.hub_api import HubServices

logger = logging.getLogger(__name__)

# Requests queued for one topic actor. A session's request to a full topic is
# answered `overloaded` at once: the sender is told, nobody waits.
TOPIC_MAILBOX_CAPACITY: Final = 4096

# A topic actor whose last member left waits this long for a member before
# it stops, so that a client reloading a page finds its topic, and its
# history, still there.
EMPTY_TOPIC_GRACE_SECONDS: Final = 10.0

# How long any one service hook may run before its topic is crashed.
HOOK_TIMEOUT_SECONDS: Final = 5.0

T = TypeVar("T")


@attrs.frozen
class _CheckEmpty:
    """The empty-topic grace period is over: stop unless someone joined."""


@attrs.frozen
class ServerPublish:
    """A call to the topic's actor: broadcast `event` from the server (not a member)."""

    event: str
    payload: Payload
    keep: bool = True


@attrs.frozen(eq=False)
class ServiceMessage:
    """A message for the topic's service from the hub or a backend: `handle_info` runs.

    Send it to a live topic's actor (`Topics.whereis`): Erlang's handle_info,
    for news that is not a member's (an inbox that changed, a match found).
    """

    message: object


@attrs.frozen
class TopicSettings:
    """The limits of every topic actor (from the hub's configuration)."""

    #: A topic whose last member left waits this long for one before it stops.
    empty_grace: float = EMPTY_TOPIC_GRACE_SECONDS
    #: How long any one service hook may run; past it, the topic crashes.
    hook_timeout: float = HOOK_TIMEOUT_SECONDS
    #: Presence defaults (`[presence]`), under what each route declares.
    presence: PresenceSettings = attrs.field(factory=PresenceSettings)
    #: Most events one `$history` call returns.
    history_max_read: int = DEFAULT_HISTORY_MAX_READ


class TopicLifecycle(Protocol):
    """Told when a topic's service has started and when its actor ends (the hub logs both)."""

    def topic_started(self, topic: str, route: str) -> None: ...

    def topic_stopped(self, topic: str, reason: actors.ExitReason, seconds: float) -> None: ...


def topic_name_key(name: str) -> Hashable:
    """The registry key of the topic actor for `name`."""
    return ("topic", name)


class _DeadlinePassed(Exception):
    """A client's Call deadline passed while its hook ran (answered call_timeout)."""


class HookTimeoutError(HubError):
    """A service hook ran past the hub's hook timeout (it crashes its topic)."""


class TopicWithoutPresenceError(HubError):
    """A presence request for a topic whose route keeps no presence."""


class ServiceExitError(HubError):
    """A service raised SystemExit, KeyboardInterrupt or another BaseException.

    Contained as a crash of its topic: a service cannot end the hub.
    """


class TopicActor(actors.Actor):
    """The actor behind one topic: membership, history position, its service's hooks.

    Every service hook runs through `_hook`: bounded by `hook_timeout` and
    contained, so that whatever a service raises (SystemExit and
    KeyboardInterrupt included) or however long it hangs, only its own topic
    crashes.
    """

    mailbox_capacity = TOPIC_MAILBOX_CAPACITY

    def __init__(
        self,
        name: str,
        route: Route,
        backplane: Backplane,
        metrics: HubMetrics | None = None,
        *,
        hub: HubServices | None = None,
        crashes: CrashLedger | None = None,
        settings: TopicSettings | None = None,
        lifecycle: TopicLifecycle | None = None,
        init: Payload = None,
    ) -> None:
        self.topic = Topic(name, backplane.publish, metrics, hub=hub, init=init)
        self._lifecycle = lifecycle
        # When the service had started (None until then: a failed start is no topic).
        self._started_at: float | None = None
        self._backplane = backplane
        self._crashes = crashes or CrashLedger()
        self._route = route
        self._settings = settings or TopicSettings()
        self._monitors: dict[actors.ActorRef, actors.Monitor] = {}
        self._empty_since = 0.0
        self._empty_timer: actors.Timer | None = None
        self._claimed = False
        self.service: Service | None = None

    async def run(self) -> None:
        self.ctx.register(topic_name_key(self.topic.name))
        self.topic._ctx = self.ctx
        await super().run()

    async def started(self) -> None:
        name = self.topic.name
        self._backplane.claim(name)
        self._claimed = True
        try:
            self.topic.position = await self._backplane.position(name)
            self.service = self._route.factory(self.topic)
            presence = self._route.presence
            if presence is None:
                presence = getattr(self.service, "presence", None)
            if presence:
                settings = presence.settings(self._settings.presence)
                self.topic.presence = TopicPresence(self.topic, settings, self.ctx)
            await self._hook("started", self.service.started)
        except BaseException:
            # A start that fails never reaches `stopped`: give the history
            # back here, or it would be held as owned for ever.
            self._claimed = False
            self._backplane.release(name)
            raise
        self._became_empty()
        self._started_at = trio.current_time()
        if self._lifecycle is not None:
            self._lifecycle.topic_started(name, self._route.pattern)

    async def stopped(self, reason: actors.ExitReason) -> None:
        if isinstance(reason, actors.Crashed):
            self._crashes.record(self.topic.name, trio.current_time())
            if self.service is not None:
                # Its members are told why in the service's words (a game's
                # `match_crashed`), before their sessions see the Down.
                code, text = self.service.crash_code, self.service.crash_reason
                for member in self.topic.members.values():
                    member.connection.deliver(MembershipEnded(self.topic.name, code, text))
        if self.topic.presence is not None:
            self.topic.presence.stopped()
        try:
            if self.service is not None:
                await self._hook("stopped", self.service.stopped)
        finally:
            if self._claimed:
                # The history outlives this actor for the retention time.
                self._backplane.release(self.topic.name)
            if self._lifecycle is not None and self._started_at is not None:
                seconds = trio.current_time() - self._started_at
                self._lifecycle.topic_stopped(self.topic.name, reason, seconds)

    @trio.lowlevel.enable_ki_protection
    async def _hook(
        self,
        hook: str,
        function: Callable[..., Awaitable[T]],
        *args: Any,
        deadline: float = math.inf,
    ) -> T:
        """Run one service hook, bounded and contained (see the class docstring).

        ServiceError (and JoinRefusedError) pass through: they are answers
        for the client. Anything else crashes the topic, whose log line names
        the hook. A `deadline` of the client's (a Call's) that comes before
        the hook timeout cancels the hook with _DeadlinePassed instead.
        KI-protected, so a real Ctrl+C is delivered to the hub's main task,
        never into a service: a KeyboardInterrupt seen here is the service's own.
        """
        if not may_wait(function):
            # It cannot reach a checkpoint, so no scope could cancel it (`hub.topics.hooks`).
            return await self._contained(hook, function(*args))
        timeout = self._settings.hook_timeout
        hook_deadline = trio.current_time() + timeout
        with trio.CancelScope(deadline=min(deadline, hook_deadline)):
            return await self._contained(hook, function(*args))
        if deadline <= hook_deadline:
            raise _DeadlinePassed
        raise HookTimeoutError(
            f"the service of topic {self.topic.name!r} did not return from {hook} "
            f"within {timeout} s"
        )

    async def _contained(self, hook: str, running: Awaitable[T]) -> T:
        """Await a hook: a BaseException of the service's (SystemExit, say) is its crash."""
        try:
            return await running
        except (Exception, trio.Cancelled):
            raise
        except BaseException as error:
            raise ServiceExitError(
                f"the service of topic {self.topic.name!r} raised {error!r} in {hook}"
            ) from error

    def _became_empty(self) -> None:
        """Start the grace period: stop unless a member joins before it ends."""
        self._empty_since = trio.current_time()
        if self._empty_timer is None or not self._empty_timer.active:
            self._empty_timer = self.ctx.send_after(self._settings.empty_grace, _CheckEmpty())

    async def handle(self, message: Any) -> None:
        await self._handle(message)
        await self._after()

    async def _after(self) -> None:
        """What follows every message: the kicked leave, presence pushes what changed."""
        while self.topic._kicked:
            member = self.topic._kicked.pop()
            await self._remove(member.connection.ref, already_removed=member)
        if self.topic.presence is not None:
            self.topic.presence.after_message()

    async def handle_call(self, request: Any, call: actors.Call) -> Any:
        presence = self.topic.presence
        match request:
            case ServerPublish(event=event, payload=payload, keep=keep):
                return self.topic.broadcast(event, payload, keep=keep)
            case ListPresence() if presence is not None:
                return presence.snapshot()
            case SubscribePresence(subscriber=subscriber) if presence is not None:
                try:
                    snapshot = presence.subscribe(subscriber)
                except PresenceLimitError as error:
                    call.fail(error)  # the caller's error, not this topic's
                    return actors.NO_REPLY
                await self._after()
                return snapshot
            case UnsubscribePresence(subscriber=subscriber) if presence is not None:
                if presence.unsubscribe(subscriber):
                    self._maybe_empty()
                return None
            case ListPresence() | SubscribePresence() | UnsubscribePresence():
                message = f"topic {self.topic.name!r} keeps no presence (see its route's presence=)"
                call.fail(TopicWithoutPresenceError(message))
                return actors.NO_REPLY
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, request)

    async def _handle(self, message: Any) -> None:
        assert self.service is not None
        topic = self.topic
        match message:
            case PublishEvent(connection=connection, ref=ref, event=event, payload=payload):
                member = topic.members.get(connection)
                if member is None:
                    return  # left (or was kicked) while this was queued
                if is_reserved(event) and (event != META_EVENT or topic.presence is None):
                    message = (
                        f"event {event!r} is the hub's: clients cannot publish '$' events "
                        f"(but {META_EVENT!r} where the topic keeps presence)"
                    )
                    _answer_error(member, ref, topic.name, ErrorCode.UNKNOWN_EVENT, message)
                    return
                if not await self._authorized(member, Action.PUBLISH, ref):
                    return
                try:
                    if topic.presence is not None and event == META_EVENT:
                        topic.presence.publish(member, payload)
                    else:
                        await self._hook(
                            "handle_event", self.service.handle_event, member, event, payload
                        )
                except ServiceError as error:
                    _answer_error(member, ref, topic.name, error.code, error.message)
                else:
                    if ref:
                        member.connection.deliver(SendFrame(Reply(ref, topic.name, True)))
            case CallService():
                await self._call(message)
            case JoinTopic():
                await self._join(message)
            case LeaveTopic(connection=connection):
                await self._remove(connection)
            case actors.Down(ref=ref):
                if topic.presence is not None and topic.presence.subscriber_down(ref):
                    self._maybe_empty()
                else:
                    # The session is gone, whichever of its monitors says so.
                    await self._remove(ref, ended=True)
            case TimerFired(event=event, payload=payload, timer=timer):
                if timer is not None and timer.interval is not None:
                    self._count_tick(message, timer)
                await self._hook("handle_timer", self.service.handle_timer, event, payload)
            case ServiceMessage(message=info):
                await self._hook("handle_info", self.service.handle_info, info)
            case PresenceDue() if topic.presence is not None:
                topic.presence.timer_fired(message)
            case ResendPresence(subscriber=subscriber) if topic.presence is not None:
                topic.presence.resend(subscriber)
            case UnsubscribePresence(subscriber=subscriber) if topic.presence is not None:
                # As a message: a stand-in of another node's (`hub.cluster.presence`)
                # leaves its place before a subscribe sent after it.
                if topic.presence.unsubscribe(subscriber):
                    self._maybe_empty()
            case _CheckEmpty():
                self._empty_timer = None
                if not self._empty():
                    return
                left = self._empty_since + self._settings.empty_grace - trio.current_time()
                if left <= 0:
                    self.ctx.stop()
                else:  # emptied again meanwhile: wait the rest of the new period
                    self._empty_timer = self.ctx.send_after(left, _CheckEmpty())
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, message)

    def _empty(self) -> bool:
        """Nobody needs the topic: no member, no presence subscriber."""
        presence = self.topic.presence
        return not self.topic.members and (presence is None or not presence.subscribers)

    def _maybe_empty(self) -> None:
        if self._empty():
            self._became_empty()

    def _count_tick(self, fired: TimerFired, timer: actors.Timer) -> None:
        """Account for one tick of a repeating timer: how late it runs, how many were missed."""
        late = max(0.0, trio.current_time() - timer.due)
        missed = timer.missed - fired.missed_seen
        fired.missed_seen = timer.missed
        self.topic.ticks.record(late, missed)
        metrics = self.topic.metrics
        if metrics is not None:
            metrics.tick_lateness.observe(late)
            if missed:
                metrics.ticks_missed.inc(missed)

    async def _join(self, request: JoinTopic) -> None:
        """Run the service's `join`; answer; replay what a recovering client missed; `joined`.

        The history is read before the Reply, so that the Reply can say
        whether the client recovered; the replay follows it before this
        actor handles anything else, so no new push can come between.
        """
        assert self.service is not None
        member = request.member
        connection = member.connection
        name = self.topic.name
        presence = self.topic.presence
        try:
            if self._route.permissions.join is Allow.SERVICE and not await self._hook(
                "authorize", self.service.authorize, member, Action.JOIN
            ):
                raise JoinRefusedError(
                    f"the service of topic {name!r} does not allow this connection to join",
                    code=ErrorCode.FORBIDDEN,
                )
            claim = None
            if presence is not None:
                member, claim = presence.admit(member)
            payload = await self._hook("join", self.service.join, member, dict(member.params))
        except (JoinRefusedError, ServiceError) as error:
            connection.deliver(
                JoinAnswered(name, self.ref, False, code=error.code, message=error.message)
            )
            return
        self.topic._add(member)
        self._monitors[connection.ref] = self.ctx.monitor(connection.ref)
        if presence is not None:
            listen = PRESENCE_PARAM in member.params and await self._may(member, Action.PRESENCE)
            for displaced in presence.enter(member, claim, listen=listen):
                other = self.topic.members.get(displaced)
                if other is not None:
                    reason = f"{member.user!r} joined as the authenticated user of that name"
                    self.topic.kick(other, reason, code=ErrorCode.NAME_TAKEN)
        after = resume_after(request.offset, request.epoch, self.topic.position)
        try:
            if await self._may(member, Action.HISTORY):
                history = await self._backplane.history(name, after=after)
            else:
                # Recovery replays history: not for a member the route does
                # not let read it (it would be `$history` by another door).
                history = History(self.topic.position, (), complete=False)
        except ConnectionError as error:
            # The backplane is away (Redis down): the member is in, but what
            # it missed cannot be read now; it is told it did not recover.
            logger.warning("topic %r: history unavailable for a join: %s", name, error)
            history = History(self.topic.position, (), complete=False)
        recovery = recovery_for(history, request.epoch, request.offset)
        connection.deliver(
            JoinAnswered(name, self.ref, True, join_reply_payload(payload, recovery))
        )
        for record in replayed(recovery, member.id):
            self.topic.push(member, record.event, record.payload, offset=record.offset)
        await self._hook("joined", self.service.joined, member, recovery)
        if presence is not None and member.connection.ref in self.topic.members:
            # After what `joined` replays: the missed events follow the Reply
            # first, then who is here.
            presence.send_state(member)

    async def _may(self, member: Member, action: Action) -> bool:
        """Whether the route lets `member` have what `action` gives (presence pushes, history)."""
        assert self.service is not None
        permissions, name = self._route.permissions, self.topic.name
        if permissions.rule(action) is not Allow.SERVICE:
            refusal = permissions.refusal(action, member.identity, name, self._route.pattern)
            return refusal is None
        try:
            allowed: bool = await self._hook("authorize", self.service.authorize, member, action)
        except ServiceError:
            return False  # its join stands; it is not given this
        return allowed

    async def _authorized(self, member: Member, action: Action, ref: int) -> bool:
        """Ask the service about `action` if the route leaves it to the service; answer a no."""
        assert self.service is not None
        if self._route.permissions.rule(action) is not Allow.SERVICE:
            return True  # the session checked the route's rule already
        name = self.topic.name
        try:
            if await self._hook("authorize", self.service.authorize, member, action):
                return True
        except ServiceError as error:
            _answer_error(member, ref, name, error.code, error.message)
            return False
        message = f"the service of topic {name!r} does not allow {action.value!r} here"
        _answer_error(member, ref, name, ErrorCode.FORBIDDEN, message)
        return False

    async def _remove(
        self,
        connection: actors.ActorRef,
        *,
        already_removed: Member | None = None,
        ended: bool = False,
    ) -> None:
        """`connection` left, was kicked, or (`ended`) its session ended."""
        assert self.service is not None
        member = self.topic._remove(connection) or already_removed
        monitor = self._monitors.pop(connection, None)
        self._monitors = actors.compacted(self._monitors)
        if monitor is not None:
            # No flush: a Down already queued is harmless (see `_handle`), and
            # flushing would rebuild the mailbox on every leave.
            self.ctx.demonitor(monitor)
        if member is not None:
            if self.topic.presence is not None:
                # A connection that ended keeps its entry for the grace
                # period; one that left on purpose (or was kicked) goes now.
                self.topic.presence.left(connection, ended=ended)
            await self._hook("leave", self.service.leave, member)
            self._maybe_empty()

    async def _call(self, request: CallService) -> None:
        assert self.service is not None
        member = self.topic.members.get(request.connection)
        if member is None:
            return
        name = self.topic.name
        if request.deadline <= trio.current_time():
            _answer_error(member, request.ref, name, ErrorCode.CALL_TIMEOUT, "call timed out")
            return
        if not await self._authorized(member, action_of_call(request.event), request.ref):
            return
        if is_reserved(request.event):
            await self._hub_call(member, request)
            return
        # The client's deadline bounds the call: a backend actor the service
        # calls inherits what is left of it (ActorRef.call), and is cancelled
        # with it; no late answer goes anywhere.
        try:
            result = await self._hook(
                "handle_call",
                self.service.handle_call,
                member,
                request.event,
                request.payload,
                deadline=request.deadline,
            )
        except ServiceError as error:
            _answer_error(member, request.ref, name, error.code, error.message)
            return
        except (_DeadlinePassed, actors.CallTimeoutError):
            # Out of the client's time (a backend call too): answered as such.
            message = f"the service of {name!r} did not answer in time"
            _answer_error(member, request.ref, name, ErrorCode.CALL_TIMEOUT, message)
            return
        self._answer(member, request.ref, result)

    async def _hub_call(self, member: Member, request: CallService) -> None:
        """Answer a Call of one of the hub's own `$` events; the service never sees these."""
        assert self.service is not None
        name = self.topic.name
        presence = self.topic.presence
        if request.event == META_EVENT and presence is not None:
            # Who is here, whether or not the member asked for the pushes (the
            # route's `presence` permission was checked, as for `$history`).
            self._answer(member, request.ref, presence.wire_state())
            return
        if request.event != HISTORY_EVENT:
            answers = HISTORY_EVENT if presence is None else f"{HISTORY_EVENT!r} and {META_EVENT!r}"
            message = f"{request.event!r} is not a call the hub answers (it answers {answers})"
            _answer_error(member, request.ref, name, ErrorCode.UNKNOWN_EVENT, message)
            return
        try:
            read = HistoryRead.parse(request.payload, max_limit=self._settings.history_max_read)
        except ServiceError as error:
            _answer_error(member, request.ref, name, error.code, error.message)
            return
        # Who may read it was decided before: the route's `history`
        # permission (`hub.permissions`), by the session or `authorize`.
        start = read.start(self.topic.position)
        # Bounded by the client's deadline, and answered when the backplane
        # is away (Redis down): a read must neither hold up the topic's other
        # members for long nor crash the topic.
        with trio.move_on_at(request.deadline):
            try:
                history = await self._backplane.history(name, after=start, limit=read.limit)
            except ConnectionError as error:
                logger.warning("topic %r: history unavailable for a read: %s", name, error)
                message = f"the history of topic {name!r} cannot be read now; try again"
                _answer_error(member, request.ref, name, ErrorCode.OVERLOADED, message)
                return
            self._answer(member, request.ref, history_answer(read, history))
            return
        message = f"the history of topic {name!r} was not read in time"
        _answer_error(member, request.ref, name, ErrorCode.CALL_TIMEOUT, message)

    def _answer(self, member: Member, ref: int, result: Payload) -> None:
        """Send a Call's ok Reply, or a `service_error` if the client's codec cannot carry it."""
        name = self.topic.name
        try:
            reply = Reply(ref, name, True, result)
            wire = Wire(member.connection.codec.encode(reply))
        except (EncodeError, ValueError) as error:
            # Something this client's codec cannot carry (bytes for a JSON
            # client, say): told to the client, not a crash of the topic.
            subprotocol = member.connection.codec.subprotocol
            message = f"the answer cannot be sent over {subprotocol}: {error}"
            _answer_error(member, ref, name, ErrorCode.SERVICE_ERROR, message)
            return
        member.connection.deliver(SendFrame(reply, wire))


def _answer_error(member: Member, ref: int, topic: str, code: str, message: str) -> None:
    """Tell the client its request failed: an error Reply, or an Error frame for ref 0."""
    frame: Reply | Error = (
        Reply.error(ref, topic, code, message) if ref else Error(None, code, message)
    )
    member.connection.deliver(SendFrame(frame))
