"""Per-connection protocol state machines, sans IO: data in, actions out.

`ServerMachine` is the protocol half of a connection actor: it decodes what
the client sends, answers what it can answer alone (heartbeats, malformed
frames, requests for topics not joined), tracks joined topics, and hands the
rest to the shell as `Dispatch` actions. `ClientMachine` is the same for the
Python client: it builds requests and matches what the server sends to them.

Neither awaits, reads a clock or touches a socket: the caller passes `now`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import TypeAlias

import attrs

from hub.errors import DecodeError, ErrorCode, NoPendingJoinError, brief_repr
from hub.protocol.codec import Codec, Message
from hub.protocol.frames import (
    MAX_REF,
    Call,
    ClientFrame,
    Ended,
    Error,
    Expiring,
    Frame,
    Heartbeat,
    Join,
    Leave,
    Payload,
    Publish,
    Push,
    Refresh,
    Reply,
    ServerFrame,
)

MAX_MALFORMED = 10
"""Malformed frames a client may send in a burst before it is disconnected."""

MALFORMED_WINDOW_SECONDS = 10.0
"""The malformed-frame allowance refills fully over this many seconds."""

MAX_TOPICS = 100
"""Most topics one connection may have joined or be joining at once."""

JOINS_PER_SECOND = 20.0
"""Joins one connection may send per second, on average (a burst of as many is allowed)."""

# RFC 6455 5.5: a control frame carries at most 125 bytes, 2 of them the code.
_MAX_CLOSE_REASON_BYTES = 123


class CloseCode(enum.IntEnum):
    """The WebSocket close codes the hub uses (RFC 6455 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down."""
    PROTOCOL_ERROR = 1002
    INVALID_PAYLOAD = 1007
    """Say, a text message that is not UTF-8."""
    POLICY_VIOLATION = 1008
    """A flood of malformed frames, or authorization revoked."""
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """The client reads too slowly (reason SLOW_CONSUMER_REASON)."""


SLOW_CONSUMER_REASON = "slow consumer"
"""The close reason sent with TRY_AGAIN_LATER when a client falls behind."""


def _check_close_reason(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value.encode()) > _MAX_CLOSE_REASON_BYTES:
        raise ValueError(f"a close reason is at most 123 UTF-8 bytes, got {brief_repr(value)}")


@attrs.frozen
class Dispatch:
    """Route this valid client frame to its topic's service.

    The machine has already checked membership. What the shell still owes:
    a Join, a call to `join_succeeded` or `join_failed` once the service
    decides (they return the Reply); a Publish or Call with a ref above 0, a
    Reply (`Reply(...)` or `Reply.error(...)`); a failed ref-0 request, an
    Error frame with a null ref. A Leave needs nothing: its Reply comes with it.
    A Refresh, a Reply (topic null) once its token is checked.
    """

    frame: Join | Leave | Publish | Call | Refresh


@attrs.frozen
class Send:
    """Send this frame to the client."""

    frame: ServerFrame


@attrs.frozen
class Close:
    """Close the WebSocket with `code` and `reason`; the machine takes no more input."""

    code: CloseCode
    reason: str = attrs.field(validator=_check_close_reason)


Action: TypeAlias = Dispatch | Send | Close


@attrs.define
class _MalformedBudget:
    """A token bucket: `capacity` tokens (malformed frames, joins), refilled over `window` s."""

    capacity: int
    window: float
    tokens: float = attrs.field(init=False)
    updated_at: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.tokens = float(self.capacity)

    def spend(self, now: float) -> bool:
        """Take one token; False when none is left."""
        if self.updated_at is not None:
            refill = (now - self.updated_at) * self.capacity / self.window
            self.tokens = min(float(self.capacity), self.tokens + max(refill, 0.0))
        self.updated_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class ServerMachine:
    """The server side of one connection's protocol.

    Feed it every message the client sends with `receive`, and every join
    outcome with the `join_*` / `ended` hooks; carry out the actions they
    return, in order. Membership changes only when the service confirms it.

    Every malformed frame gets an Error frame and the connection goes on, but
    more than `max_malformed` of them in a burst (the allowance refills over
    `malformed_window_seconds`) ends it with a Close(1008).
    """

    def __init__(
        self,
        codec: Codec,
        *,
        max_malformed: int = MAX_MALFORMED,
        malformed_window_seconds: float = MALFORMED_WINDOW_SECONDS,
        max_topics: int = MAX_TOPICS,
        joins_per_second: float = JOINS_PER_SECOND,
    ) -> None:
        self.codec = codec
        self.max_topics = max_topics
        self._budget = _MalformedBudget(max_malformed, malformed_window_seconds)
        # Joins start topics and run services' checks: a client that joins
        # and leaves in a loop is slowed down here, before it costs anything.
        burst = max(1, math.ceil(joins_per_second))
        self._joins = _MalformedBudget(burst, burst / joins_per_second)
        self._joined: set[str] = set()
        self._pending_joins: dict[str, int] = {}
        self._closed = False

    @property
    def joined(self) -> frozenset[str]:
        """The topics whose join the service has confirmed."""
        return frozenset(self._joined)

    @property
    def closed(self) -> bool:
        """True once the machine has returned a Close."""
        return self._closed

    def is_joined(self, topic: str) -> bool:
        """Say whether `topic` is joined; the shell drops Pushes for other topics."""
        return topic in self._joined

    def is_joining(self, topic: str) -> bool:
        """Say whether a join of `topic` waits for the service's answer."""
        return topic in self._pending_joins

    def receive(self, data: Message, now: float) -> list[Action]:
        """Take one message from the client and return what to do about it.

        `now` is any monotonic clock reading in seconds. After a Close, the
        machine ignores further input and returns no actions.
        """
        if self._closed:
            return []
        actions: list[Action] = []
        for item in self.codec.decode(data):
            if isinstance(item, DecodeError):
                self._malformed(Error(item.ref, item.code, item.message), now, actions)
            else:
                self._handle(item, now, actions)
            if actions and isinstance(actions[-1], Close):
                break
        return actions

    def join_succeeded(self, topic: str, payload: Payload = None) -> list[Action]:
        """Record that the service accepted the pending join of `topic`.

        Returns the ok Reply to send. Raises NoPendingJoinError if no join of
        `topic` is pending, which is a bug in the caller.
        """
        ref = self._take_pending(topic)
        self._joined.add(topic)
        return [Send(Reply(ref, topic, True, payload))]

    def join_failed(self, topic: str, *, code: str, message: str) -> list[Action]:
        """Record that the pending join of `topic` did not happen.

        Returns the error Reply to send. Raises NoPendingJoinError if no join of
        `topic` is pending, which is a bug in the caller.
        """
        ref = self._take_pending(topic)
        return [Send(Reply.error(ref, topic, code, message))]

    def ended(self, topic: str, *, code: str, reason: str) -> list[Action]:
        """Record that the server ended the client's membership of `topic`.

        A joined topic gets an Ended frame; a pending join fails with `code`.
        A topic neither joined nor joining (the client left first) needs
        nothing, so this returns no actions then.
        """
        if topic in self._pending_joins:
            return self.join_failed(topic, code=code, message=reason)
        if topic not in self._joined:
            return []
        self._joined.discard(topic)
        return [Send(Ended(topic, reason, code))]

    def _handle(self, frame: Frame, now: float, actions: list[Action]) -> None:
        match frame:
            case Heartbeat(ref=ref):
                if ref:
                    actions.append(Send(Reply(ref, None, True)))
            case Join(ref=ref, topic=topic):
                if topic in self._joined or topic in self._pending_joins:
                    actions.append(
                        _refuse(frame, ErrorCode.ALREADY_JOINED, f"topic {topic!r} already joined")
                    )
                elif len(self._joined) + len(self._pending_joins) >= self.max_topics:
                    actions.append(
                        _refuse(
                            frame, ErrorCode.TOO_LARGE, f"at most {self.max_topics} topics at once"
                        )
                    )
                elif not self._joins.spend(now):
                    actions.append(
                        _refuse(
                            frame,
                            ErrorCode.RATE_LIMITED,
                            f"more than {self._joins.capacity} joins in a burst; slow down",
                        )
                    )
                else:
                    self._pending_joins[topic] = ref
                    actions.append(Dispatch(frame))
            case Leave(topic=topic) | Publish(topic=topic) | Call(topic=topic) if (
                topic not in self._joined
            ):
                state = "still joining" if topic in self._pending_joins else "not joined"
                actions.append(_refuse(frame, ErrorCode.NOT_JOINED, f"topic {topic!r} {state}"))
            case Leave(ref=ref, topic=topic):
                # Leaving cannot fail, so the membership ends here; the shell
                # stops Pushes for it at once by asking `is_joined`.
                self._joined.discard(topic)
                actions.append(Dispatch(frame))
                if ref:
                    actions.append(Send(Reply(ref, topic, True)))
            case Publish() | Call() | Refresh():
                actions.append(Dispatch(frame))
            case Reply() | Push() | Error() | Ended() | Expiring():
                kind = type(frame).__name__
                self._malformed(
                    Error(
                        None,
                        ErrorCode.BAD_FRAME,
                        f"{kind} frames go from server to client only",
                    ),
                    now,
                    actions,
                )
            case _:
                raise AssertionError(f"unexpected frame {frame!r}")

    def _malformed(self, error: Error, now: float, actions: list[Action]) -> None:
        actions.append(Send(error))
        if not self._budget.spend(now):
            self._closed = True
            actions.append(Close(CloseCode.POLICY_VIOLATION, "too many malformed frames"))

    def _take_pending(self, topic: str) -> int:
        try:
            return self._pending_joins.pop(topic)
        except KeyError:
            raise NoPendingJoinError(f"no join of topic {topic!r} is pending") from None


def _refuse(frame: Join | Leave | Publish | Call, code: ErrorCode, message: str) -> Send:
    """Answer a request that will not reach its service.

    A ref-0 request wants no Reply, yet should not fail in silence: it gets an
    Error frame with a null ref instead.
    """
    if frame.ref:
        return Send(Reply.error(frame.ref, frame.topic, code, message))
    return Send(Error(None, code, message))


@attrs.frozen
class ReplyReceived:
    """The server answered `request` with `reply` (which may be an error Reply)."""

    request: ClientFrame
    reply: Reply


@attrs.frozen
class ErrorReceived:
    """The server sent a protocol-level Error; `request` is None if it names no pending ref."""

    request: ClientFrame | None
    error: Error


ClientEvent: TypeAlias = ReplyReceived | ErrorReceived | Push | Ended | Expiring
"""What `ClientMachine.receive` returns: answers, topic events to route by topic, and
the connection's token running out (refresh it with `ClientMachine.refresh`)."""


class ClientMachine:
    """The client side of one connection's protocol.

    Request methods return `(ref, message)`: send the message, and expect the
    answer to `ref` among the events `receive` returns (ref 0: no answer).
    Refs are allocated here, counting up from 1 and skipping any still pending.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._next_ref = 1
        self._pending: dict[int, ClientFrame] = {}
        self._joined: set[str] = set()
        self._offsets: dict[str, int] = {}

    @property
    def joined(self) -> frozenset[str]:
        """The topics the server confirmed and has not ended since."""
        return frozenset(self._joined)

    @property
    def offsets(self) -> Mapping[str, int]:
        """The last offset seen in a Push of each topic, for Join(offset=...) on rejoin."""
        return dict(self._offsets)

    def join(
        self,
        topic: str,
        params: Mapping[str, Payload] | None = None,
        offset: int | None = None,
        epoch: str | None = None,
    ) -> tuple[int, Message]:
        """Ask to join `topic`; `epoch` and `offset` are the last position seen, to recover from."""
        return self._request(Join(self._allocate(), topic, dict(params or {}), offset, epoch))

    def leave(self, topic: str) -> tuple[int, Message]:
        """Ask to leave `topic`."""
        return self._request(Leave(self._allocate(), topic))

    def publish(
        self, topic: str, event: str, payload: Payload = None, *, ack: bool = False
    ) -> tuple[int, Message]:
        """Publish `event` to `topic`; with `ack` the server Replies, else ref is 0."""
        return self._request(Publish(self._allocate() if ack else 0, topic, event, payload))

    def call(
        self, topic: str, event: str, payload: Payload = None, *, timeout: float | None = None
    ) -> tuple[int, Message]:
        """Call the service of `topic`; the Reply to the returned ref carries its answer."""
        return self._request(Call(self._allocate(), topic, event, payload, timeout))

    def heartbeat(self) -> tuple[int, Message]:
        """Build a Heartbeat the server answers with an ok Reply."""
        return self._request(Heartbeat(self._allocate()))

    def refresh(self, token: str) -> tuple[int, Message]:
        """Hand the server a new token for the connection's user (after an Expiring)."""
        return self._request(Refresh(self._allocate(), token))

    def forget(self, ref: int) -> ClientFrame | None:
        """Stop waiting for `ref` (say, on a timeout); a late answer is then dropped.

        Returns the forgotten request, or None if `ref` was not pending.
        """
        return self._pending.pop(ref, None)

    def receive(self, data: Message) -> list[ClientEvent]:
        """Take one message from the server and return what it means, in order.

        Raises DecodeError if the server sent anything malformed: a server bug,
        after which the client should close the connection (code 1002).
        """
        events: list[ClientEvent] = []
        for item in self.codec.decode_strict(data):
            match item:
                case Reply(ref=ref):
                    request = self._pending.pop(ref, None)
                    # No request: an answer to a ref the caller forgot, on purpose.
                    if request is not None:
                        self._on_reply(request, item)
                        events.append(ReplyReceived(request, item))
                case Error(ref=ref):
                    pending = None if ref is None else self._pending.pop(ref, None)
                    events.append(ErrorReceived(pending, item))
                case Push(topic=topic, offset=offset):
                    if offset is not None:
                        self._offsets[topic] = offset
                    events.append(item)
                case Ended(topic=topic):
                    self._joined.discard(topic)
                    events.append(item)
                case Expiring():
                    events.append(item)
                case Join() | Leave() | Publish() | Call() | Heartbeat() | Refresh():
                    raise DecodeError(
                        ErrorCode.BAD_FRAME, f"the server sent a client frame {item!r}"
                    )
                case _:
                    raise AssertionError(f"unexpected frame {item!r}")
        return events

    def _on_reply(self, request: ClientFrame, reply: Reply) -> None:
        match request:
            case Join(topic=topic) if reply.ok:
                self._joined.add(topic)
            case Leave(topic=topic) if reply.ok:
                self._joined.discard(topic)

    def _request(self, frame: ClientFrame) -> tuple[int, Message]:
        message = self.codec.encode(frame)
        if frame.ref:
            self._pending[frame.ref] = frame
        return frame.ref, message

    def _allocate(self) -> int:
        while True:
            ref = self._next_ref
            self._next_ref = ref + 1 if ref < MAX_REF else 1
            if ref not in self._pending:
                return ref
