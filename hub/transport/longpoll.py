"""The long-polling transport: the hub protocol over plain HTTP requests.

For clients that cannot open a WebSocket (a proxy that refuses the
upgrade, a browser extension, a corporate network), the same messages in
the same codecs travel over ordinary HTTP requests on the hub's port
(docs/protocol.md, "Long-polling"):

- the client **polls** with GETs; the server holds each one until messages
  wait (it answers with all of them, up to a size, in one body) or
  `poll_timeout` passes (an empty answer), and the client polls again;
- the client **sends** with POSTs, any number of messages in one body;
- a Close is the **last answer** to a poll, carrying its code and reason,
  after the messages queued before it.

This class is only the transport: the gateway (`hub.gateway.longpoll`)
parses the requests, checks origins and authentication, and calls `poll`,
`post` and `client_closed`. To the session it is a `Transport` like any
other: `send` never waits (it queues in the bounded `Outbox`, latest-value
entries replaced in place, and wakes the held poll), `flush` waits until a
poll has taken the backlog, and `receive` hands out what POSTs brought.

**Body format.** JSON (`triohub.v1.json`): each message on its own line
(compact JSON never holds a raw newline), UTF-8. msgpack
(`triohub.v1.msgpack`): each message preceded by its length as a 4-byte
big-endian integer. The same in both directions; no message is encoded
again, a poll's body is the messages as the codec made them, joined.

**Lost answers.** Every answer to a poll says how many messages the
session has sent in all (`seq`), and every poll says how many the client
has received (`ack`). A poll whose `ack` shows the last answer never
arrived (a connection dropped mid-response) gets that answer again, so no
message is lost between two polls of a live session.

**Liveness.** A client between polls has `reap_timeout` to come back; one
that does not is gone: its session ends as a dropped WebSocket does
(`TransportClosed(1006)`), and the session's normal stop cleans up its
memberships. A client that stops reading while messages wait is evicted by
the session's `write_timeout` (1013), as a WebSocket client would be.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

import attrs
import trio

from hub.errors import HubError
from hub.protocol import Message, codec_for
from hub.transport.base import DEFAULT_OUTBOX_CAPACITY, Outbox, Transport, TransportClosed, Wire

__all__ = [
    "LongPollBodyError",
    "LongPollSettings",
    "LongPollTransport",
    "PollAnswer",
    "PollError",
    "decode_body",
    "encode_body",
]

# A msgpack message's length prefix: u32, big-endian.
_LENGTH: Final = struct.Struct("!I")

# Close codes (RFC 6455 §7.4.1) the transport ends a session with itself.
_CLOSE_NORMAL: Final = 1000
_CLOSE_LOST: Final = 1006
_CLOSE_TOO_BIG: Final = 1009


@attrs.frozen
class LongPollSettings:
    """The limits of every long-polling session of a gateway (shared, not copied)."""

    #: Largest message accepted, in bytes (UTF-8 for text); larger: closed with 1009.
    max_message_size: int = 1024 * 1024
    #: How long a poll is held when nothing is there to send.
    poll_timeout: float = 25.0
    #: How long a client may take to poll again before its session is ended.
    reap_timeout: float = 30.0
    #: Time for the Close (and what is queued before it) to be polled.
    close_timeout: float = 5.0
    #: Messages that may wait for one client between its polls (see `Outbox`).
    outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY
    #: Messages from the client's POSTs that may wait for the session to read them.
    max_inbound: int = 256
    #: A poll's answer stops taking messages once it holds this many bytes.
    max_answer_bytes: int = 256 * 1024


_DEFAULT_SETTINGS: Final = LongPollSettings()


class LongPollBodyError(HubError):
    """A POST's body is not messages in the session's format; `code` is the close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class PollError(HubError):
    """A request the session cannot serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen
class PollAnswer:
    """The answer to one poll: a body of messages, and the Close if this is the last."""

    body: bytes
    #: Messages this session has sent in all, this answer's included.
    seq: int
    #: (code, reason) when the session is closed: no poll follows this one.
    close: tuple[int, str] | None = None


def encode_body(messages: list[Message], *, binary: bool) -> bytes:
    """Join `messages` into one body in the session's format (see the module docstring)."""
    if binary:
        parts: list[bytes] = []
        for message in messages:
            assert isinstance(message, (bytes, bytearray))
            parts.append(_LENGTH.pack(len(message)))
            parts.append(bytes(message))
        return b"".join(parts)
    return "\n".join(messages).encode()  # type: ignore[arg-type]


def decode_body(body: bytes, *, binary: bool, max_message_size: int) -> list[Message]:
    """Split a POST's body into messages; raises LongPollBodyError (its close code) if it cannot.

    An empty line of a JSON body is no message (a trailing newline is fine).
    """
    messages: list[Message] = []
    if binary:
        view = memoryview(body)
        at = 0
        while at < len(view):
            if len(view) - at < _LENGTH.size:
                raise LongPollBodyError(1002, "a message's 4-byte length is cut short")
            (length,) = _LENGTH.unpack_from(view, at)
            at += _LENGTH.size
            if length > max_message_size:
                raise LongPollBodyError(
                    _CLOSE_TOO_BIG, f"message larger than {max_message_size} bytes"
                )
            if len(view) - at < length:
                raise LongPollBodyError(1002, f"a message of {length} bytes is cut short")
            messages.append(bytes(view[at : at + length]))
            at += length
        return messages
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise LongPollBodyError(1007, "the body is not valid UTF-8") from None
    for line in text.split("\n"):
        if not line:
            continue
        # A character is at most 4 UTF-8 bytes: count exactly only near the limit.
        if len(line) * 4 > max_message_size and len(line.encode()) > max_message_size:
            raise LongPollBodyError(_CLOSE_TOO_BIG, f"message larger than {max_message_size} bytes")
        messages.append(line)
    return messages


class _Poll:
    """A poll being held: woken by a message to send, a newer poll, or the close."""

    __slots__ = ("superseded", "wake")

    def __init__(self) -> None:
        self.wake = trio.Event()
        self.superseded = False


class LongPollTransport(Transport):
    """One long-polling session (see the module docstring).

    `origin` is the Origin header the session was opened with (None if the
    client sent none): the gateway refuses requests for this session from
    any other origin.
    """

    __slots__ = (
        "_close_code",
        "_close_deadline",
        "_close_delivered",
        "_close_reason",
        "_closing",
        "_done",
        "_drained",
        "_inbound",
        "_inbound_ready",
        "_last_answer",
        "_last_close",
        "_last_seen",
        "_notified",
        "_outbox",
        "_over",
        "_poll",
        "_released",
        "_sent",
        "_settings",
        "binary",
        "on_backlog",
        "origin",
        "subprotocol",
    )

    def __init__(
        self,
        subprotocol: str,
        settings: LongPollSettings = _DEFAULT_SETTINGS,
        *,
        origin: str | None = None,
    ) -> None:
        self.subprotocol = subprotocol
        self.on_backlog = None
        self.origin = origin
        #: Whether messages are bytes (msgpack) rather than text (JSON).
        self.binary = codec_for(subprotocol).binary
        self._settings = settings
        self._outbox = Outbox(settings.outbox_capacity)
        self._inbound: deque[Message] = deque()
        self._inbound_ready = trio.Event()
        self._drained = trio.Event()
        self._poll: _Poll | None = None
        self._notified = False
        # What the last answer held, and how many messages went before it:
        # sent again to a poll whose `ack` shows it was lost.
        self._sent = 0
        self._last_answer: list[Wire] = []
        self._last_close: tuple[int, str] | None = None
        self._last_seen = trio.current_time()
        self._closing = False
        self._close_code = _CLOSE_NORMAL
        self._close_reason = ""
        self._close_deadline: float | None = None
        # The client has been answered with the Close (or cannot be any more).
        self._close_delivered = False
        # Nothing more is received: the close is complete, or the client is gone.
        self._done = False
        # Set once the Close is delivered or the session is done: what aclose waits for.
        self._over = trio.Event()
        self._released = False

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<LongPollTransport {state}>"

    # --- the session's side: writing ---------------------------------------------

    @property
    def backlog(self) -> bool:
        return bool(self._outbox)

    @property
    def queued(self) -> int:
        return len(self._outbox)

    @property
    def behind(self) -> bool:
        # Between polls something always waits: only reliable messages make
        # the client behind (latest-value state is replaced in place).
        return self._outbox.reliable > 0

    @property
    def closing(self) -> bool:
        return self._closing or self._done

    def release_keys(self, match: Callable[[Hashable], bool]) -> None:
        if self._outbox:
            self._outbox.release_keys(match)

    def send(self, wire: Wire, key: Hashable | None = None) -> bool:
        if self._closing or self._done:
            return False
        replaced = self._outbox.push(wire, key)
        poll = self._poll
        if poll is not None:
            # A poll is held: it takes this (and whatever else comes in the
            # same turn) as soon as it runs. No flush is needed for that.
            poll.wake.set()
        elif not self._notified:
            # The client is between polls: its owner should wait for the next.
            self._notified = True
            if self.on_backlog is not None:
                self.on_backlog()
        return replaced

    async def flush(self) -> None:
        while self._outbox:
            if self._done:
                self._outbox.clear()
                raise TransportClosed(self._close_code, self._close_reason)
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()
        self._notified = False

    def close(self, code: int, reason: str = "", *, discard: bool = False) -> None:
        if self._closing or self._done:
            return
        self._closing = True
        self._close_code, self._close_reason = code, reason
        if discard:
            self._outbox.clear()
        self._close_deadline = trio.current_time() + self._settings.close_timeout
        if self._poll is not None:
            self._poll.wake.set()
        self._inbound_ready.set()  # the reader re-arms its deadline

    async def aclose(self) -> None:
        if self._released:
            return
        self.close(_CLOSE_NORMAL, "")
        if not self._done:
            # Bounded: wait for a poll to take the Close, or for the reader's deadline.
            with trio.move_on_after(self._settings.close_timeout):
                await self._over.wait()
        self._released = True
        self._finish(self._close_code, self._close_reason)

    def _finish(self, code: int, reason: str) -> None:
        """Nothing more goes either way: wake whoever waits, so they see it."""
        if not self._done:
            self._done = True
            self._close_code, self._close_reason = code, reason
        self._outbox.clear()
        self._inbound.clear()
        self._over.set()
        self._drained.set()
        self._inbound_ready.set()
        if self._poll is not None:
            self._poll.wake.set()

    # --- the session's side: reading ---------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._inbound and not self._closing:
                return self._inbound.popleft()
            if self._done or self._close_delivered:
                self._done = True
                raise TransportClosed(self._close_code, self._close_reason)
            deadline = self._deadline()
            if trio.current_time() >= deadline:
                self._on_deadline()
                continue
            if self._inbound_ready.is_set():
                self._inbound_ready = trio.Event()
            with trio.move_on_at(deadline):
                await self._inbound_ready.wait()

    def _deadline(self) -> float:
        if self._close_deadline is not None:
            return self._close_deadline
        if self._poll is not None:
            return math.inf  # the client is there; the poll's end wakes the reader
        return self._last_seen + self._settings.reap_timeout

    def _on_deadline(self) -> None:
        if self._close_deadline is not None:
            # The client did not poll for its Close in time: it is done with.
            self._finish(self._close_code, self._close_reason)
        else:
            self._finish(_CLOSE_LOST, "client stopped polling")

    # --- the client's side: what the gateway calls -------------------------------

    def post(self, messages: list[Message]) -> None:
        """Take the messages of one POST for the session to receive, in order.

        Raises PollError 429 if the session has not yet read so many earlier
        ones that these would pass `max_inbound`, and 410 once it is closed.
        """
        self._seen()
        if self._closing or self._done:
            raise PollError(410, "the session is closed; open a new one")
        if len(self._inbound) + len(messages) > self._settings.max_inbound:
            raise PollError(
                429, f"more than {self._settings.max_inbound} messages wait; send fewer at once"
            )
        self._inbound.extend(messages)
        self._inbound_ready.set()

    def refuse_body(self, error: LongPollBodyError) -> None:
        """A POST's body was malformed or too large: close as a WebSocket would (1002/1007/1009)."""
        self._seen()
        self.close(error.code, error.reason[:120])

    def client_closed(self) -> None:
        """The client ended the session (a DELETE): as a WebSocket peer's Close 1000."""
        self._seen()
        self._finish(_CLOSE_NORMAL, "client closed")

    async def poll(self, ack: int) -> PollAnswer:
        """Answer one poll: wait for messages (at most `poll_timeout`), and take them.

        `ack` is how many messages the client has received in all: the last
        answer again if it shows that answer was lost. A newer poll ends
        this one with an empty answer. Raises PollError 409 for an `ack`
        that matches neither, 410 once the session is over.
        """
        self._seen()
        if self._released or (self._done and not self._closing):
            raise PollError(410, "the session is closed; open a new one")
        previous = self._sent - len(self._last_answer)
        if ack == previous and (self._last_answer or self._last_close is not None):
            return self._answer(self._last_answer, self._last_close)
        if ack != self._sent:
            raise PollError(409, f"ack {ack} does not match the {self._sent} messages sent")
        self._last_answer = []
        self._last_close = None
        if self._poll is not None:
            self._poll.superseded = True
            self._poll.wake.set()
        poll = self._poll = _Poll()
        try:
            if not self._outbox and not self._closing and not self._done:
                with trio.move_on_after(self._settings.poll_timeout):
                    await poll.wake.wait()
        finally:
            if self._poll is poll:
                self._poll = None
                self._inbound_ready.set()  # the reader's reap deadline starts now
            self._seen()
        if poll.superseded or (self._done and not self._closing):
            return PollAnswer(b"", self._sent)
        taken = self._take()
        close = None
        if self._closing and not self._outbox:
            close = (self._close_code, self._close_reason)
            self._close_delivered = True
            self._over.set()
            self._inbound_ready.set()
        self._sent += len(taken)
        self._last_answer, self._last_close = taken, close
        return self._answer(taken, close)

    def _take(self) -> list[Wire]:
        taken: list[Wire] = []
        size = 0
        limit = self._settings.max_answer_bytes
        while self._outbox and size < limit:
            for wire in self._outbox.take(16):
                taken.append(wire)
                size += len(wire.message)
        if not self._outbox:
            self._notified = False
            self._drained.set()
        return taken

    def _answer(self, wires: list[Wire], close: tuple[int, str] | None) -> PollAnswer:
        body = encode_body([wire.message for wire in wires], binary=self.binary)
        return PollAnswer(body, self._sent, close)

    def _seen(self) -> None:
        self._last_seen = trio.current_time()
