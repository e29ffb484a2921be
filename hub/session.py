"""The session: one client's connection actor, between its transport and the topics.

A session holds the client's protocol machine, its memberships and its
outbox (the transport's), whatever carries its messages (`hub.transport`).
It runs as two tasks, no more:

- the **reader** is the task that accepted the client (the gateway's, for a
  WebSocket): `serve_session` reads the transport and feeds each message to
  `Session.receive`, which answers what the protocol machine answers alone
  and hands requests to topic actors without ever waiting on them (a full
  topic answers `overloaded`);
- the **actor** task, under the hub's sessions supervisor, handles the
  session's mailbox (topic actors' Downs, joins to retry) and, only when the
  client's socket is full, waits for it to drain (`flush`).

Everything for the client goes through one ordered path: `deliver` (called
by topic actors, synchronously) and the reader's replies both `send` to the
transport, which writes at once when the socket can take it. So a Leave's
Reply can neither overtake the pushes delivered before it nor follow one
delivered after it, and there is no second writer and no lock.

A client whose outbox overflows, or whose backlog its socket does not
drain within `write_timeout`, is evicted (Close 1013 "slow consumer", its backlog
dropped), so it cannot slow anyone else. When the session ends, for any
reason, its topics learn it through their monitors on it, and its own
monitors on them are dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import actors
from hub.errors import ErrorCode, TopicLimitError, TopicUnavailableError
from hub.identity import Identity, user_of
from hub.permissions import Action, action_of_call
from hub.protocol import (
    BYTES_PER_SECOND,
    MALFORMED_WINDOW_SECONDS,
    MAX_MALFORMED,
    MAX_MESSAGE_BYTES,
    MESSAGES_PER_SECOND,
    SLOW_CONSUMER_REASON,
    Call,
    Close,
    CloseCode,
    Codec,
    Dispatch,
    EndCode,
    Error,
    Expiring,
    Join,
    Leave,
    Publish,
    Refresh,
    Reply,
    Send,
    ServerFrame,
    ServerMachine,
    codec_for,
)
from hub.protocol import Action as ProtocolAction
from hub.tokens import DEFAULT_LEEWAY_SECONDS, DEFAULT_REFRESH_LEAD_SECONDS, TokenError
from hub.topics import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    MAX_CALL_TIMEOUT_SECONDS,
    CallService,
    JoinAnswered,
    JoinTopic,
    LeaveTopic,
    Member,
    MembershipEnded,
    Outbound,
    PublishEvent,
    Route,
    SendFrame,
    ToConnection,
    call_deadline,
)
from hub.transport import OutboxFullError, Transport, TransportClosed, Wire

if TYPE_CHECKING:
    from hub.app import HubRuntime

__all__ = ["Session", "SessionSettings", "serve_session"]

logger = logging.getLogger(__name__)

# The session's own mailbox: Downs of topic actors (delivered past capacity,
# never dropped), joins to retry and flush requests (one at a time).
SESSION_MAILBOX_CAPACITY: Final = 64

#: Calls one client may have waiting for their replies at once.
MAX_CALLS_IN_FLIGHT: Final = 32

# A join that races a topic actor stopping (its last member just left) is
# sent again to a fresh actor at most this many times.
JOIN_ATTEMPTS: Final = 3


@attrs.frozen
class SessionSettings:
    """The limits of one session (from the hub's configuration)."""

    #: Largest message the client may send, in bytes: its codec's limit, as
    #: it is the transport's (`websocket.max_message_size`).
    max_message_size: int = MAX_MESSAGE_BYTES
    #: Malformed frames the client may send in a burst before it is closed (1008).
    max_malformed: int = MAX_MALFORMED
    #: The malformed-frame allowance refills fully over this many seconds.
    malformed_window_seconds: float = MALFORMED_WINDOW_SECONDS
    #: How long a Call waits for its service unless the client asks for less.
    call_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS
    #: The longest a client may ask a Call to wait.
    max_call_timeout: float = MAX_CALL_TIMEOUT_SECONDS

    #: How long a client's backlog may take to drain before it is evicted.
    write_timeout: float = 10.0
    #: How long the Close (and what is queued before it) may take to go out.
    close_timeout: float = 3.0
    #: Most topics one connection may have joined or be joining at once.
    max_topics: int = 100
    #: Joins one connection may send per second (a burst of as many at once).
    joins_per_second: float = 20.0
    #: Messages (heartbeats included) one connection may send per second, and in a burst.
    messages_per_second: float = MESSAGES_PER_SECOND
    #: Message bytes one connection may send per second, and in a burst.
    bytes_per_second: float = BYTES_PER_SECOND
    #: Calls one connection may have waiting for their replies at once.
    max_calls_in_flight: int = MAX_CALLS_IN_FLIGHT
    #: A client is sent Expiring this long before its token runs out.
    refresh_lead: float = DEFAULT_REFRESH_LEAD_SECONDS
    #: A token's expiry is enforced this long after its `exp` (clock skew).
    token_leeway: float = DEFAULT_LEEWAY_SECONDS


#: The close reason when a connection's token ran out without a Refresh.
TOKEN_EXPIRED_REASON: Final = "token expired"


@attrs.frozen(eq=False)
class _TokenDue:
    """A timer of `identity`'s token, due at `deadline` (trio's clock): warn, or end.

    A timer of an identity the session no longer has (refreshed since) is ignored.
    """

    identity: Identity
    deadline: float
    expired: bool


@attrs.frozen
class _Flush:
    """The transport has a backlog: wait for the socket and write it."""


_FLUSH: Final = _Flush()

# The outbox key of a volatile push the socket could not take at once.
_VOLATILE: Final = "$volatile"

# How long a reader waits for its session to end once the client is gone.
_EXIT_WAIT_SECONDS: Final = 30.0


class Session(actors.Actor):
    """The actor of one client (see the module docstring)."""

    mailbox_capacity = SESSION_MAILBOX_CAPACITY
    overflow = actors.Overflow.FAIL

    # One per client: slots, not an instance dict.
    __slots__ = (
        "_calls",
        "_data",
        "_ending",
        "_flush_requested",
        "_joins",
        "_machine",
        "_running",
        "_runtime",
        "_settings",
        "_token_timer",
        "_topics",
        "codec",
        "id",
        "identity",
        "transport",
    )

    def __init__(
        self,
        runtime: HubRuntime,
        transport: Transport,
        identity: object,
        settings: SessionSettings | None = None,
    ) -> None:
        self._runtime = runtime
        self.transport = transport
        self.identity = identity
        self._settings = settings or SessionSettings()
        self.codec: Codec = codec_for(
            transport.subprotocol or "", max_message_bytes=self._settings.max_message_size
        )
        self._machine = ServerMachine(
            self.codec,
            max_topics=self._settings.max_topics,
            max_malformed=self._settings.max_malformed,
            malformed_window_seconds=self._settings.malformed_window_seconds,
            joins_per_second=self._settings.joins_per_second,
            messages_per_second=self._settings.messages_per_second,
            bytes_per_second=self._settings.bytes_per_second,
        )
        self.id = ""
        # Calls sent to topics and not yet answered: their ref -> their topic.
        self._calls: dict[int, str] = {}
        # Topic -> (its actor, our monitor on it), for topics joined or
        # joining: the actor's Down ends the membership.
        self._topics: dict[str, tuple[actors.ActorRef, actors.Monitor]] = {}
        # Joins sent and not yet answered, with their attempt, to send again
        # (a bounded number of times) if their actor ends first.
        self._joins: dict[str, tuple[Join, int]] = {}
        # Why the session is ending, when it chose to (eviction, policy close).
        self._ending: tuple[int, str] | None = None
        self._flush_requested = False
        # True from the actor's start until its stop hook.
        self._running = False
        # The application's data bag, made on first use (most sessions need none).
        self._data: dict[str, Any] | None = None
        # The next timer of the connection's token (Expiring, then the close), if any.
        self._token_timer: actors.Timer | None = None

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the client has joined or is joining (for the observer)."""
        return tuple(self._topics)

    @property
    def data(self) -> dict[str, Any]:
        """The application's own data for this connection (`on_connect` fills it)."""
        if self._data is None:
            self._data = {}
        return self._data

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the session from the server: the client gets a Close with `code` and `reason`."""
        self._end(code, reason)

    @property
    def ended(self) -> bool:
        """Whether the session has stopped taking requests."""
        return not self._running or self._ending is not None or self.transport.closing

    # --- what topics call (the Subscriber protocol) -----------------------------

    def deliver(self, item: Outbound | ToConnection) -> None:
        """Send `item` to the client without waiting; evict the client if it is too far behind."""
        if type(item) is Outbound:
            if self._machine.is_joined(item.topic):
                wire = item.messages.get(self.codec)
                if wire is not None:
                    if item.volatile:
                        if self.transport.backlog:
                            # Volatile: never queued behind what the client has not read.
                            self._runtime.metrics.volatile_dropped.inc()
                            return
                        # One the socket cannot take at once waits as latest-value
                        # state does: it does not make the client "behind".
                        key: Hashable | None = (item.topic, item.event, _VOLATILE)
                    else:
                        key = None if item.key is None else (item.topic, item.key)
                    self._send(wire, key)
            return
        self._take(item)  # type: ignore[arg-type]

    def _send(self, wire: Wire, key: Hashable | None = None) -> None:
        try:
            if self.transport.send(wire, key):
                self._runtime.metrics.conflated.inc()
        except OutboxFullError:
            self._evict()
            return
        self._runtime.metrics.counts.messages_out += 1

    def _send_frame(self, frame: ServerFrame) -> None:
        code = getattr(frame, "code", None) or getattr(frame, "error_code", None)
        if code:
            self._runtime.metrics.errors.labels(code=str(code)).inc()
        self._send(Wire(self.codec.encode(frame)))

    def _send_actions(self, actions: Sequence[Any]) -> None:
        for action in actions:
            if type(action) is Send:
                self._send_frame(action.frame)

    def _evict(self) -> None:
        """Disconnect a client that fell too far behind (Close 1013), counting it once."""
        if self._ending is not None:
            return
        self._ending = (CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON)
        self._runtime.metrics.slow_consumers.inc()
        # Its backlog is dropped: the Close goes right after what is in flight,
        # so a client that still reads learns why, at once.
        self.transport.close(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON, discard=True)
        # The client's doing, not a bug of ours: the actor is ended, not crashed.
        self.ref.kill()

    def _take(self, item: ToConnection) -> None:
        """Apply a topic's answer; what the client is to be told is sent at once."""
        machine = self._machine
        match item:
            case SendFrame(frame=frame, wire=wire):
                if self._calls and frame.ref is not None:
                    self._calls.pop(frame.ref, None)
                    if not self._calls:
                        self._calls = {}  # an emptied dict keeps its table
                if wire is None:
                    self._send_frame(frame)
                else:
                    self._send(wire)
            case JoinAnswered(topic=topic, topic_ref=topic_ref, ok=ok):
                if self._topic_ref(topic) is not topic_ref or topic not in self._joins:
                    # The client left, or this answer is from a stale actor:
                    # a membership the client does not know of must not stay.
                    if ok:
                        topic_ref.notify(LeaveTopic(self.ref))
                    return
                del self._joins[topic]
                if not self._joins:
                    self._joins = {}  # an emptied dict keeps its table; an idle client needs none
                if ok:
                    self._runtime.metrics.joins.inc()
                    # From now on the topic's broadcasts reach this client,
                    # after the Reply (sent first, below, in the same call).
                    self._send_actions(machine.join_succeeded(topic, item.payload))
                    self._runtime.fanout.add(topic, self.id, self)
                else:
                    self._forget(topic)
                    self._send_actions(
                        machine.join_failed(topic, code=item.code, message=item.message)
                    )
            case MembershipEnded(topic=topic, code=code, reason=reason):
                if topic in self._joins:
                    # Sent for a membership the client has left since (its
                    # new join is not answered yet): it ends nothing now.
                    return
                self._forget(topic)
                self._send_actions(machine.ended(topic, code=code, reason=reason))
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, item)

    # --- the actor -----------------------------------------------------------------

    async def run(self) -> None:
        self.id = f"c{self.ref.id}{self._runtime.member_suffix}"
        self.transport.on_backlog = self._request_flush
        self.transport.on_frame = self._frame
        ctx = self.ctx
        self._running = True
        ctx.ready()
        self._watch_token()
        while True:
            self._flush_requested = False
            if self.transport.backlog and await self._flush():
                if await self._serve_stalled():
                    break  # asked to stop
                continue
            try:
                batch = await ctx.receive_batch()
            except trio.EndOfChannel:
                break  # asked to stop: write what is queued, then close
            for item in batch:
                self._handle(item)
            del batch, item  # not kept while waiting (see actors.Actor.run)
        if self.transport.backlog:
            await self._flush()

    def _handle(self, item: Any) -> None:
        match item:
            case _Flush():
                pass  # the loop flushes before it waits again
            case actors.Down(ref=topic_ref, reason=reason):
                self._topic_ended(topic_ref, reason)
            case _TokenDue(identity=identity) if identity is not self.identity:
                pass  # a timer of the token the client has refreshed since
            case _TokenDue(identity=identity, deadline=deadline, expired=False):
                left = max(deadline - trio.current_time(), 0.0)
                self._send_frame(Expiring(left))
                # One timer at a time: a connection holds no more for its token.
                self._token_timer = self.ctx.send_after(
                    left, _TokenDue(identity, deadline, expired=True)
                )
            case _TokenDue():
                self._runtime.metrics.policy_closes.inc()
                self._end(CloseCode.POLICY_VIOLATION, TOKEN_EXPIRED_REASON)
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, item)

    def _watch_token(self) -> None:
        """Time the connection's credential: an Expiring frame `refresh_lead` ahead, then 1008.

        A token's times are on the wall clock; its timers run on trio's,
        from how much of it is left now (plus the leeway the token was
        checked with). The timer of a token refreshed since is cancelled
        (one already queued is ignored: `_handle`).
        """
        if self._token_timer is not None:
            self._token_timer.cancel()
            self._token_timer = None
        identity = self.identity
        if not isinstance(identity, Identity) or identity.expires_at is None:
            return
        left = max(identity.expires_at + self._settings.token_leeway - time.time(), 0.0)
        deadline = trio.current_time() + left
        warn_in = max(left - self._settings.refresh_lead, 0.0)
        self._token_timer = self.ctx.send_after(
            warn_in, _TokenDue(identity, deadline, expired=False)
        )

    def _request_flush(self) -> None:
        if not self._flush_requested:
            self._flush_requested = True
            self.ref.cast(_FLUSH)

    async def _flush(self) -> bool:
        """Write the backlog as the socket takes it; evict a client that takes nothing.

        A client with only latest-value messages waiting (game state) is
        slow, not behind: its backlog cannot grow, so it is not evicted (its
        liveness is the idle timeout's business). Returns True for such a
        client, not written to within the write timeout (`_serve_stalled`).
        """
        with trio.move_on_after(self._settings.write_timeout) as waited:
            try:
                await self.transport.flush()
            except TransportClosed:
                return False  # the client is gone; its reader ends the session
        if not waited.cancelled_caught:
            return False
        if self.transport.behind:
            self._evict()
            return False
        return True

    async def _serve_stalled(self) -> bool:
        """Handle the mailbox while the backlog of a stalled client is written; True at its end.

        A client that reads nothing, with only latest-value state waiting,
        must not hold up its session: its token's expiry, its topics' ends
        and the hub's shutdown are handled as they come. The writing goes on
        meanwhile, and still evicts the client once something that must be
        written (a Reply, an Expiring frame) has waited a write timeout.
        Returns once the backlog is written (False) or the mailbox is
        closed (True).
        """
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                while await self._flush():
                    pass
                nursery.cancel_scope.cancel()  # written (or evicted): back to the usual loop

            nursery.start_soon(write)
            closed = False
            while not closed:
                try:
                    batch = await self.ctx.receive_batch()
                except trio.EndOfChannel:
                    nursery.cancel_scope.cancel()
                    closed = True
                    continue
                for item in batch:
                    self._handle(item)
                del batch, item
        return closed

    async def stopped(self, reason: actors.ExitReason) -> None:
        # This session's watches on its topics end with it: a long-lived topic
        # must not keep a reference to every client that ever left it.
        fanout = self._runtime.fanout
        for topic, (_topic_ref, monitor) in self._topics.items():
            actors.demonitor(monitor)
            fanout.remove(topic, self.id)
        self._topics.clear()
        self._running = False
        match reason:
            case _ if self._ending is not None:
                code, text = self._ending
            case actors.Shutdown():
                code, text = CloseCode.GOING_AWAY, "server shutting down"
            case actors.Crashed():
                code, text = CloseCode.INTERNAL_ERROR, "internal error"
            case _:
                code, text = CloseCode.NORMAL, ""
        self.transport.close(code, text)
        # A client that is gone (TransportClosed) has nothing more to be told.
        if self.transport.backlog:
            with (
                trio.move_on_after(self._settings.close_timeout),
                contextlib.suppress(TransportClosed),
            ):
                await self.transport.flush()
        # The transport no longer calls back: no cycle through it to this session.
        self.transport.on_backlog = None
        self.transport.on_frame = None

    # --- reading: what the client sends -------------------------------------------

    def receive(self, data: str | bytes) -> None:
        """Take one message from the client (the reader calls this); never waits."""
        if self.ended:
            return
        self._runtime.metrics.counts.messages_in += 1
        self._apply(self._machine.receive(data, trio.current_time()))

    def _frame(self) -> None:
        """Charge a frame that is no message of its own (a ping, a fragment) to the rate."""
        if not self.ended:
            self._apply(self._machine.frame(trio.current_time()))

    def _apply(self, actions: list[ProtocolAction]) -> None:
        if self._machine.limit_hit is not None:
            self._runtime.metrics.limit_hit(self._machine.limit_hit)
        for action in actions:
            match action:
                case Send(frame=frame):
                    self._send_frame(frame)
                case Dispatch(frame=frame):
                    self._dispatch(frame)
                case Close(code=code, reason=reason):
                    self._runtime.metrics.policy_closes.inc()
                    self._end(code, reason)

    def _end(self, code: int, reason: str) -> None:
        if self._ending is None:
            self._ending = (code, reason)
            self.transport.close(code, reason)
            self.ref.kill()

    def _dispatch(self, frame: Join | Leave | Publish | Call | Refresh) -> None:
        match frame:
            case Refresh(ref=ref, token=token):
                before = self.identity
                self._send_frame(self._refresh(ref, token))
                if self.identity is not before:
                    self._recheck_memberships()
            case Join():
                self._join(frame, attempt=1)
            case Leave(topic=topic):
                topic_ref = self._forget(topic)
                if topic_ref is not None:
                    # Past capacity if need be: a Leave must not be lost, or
                    # the topic would push to this client for nothing. A
                    # topic that ended first has nothing left to leave.
                    topic_ref.notify(LeaveTopic(self.ref))
            case Publish(ref=ref, topic=topic, event=event, payload=payload):
                if self._permitted(frame, Action.PUBLISH):
                    self._to_topic(frame, PublishEvent(self.ref, ref, event, payload))
            case Call(ref=ref, topic=topic, event=event, payload=payload, timeout=timeout):
                if not self._permitted(frame, action_of_call(event)):
                    return
                calls = self._calls
                if len(calls) >= self._settings.max_calls_in_flight and ref not in calls:
                    self._runtime.metrics.limit_hit("calls_in_flight")
                    limit = self._settings.max_calls_in_flight
                    message = f"at most {limit} calls wait for replies at once; await one first"
                    self._refuse(frame, ErrorCode.RATE_LIMITED, message)
                    return
                deadline = call_deadline(
                    trio.current_time(),
                    timeout,
                    default=self._settings.call_timeout,
                    maximum=self._settings.max_call_timeout,
                )
                self._to_topic(frame, CallService(self.ref, ref, event, payload, deadline))

    def _refresh(self, ref: int, token: str) -> Reply:
        """Take a new token for the connection's user; the Reply says how it went."""
        verifier = self._runtime.tokens
        if verifier is None:
            message = "this hub takes no tokens (it has no auth.secret)"
            return Reply.error(ref, None, ErrorCode.INVALID_TOKEN, message)
        try:
            identity = verifier.verify(token)
        except TokenError as error:
            return Reply.error(ref, None, ErrorCode.INVALID_TOKEN, error.reason)
        user = user_of(self.identity)
        if identity.user != user:
            message = (
                f"a refreshed token must be for this connection's user {user!r}, "
                f"not {identity.user!r}; connect again to change user"
                if user is not None
                else "this connection has no user; connect with a token to have one"
            )
            return Reply.error(ref, None, ErrorCode.FORBIDDEN, message)
        self.identity = identity
        self._watch_token()
        assert identity.expires_at is not None
        left = identity.expires_at + self._settings.token_leeway - time.time()
        return Reply(ref, None, True, {"expires_in": max(left, 0.0)})

    def _recheck_memberships(self) -> None:
        """End each membership the connection's refreshed token no longer allows.

        A refresh may narrow the grants a join was allowed by: such a topic
        is left, and the client told with an Ended frame (`forbidden`, and why).
        """
        topics = self._runtime.topics
        for topic in list(self._topics):
            route = topics.route_for(topic)
            if route is None:
                continue
            refusal = route.permissions.refusal(Action.JOIN, self.identity, topic, route.pattern)
            if refusal is None:
                continue
            topic_ref = self._forget(topic)
            if topic_ref is not None:
                topic_ref.notify(LeaveTopic(self.ref))
            reason = f"the refreshed token does not allow this: {refusal}"
            self._send_actions(self._machine.ended(topic, code=ErrorCode.FORBIDDEN, reason=reason))

    def _permitted(
        self, frame: Join | Publish | Call, action: Action, route: Route | None = None
    ) -> bool:
        """Check the route's permission of `action`; refuse the request (`forbidden`) if not."""
        route = route or self._runtime.topics.route_for(frame.topic)
        if route is None:
            return True  # a joined topic has a route; for a Join, `_join` says none serves it
        refusal = route.permissions.refusal(action, self.identity, frame.topic, route.pattern)
        if refusal is None:
            return True
        if isinstance(frame, Join):
            self._join_failed(frame.topic, ErrorCode.FORBIDDEN, refusal)
        else:
            self._refuse(frame, ErrorCode.FORBIDDEN, refusal)
        return False

    def _to_topic(self, frame: Publish | Call, request: PublishEvent | CallService) -> None:
        topic_ref = self._topic_ref(frame.topic)
        if topic_ref is None:
            return  # the machine only dispatches joined topics; ended meanwhile
        try:
            topic_ref.send_nowait(request)
            if type(frame) is Call:
                self._calls[frame.ref] = frame.topic
        except actors.MailboxFullError:
            message = f"topic {frame.topic!r} is overloaded; try again"
            self._refuse(frame, ErrorCode.OVERLOADED, message)
        except actors.ActorExitedError:
            pass  # its Down is queued: the client gets an Ended frame

    def _refuse(self, frame: Join | Publish | Call, code: str, message: str) -> None:
        if frame.ref:
            self._send_frame(Reply.error(frame.ref, frame.topic, code, message))
        else:
            self._send_frame(Error(None, code, message))

    def _join(self, join: Join, *, attempt: int) -> None:
        topics = self._runtime.topics
        topic = join.topic
        route = topics.route_for(topic)
        if route is None:
            self._join_failed(topic, ErrorCode.UNKNOWN_TOPIC, f"no service serves topic {topic!r}")
            return
        if attempt == 1 and not self._permitted(join, Action.JOIN, route):
            return
        if attempt > JOIN_ATTEMPTS:
            self._join_failed(
                topic, ErrorCode.SERVICE_ERROR, f"topic {topic!r} keeps stopping; try again"
            )
            return
        self._joins[topic] = (join, attempt)
        topic_ref = topics.whereis(topic)
        if topic_ref is not None:
            self._send_join(join, topic_ref)
        else:
            # Starting a topic awaits its service's `started`: in a task of the
            # hub's (the topics' starter), so that neither the reader nor the
            # writer waits on a topic, and an idle session needs no nursery.
            topics.start_soon(self._start_and_join, join, route)

    async def _start_and_join(self, join: Join, route: Route) -> None:
        topic = join.topic
        topics = self._runtime.topics
        try:
            topic_ref = await topics.actor_for(topic, route)
        except TopicUnavailableError as error:
            self._join_failed(topic, ErrorCode.SERVICE_ERROR, str(error))
            return
        except TopicLimitError as error:
            self._join_failed(topic, ErrorCode.TOPIC_LIMIT, str(error))
            return
        except (actors.NoSuchChildError, actors.ActorExitedError):
            # The topics supervisor is being restarted or the hub is stopping.
            message = f"topic {topic!r} cannot start now; try again"
            self._join_failed(topic, ErrorCode.SERVICE_ERROR, message)
            return
        except actors.StartError as error:
            self._runtime.metrics.topic_start_failures.inc()
            logger.warning("topic %r failed to start: %r", topic, error.cause)
            self._join_failed(topic, ErrorCode.SERVICE_ERROR, f"topic {topic!r} failed to start")
            return
        pending = self._joins.get(topic)
        if self._running and pending is not None and pending[0] is join:
            self._send_join(join, topic_ref)

    def _send_join(self, join: Join, topic_ref: actors.ActorRef) -> None:
        topic = join.topic
        self._watch(topic, topic_ref)
        member = Member(self.id, self.identity, join.params, self)
        try:
            topic_ref.send_nowait(JoinTopic(member, join.ref, join.offset, join.epoch))
        except actors.MailboxFullError:
            self._forget(topic)
            self._join_failed(
                topic, ErrorCode.OVERLOADED, f"topic {topic!r} is overloaded; try again"
            )
        except actors.ActorExitedError:
            pass  # stopped between the lookup and the send: its Down retries the join

    def _join_failed(self, topic: str, code: str, message: str) -> None:
        self._joins.pop(topic, None)
        if self._machine.is_joining(topic):
            self._send_actions(self._machine.join_failed(topic, code=code, message=message))

    def _topic_ended(self, topic_ref: actors.ActorRef, reason: actors.ExitReason) -> None:
        # A Down for a watch already dropped (the client left) finds nothing.
        topic = next((name for name, (ref, _) in self._topics.items() if ref is topic_ref), None)
        if topic is None:
            return
        del self._topics[topic]
        self._runtime.fanout.remove(topic, self.id)
        self._drop_calls(topic)
        pending = self._joins.get(topic)
        if pending is not None and isinstance(reason, actors.Normal):
            # The actor stopped (it had been empty a while) before it saw our
            # join: join again, to a fresh one, a bounded number of times.
            join, attempt = pending
            self._join(join, attempt=attempt + 1)
            return
        self._joins.pop(topic, None)
        if isinstance(reason, actors.Normal):
            code, text = EndCode.TOPIC_CLOSED, "the topic has closed"
        else:
            # Crashed, or stopped by the hub: its state is gone, a join starts it afresh.
            code, text = EndCode.TOPIC_CRASHED, "the topic ended unexpectedly; join again"
        self._send_actions(self._machine.ended(topic, code=code, reason=text))

    def _drop_calls(self, topic: str) -> None:
        """Forget the calls to `topic`: it ended, or the client left it, so no reply comes."""
        if self._calls:
            for ref in [ref for ref, to in self._calls.items() if to == topic]:
                del self._calls[ref]
            if not self._calls:
                self._calls = {}  # an emptied dict keeps its table

    def _topic_ref(self, topic: str) -> actors.ActorRef | None:
        entry = self._topics.get(topic)
        return None if entry is None else entry[0]

    def _watch(self, topic: str, topic_ref: actors.ActorRef) -> None:
        entry = self._topics.get(topic)
        if entry is not None:
            if entry[0] is topic_ref:
                return
            actors.demonitor(entry[1])
        self._topics[topic] = (topic_ref, actors.monitor(self.ref, topic_ref))

    def _forget(self, topic: str) -> actors.ActorRef | None:
        entry = self._topics.pop(topic, None)
        self._joins.pop(topic, None)
        self._drop_calls(topic)
        self._runtime.fanout.remove(topic, self.id)
        if self.transport.backlog:
            # A latest-value push of this membership that waits must not be
            # replaced by one of a later membership (it would overtake the
            # Leave's and the new Join's Replies).
            self.transport.release_keys(lambda key: type(key) is tuple and key[0] == topic)
        if entry is None:
            return None
        # No flush: a queued Down finds no topic of its actor and is ignored;
        # flushing would rebuild the mailbox on every leave.
        actors.demonitor(entry[1])
        return entry[0]


async def serve_session(session: Session, ref: actors.ActorRef) -> TransportClosed:
    """Read the session's transport until it closes, then see the session end.

    Runs in the task that accepted the client (the session's reader). When
    the client leaves, the session actor is ended; when the session ends on
    its own (eviction, shutdown), its Close ends this loop. Returns how the
    transport closed (its code and reason), for the hub's log.
    """
    try:
        await session.transport.serve(session.receive)
    except TransportClosed as closed:
        # Without its traceback: that would hold this frame (and the session,
        # its transport and socket) in a reference cycle until the garbage
        # collector finds it, for every client that ever disconnected.
        return closed.with_traceback(None)
    finally:
        if ref.alive:
            ref.kill()
            # Bounded by the session's stop hook, which is bounded itself.
            with trio.move_on_after(_EXIT_WAIT_SECONDS, shield=True):
                await ref.wait_exit()
