"""The connection actor: one per WebSocket, between the socket and the topics.

Two tasks, one actor. The reader takes messages off the socket, runs them
through the protocol machine and sends valid requests to topic actors
(waiting when a topic is busy: that slows this client, nobody else). The
writer is the actor's own loop: it drains the mailbox in batches (pushes,
replies, join answers, topic actors' Downs) and writes them to the socket,
several frames as one batch message when several are waiting.

Topics push to a connection with `deliver`, which never waits: a client so
far behind that its mailbox is full is disconnected (close 1013), so it
cannot slow anyone else. When the connection ends, for any reason, its topic
actors learn it through their monitors and drop the membership.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import trio
import trio_websocket

import actors
from hub.errors import ErrorCode, TopicUnavailableError
from hub.gateway import ConnectInfo
from hub.protocol import (
    MAX_BATCH_FRAMES,
    MAX_MESSAGE_BYTES,
    SLOW_CONSUMER_REASON,
    Call,
    Close,
    CloseCode,
    Codec,
    Dispatch,
    EndCode,
    Join,
    Leave,
    Message,
    Publish,
    Send,
    ServerFrame,
    ServerMachine,
    codec_for,
)
from hub.topics import (
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
    call_deadline,
)

if TYPE_CHECKING:
    from hub.app import HubRuntime

logger = logging.getLogger(__name__)

# Messages queued for one client: pushes, replies, join answers. A client this
# far behind is disconnected (1013, "slow consumer") so that it cannot stall
# the fan-out for everyone else. Latest-only pushes do not add up here.
OUTBOX_CAPACITY: Final = 1024

# How long one write to the socket may take. A client that reads nothing for
# this long is treated as a slow consumer. Writes are shielded for this long
# so that an eviction never cuts a frame in half.
WRITE_TIMEOUT_SECONDS: Final = 10.0

# How long the closing handshake may take when the connection ends.
CLOSE_TIMEOUT_SECONDS: Final = 3.0

# A join that races a topic actor stopping (its last member just left) is
# sent again to a fresh actor at most this many times.
JOIN_ATTEMPTS: Final = 3


class Connection(actors.Actor):
    """The actor of one WebSocket connection (see the module docstring)."""

    mailbox_capacity = OUTBOX_CAPACITY
    overflow = actors.Overflow.FAIL

    def __init__(
        self,
        runtime: HubRuntime,
        websocket: trio_websocket.WebSocketConnection,
        info: ConnectInfo,
    ) -> None:
        self._runtime = runtime
        self._websocket = websocket
        self._info = info
        self.codec: Codec = codec_for(info.subprotocol or "")
        self._machine = ServerMachine(self.codec)
        self.id = ""
        # Topic -> its actor, for topics joined or joining.
        self._topics: dict[str, actors.ActorRef] = {}
        # Topic actor -> (topic, monitor): a topic actor's Down ends the membership.
        self._watching: dict[actors.ActorRef, tuple[str, actors.Monitor]] = {}
        # Joins sent and not yet answered, to send again if their actor ends first.
        self._joins: dict[str, Join] = {}
        # (topic, event) -> the newest latest-only push not yet written.
        self._latest: dict[tuple[str, str], Outbound] = {}
        self._close_code = CloseCode.NORMAL
        self._close_reason = ""
        self._evicted = False
        self._nursery: trio.Nursery | None = None
        # Held while `_send` writes one list of messages (see there).
        self._send_lock = trio.StrictFIFOLock()

    @property
    def identity(self) -> object:
        return self._info.identity

    # --- what topics call ----------------------------------------------------

    def deliver(self, item: Outbound | ToConnection) -> None:
        """Queue `item` for the client without waiting; evict the client if it is full."""
        if type(item) is Outbound and item.latest_only:
            key = (item.topic, item.event)
            if key in self._latest:
                # One is queued already: it will be written as this newest one.
                self._latest[key] = item
                self._runtime.metrics.conflated.inc()
                return
            self._latest[key] = item
        try:
            self.ctx.ref.send_nowait(item)
        except actors.MailboxFullError:
            self._evict()
        except actors.ActorExitedError:
            pass  # ending: the topic's monitor on this connection cleans up

    def _evict(self) -> None:
        """Disconnect a client that fell too far behind (close 1013), counting it once.

        Both a full mailbox and a stalled write notice a slow client, often
        the same one: a write is stalled while its mailbox fills.
        """
        if not self._evicted:
            self._evicted = True
            self._runtime.metrics.slow_consumers.inc()
        # The client's doing, not a bug of ours: the actor is ended, not
        # crashed, and `stopped` closes with 1013.
        self.ctx.ref.kill()

    # --- the actor -------------------------------------------------------------

    async def run(self) -> None:
        self.id = f"c{self.ref.id}"
        self._runtime.metrics.connection_opened()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read, nursery.cancel_scope)
            self.ctx.ready()
            await self._write()
            nursery.cancel_scope.cancel()

    async def stopped(self, reason: actors.ExitReason) -> None:
        self._runtime.metrics.connection_closed()
        match reason:
            case _ if self._evicted:
                code, text = CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON
            case actors.Shutdown():
                code, text = CloseCode.GOING_AWAY, "server shutting down"
            case actors.Crashed():
                code, text = CloseCode.INTERNAL_ERROR, "internal error"
            case _:
                code, text = self._close_code, self._close_reason
        with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
            await self._websocket.aclose(code, text)

    # --- writing: mailbox -> socket -------------------------------------------

    async def _write(self) -> None:
        while True:
            try:
                batch = await self.ctx.receive_batch(MAX_BATCH_FRAMES)
            except trio.EndOfChannel:
                return  # asked to stop, and everything queued is written
            messages: list[Message] = []
            for item in batch:
                self._take(item, messages)
            if messages and not await self._send(messages):
                return

    def _take(self, item: Any, messages: list[Message]) -> None:
        """Apply one mailbox item; append what the client is to be sent.

        Never awaits: between taking a batch and writing it, nothing else
        (a Leave's Reply from the reader, say) can slip in.
        """
        machine = self._machine
        match item:
            case Outbound(topic=topic):
                if item.latest_only:
                    item = self._latest.pop((topic, item.event), item)
                if machine.is_joined(topic):
                    message = item.messages.get(self.codec)
                    if message is not None:
                        messages.append(message)
            case SendFrame(frame=frame):
                messages.append(self._encode(frame))
            case JoinAnswered(topic=topic, topic_ref=topic_ref, ok=ok):
                if self._topics.get(topic) is not topic_ref or topic not in self._joins:
                    return  # the client left, or this answer is from a stale actor
                del self._joins[topic]
                if ok:
                    self._runtime.metrics.joins.inc()
                    actions = machine.join_succeeded(topic, item.payload)
                else:
                    self._forget(topic)
                    actions = machine.join_failed(topic, code=item.code, message=item.message)
                self._encode_sends(actions, messages)
            case MembershipEnded(topic=topic, code=code, reason=reason):
                self._forget(topic)
                self._encode_sends(machine.ended(topic, code=code, reason=reason), messages)
            case actors.Down(ref=topic_ref, reason=reason):
                self._topic_ended(topic_ref, reason, messages)
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, item)

    def _topic_ended(
        self, topic_ref: actors.ActorRef, reason: actors.ExitReason, messages: list[Message]
    ) -> None:
        watched = self._watching.pop(topic_ref, None)
        if watched is None:
            return
        topic = watched[0]
        if self._topics.get(topic) is topic_ref:
            del self._topics[topic]
        join = self._joins.get(topic)
        if join is not None and isinstance(reason, actors.Normal):
            # The actor stopped (it had been empty a while) before it saw our
            # join: join again, to a fresh one. In a task of its own, so that
            # this writer never waits on a topic (the machine refuses any other
            # request for the topic while the join is pending).
            assert self._nursery is not None
            self._nursery.start_soon(self._join_again, join)
            return
        self._joins.pop(topic, None)
        if isinstance(reason, actors.Normal):
            code, text = EndCode.TOPIC_CLOSED, "the topic has closed"
        else:
            # Crashed, or stopped by the hub: its state is gone, a join starts it afresh.
            code, text = EndCode.TOPIC_CRASHED, "the topic ended unexpectedly; join again"
        self._encode_sends(self._machine.ended(topic, code=code, reason=text), messages)

    async def _join_again(self, join: Join) -> None:
        replies: list[Message] = []
        await self._join(join, replies, attempt=2)
        if replies:
            await self._send(replies)

    async def _send(self, messages: Sequence[Message]) -> bool:
        """Write `messages` (as batches when several); False if the socket is gone."""
        codec = self.codec
        metrics = self._runtime.metrics
        try:
            # The reader's replies and the writer's batches each go out whole:
            # pushes the writer took before a Leave must not follow its Reply.
            async with self._send_lock:
                for chunk in _batches(messages):
                    message = chunk[0] if len(chunk) == 1 else codec.batch_encoded(chunk)
                    # Shielded, so that an eviction or shutdown never cuts a
                    # frame in half, and bounded by the write timeout, so that
                    # a client that reads nothing is cut off all the same.
                    # One scope per message (a batch of up to 100 frames):
                    # two per frame cost a quarter of the hub's time in a
                    # fan-out profile; one for the whole list would let a
                    # steady slow reader hold off a kill for minutes.
                    deadline = trio.current_time() + WRITE_TIMEOUT_SECONDS
                    with trio.CancelScope(shield=True, deadline=deadline) as guard:
                        await self._websocket.send_message(message)
                    if guard.cancelled_caught:
                        self._evict()
                        return False
                    metrics.messages_out.inc()
                    metrics.frames_out.inc(len(chunk))
        except trio_websocket.ConnectionClosed:
            return False
        return True

    def _encode_sends(self, actions: Sequence[Any], messages: list[Message]) -> None:
        for action in actions:
            if type(action) is Send:
                messages.append(self._encode(action.frame))

    def _encode(self, frame: ServerFrame) -> Message:
        code = getattr(frame, "code", None) or getattr(frame, "error_code", None)
        if code:
            self._runtime.metrics.errors.labels(code=str(code)).inc()
        return self.codec.encode(frame)

    # --- reading: socket -> topics --------------------------------------------

    async def _read(self, done: trio.CancelScope) -> None:
        """Read the socket until it closes, then end the connection."""
        websocket = self._websocket
        metrics = self._runtime.metrics
        try:
            while True:
                data = await websocket.get_message()
                metrics.messages_in.inc()
                replies: list[Message] = []
                close: Close | None = None
                for action in self._machine.receive(data, trio.current_time()):
                    match action:
                        case Send(frame=frame):
                            replies.append(self._encode(frame))
                        case Dispatch(frame=frame):
                            await self._dispatch(frame, replies)
                        case Close():
                            close = action
                if replies and not await self._send(replies):
                    return
                if close is not None:
                    metrics.policy_closes.inc()
                    self._close_code, self._close_reason = close.code, close.reason
                    return
        except trio_websocket.ConnectionClosed:
            return
        finally:
            done.cancel()

    async def _dispatch(self, frame: Join | Leave | Publish | Call, replies: list[Message]) -> None:
        match frame:
            case Join():
                await self._join(frame, replies, attempt=1)
            case Leave(topic=topic):
                topic_ref = self._forget(topic)
                if topic_ref is not None:
                    # A topic that ended first has nothing left to leave.
                    with contextlib.suppress(actors.ActorExitedError):
                        await topic_ref.send(LeaveTopic(self.ref))
            case Publish(ref=ref, topic=topic, event=event, payload=payload):
                await self._to_topic(topic, PublishEvent(self.ref, ref, event, payload))
            case Call(ref=ref, topic=topic, event=event, payload=payload, timeout=timeout):
                deadline = call_deadline(trio.current_time(), timeout)
                await self._to_topic(topic, CallService(self.ref, ref, event, payload, deadline))

    async def _join(self, join: Join, replies: list[Message], *, attempt: int) -> None:
        topics = self._runtime.topics
        topic = join.topic
        route = topics.route_for(topic)
        failure: tuple[str, str] | None = None
        if route is None:
            failure = (ErrorCode.UNKNOWN_TOPIC, f"no service serves topic {topic!r}")
        elif attempt > JOIN_ATTEMPTS:
            failure = (ErrorCode.SERVICE_ERROR, f"topic {topic!r} keeps stopping; try again")
        if failure is not None:
            self._joins.pop(topic, None)
            actions = self._machine.join_failed(topic, code=failure[0], message=failure[1])
            self._encode_sends(actions, replies)
            return
        assert route is not None
        try:
            topic_ref = await topics.actor_for(topic, route)
        except TopicUnavailableError as error:
            self._join_failed(topic, str(error), replies)
            return
        except (actors.NoSuchChildError, actors.ActorExitedError):
            # The topics supervisor is being restarted or the hub is stopping.
            self._join_failed(topic, f"topic {topic!r} cannot start now; try again", replies)
            return
        except actors.StartError as error:
            self._runtime.metrics.topic_start_failures.inc()
            logger.warning("topic %r failed to start: %r", topic, error.cause)
            self._join_failed(topic, f"topic {topic!r} failed to start", replies)
            return
        self._joins[topic] = join
        self._watch(topic, topic_ref)
        member = Member(self.id, self._info.identity, join.params, self)
        # A topic that stopped between the lookup and the send: its Down will
        # arrive, and the join is sent again then.
        with contextlib.suppress(actors.ActorExitedError):
            await topic_ref.send(JoinTopic(member, join.ref, join.offset))

    def _join_failed(self, topic: str, message: str, replies: list[Message]) -> None:
        self._joins.pop(topic, None)
        actions = self._machine.join_failed(topic, code=ErrorCode.SERVICE_ERROR, message=message)
        self._encode_sends(actions, replies)

    async def _to_topic(self, topic: str, request: PublishEvent | CallService) -> None:
        topic_ref = self._topics.get(topic)
        if topic_ref is None:
            return  # the machine only dispatches joined topics; ended meanwhile
        # A topic that ended has its Down queued: the client gets an Ended frame.
        with contextlib.suppress(actors.ActorExitedError):
            await topic_ref.send(request)

    def _watch(self, topic: str, topic_ref: actors.ActorRef) -> None:
        self._topics[topic] = topic_ref
        if topic_ref not in self._watching:
            self._watching[topic_ref] = (topic, actors.monitor(self.ref, topic_ref))

    def _forget(self, topic: str) -> actors.ActorRef | None:
        topic_ref = self._topics.pop(topic, None)
        self._joins.pop(topic, None)
        if topic_ref is not None:
            watched = self._watching.pop(topic_ref, None)
            if watched is not None:
                # No flush: a queued Down finds nothing in `_watching` and is
                # ignored; flushing would rebuild the mailbox on every leave.
                actors.demonitor(watched[1])
        return topic_ref


# What a batch message adds around its frames: a msgpack array16 header (3
# bytes) or JSON's brackets; each frame after the first also takes a comma.
_BATCH_FRAMING_BYTES: Final = 3


def _batches(messages: Sequence[Message]) -> Iterator[Sequence[Message]]:
    """Split `messages` into runs that each make one batch message a client can read.

    A run holds at most MAX_BATCH_FRAMES frames and comes to at most
    MAX_MESSAGE_BYTES bytes (UTF-8 for text), the most a client's decoder
    reads; a single message larger than that goes alone.
    """
    start, size = 0, _BATCH_FRAMING_BYTES
    for index, message in enumerate(messages):
        length = _wire_length(message) + 1
        if index > start and (
            index - start == MAX_BATCH_FRAMES or size + length > MAX_MESSAGE_BYTES
        ):
            yield messages[start:index]
            start, size = index, _BATCH_FRAMING_BYTES
        size += length
    if start < len(messages):
        yield messages[start:]


def _wire_length(message: Message) -> int:
    if isinstance(message, str) and not message.isascii():
        return len(message.encode())
    return len(message)
