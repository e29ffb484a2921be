"""The WebSocket transport: RFC 6455 over one accepted TCP (or TLS) stream.

The gateway reads the opening handshake with h11 and answers it (see
`accept_headers`); from the 101 on, the stream belongs to a
`WebSocketTransport`. Reading goes through wsproto's sans-IO frame parser
(`FrameProtocol`), which checks every frame the client sends (masking,
reserved bits, opcodes, control frame rules, UTF-8), but for the one kind
nearly every client frame is: a whole, final, masked text or binary frame,
taken here in a fifth of the time when wsproto is between messages (see
`_take_plain_frame`). A connection's parser is made on its first other
frame, so most connections never have one (it is about 1.5 KB, and a
reference cycle that only the garbage collector's rare full pass frees).
The closing handshake's state is kept here. Writing, control frames
included, is the project's own, because that is where a hub spends its time:

- A server's frames are unmasked, so the bytes of one message are the same
  for every client: `build_frame` makes them once per `Wire` and every
  subscriber's transport writes that same object.
- A write is a plain non-blocking `os.write` on the socket, made by whoever
  sends (a topic's broadcast loop, the session's reader): no task switch, no
  lock. Only when the kernel's buffer is full does anything wait, and then
  what follows queues in the outbox (bounded, latest-value entries replaced)
  until the owner's `flush()` finds the socket writable again and writes the
  backlog in one system call per batch.
- Under TLS the bytes must go through `trio.SSLStream`, so every message
  queues and `flush()` writes it.

Liveness lives here too, in the receiving task: a peer silent for
`ping_interval` is pinged, one silent for `idle_timeout` is closed with 1001.
Only whole frames count as life, never bytes: a peer that dribbles a byte a
minute is silent. A message must arrive whole within `message_timeout` of
its first byte, in at most `max_fragments` frames; else Close 1008. Every
protocol violation is answered with a Close frame carrying its code (1002,
1007, 1009) before the TCP stream ends (RFC 6455 §7.1.7).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import os
import struct
from collections.abc import Callable, Hashable
from typing import Any, Final, NoReturn, Protocol

import attrs
import trio
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode, ParseFailed
from wsproto.utilities import generate_accept_token

from hub.http import close_lingering
from hub.protocol import Message
from hub.transport.base import DEFAULT_OUTBOX_CAPACITY, Outbox, Transport, TransportClosed, Wire

__all__ = [
    "RECEIVE_SIZE",
    "WebSocketObserver",
    "WebSocketSettings",
    "WebSocketTransport",
    "accept_headers",
    "build_frame",
    "valid_key",
]

logger = logging.getLogger(__name__)

# How much one read asks the socket for.
RECEIVE_SIZE: Final = 64 * 1024

# How much of the backlog one flush joins into a single write.
_FLUSH_BYTES: Final = 256 * 1024


# RFC 6455 §7.4.2: codes a Close frame may carry on the wire.
_SENDABLE_RANGES: Final = ((1000, 1003), (1007, 1014), (3000, 4999))

_ping_payloads = itertools.count()

# RFC 6455 §7.4.1: the close code of a peer closed for what it sent (a flood, a limit).
_POLICY_VIOLATION: Final = 1008

# The outbox key of the pong waiting to go out, when one waits.
_PONG: Final = ("", "pong")

# RFC 6455 §5.2 opcodes of the control frames a server sends, with FIN set.
_CLOSE_FIRST: Final = 0x88
_PING_FIRST: Final = 0x89
_PONG_FIRST: Final = 0x8A

# RFC 6455 §7.4.1: "no status code", and codes that are never sent, only noted.
_NO_STATUS: Final = 1005
_LOCAL_ONLY: Final = (1006, 1015)

# RFC 6455 §5.5: a control frame's payload is at most 125 bytes; a Close
# frame's reason is what is left after its 2-byte code.
_MAX_CONTROL_PAYLOAD: Final = 125


def valid_key(key: str | None) -> bool:
    """Whether `key` is a Sec-WebSocket-Key: base64 of 16 bytes (RFC 6455 §4.1)."""
    if not key or len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_headers(key: str, subprotocol: str | None) -> list[tuple[str, str]]:
    """The headers of the 101 response to a handshake with `key`."""
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", generate_accept_token(key.encode("ascii")).decode("ascii")),
    ]
    if subprotocol is not None:
        headers.append(("sec-websocket-protocol", subprotocol))
    return headers


def build_frame(message: Message) -> bytes:
    """Frame `message` as one unmasked server frame: text for str, binary for bytes."""
    if isinstance(message, str):
        payload = message.encode()
        first = 0x81  # FIN + text
    else:
        payload = bytes(message)
        first = 0x82  # FIN + binary
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def _control_frame(first: int, payload: bytes) -> bytes:
    """An unmasked control frame (ping, pong, Close): its payload must fit in 125 bytes."""
    if len(payload) > _MAX_CONTROL_PAYLOAD:
        raise ValueError(f"a control frame carries at most 125 bytes, not {len(payload)}")
    return bytes((first, len(payload))) + payload


def _close_frame(code: int, reason: str = "") -> bytes:
    """A Close frame with `code` and as much of `reason` as fits, cut at a character.

    As wsproto made them: 1005 (no code) is sent without one, and the codes
    that only say what happened locally (1006, 1015) as 1000.
    """
    if code == _NO_STATUS:
        return _control_frame(_CLOSE_FIRST, b"")
    if code in _LOCAL_ONLY:
        code = 1000
    encoded = reason.encode()[: _MAX_CONTROL_PAYLOAD - 2]
    encoded = encoded.decode(errors="ignore").encode()
    return _control_frame(_CLOSE_FIRST, code.to_bytes(2, "big") + encoded)


def _framed(wire: Wire) -> bytes:
    framed = wire.framed
    if framed is None:
        framed = wire.framed = build_frame(wire.message)
    return framed


def _sendable(code: int) -> bool:
    return any(low <= code <= high for low, high in _SENDABLE_RANGES)


@attrs.frozen
class WebSocketSettings:
    """The limits of every WebSocket of one route (shared, not copied per connection)."""

    #: Largest message accepted, in bytes (UTF-8 for text); larger: Close 1009.
    max_message_size: int = 1024 * 1024
    #: A peer silent this long gets a ping.
    ping_interval: float = 20.0
    #: A peer silent this long (no message, no pong, nothing) is closed with 1001.
    idle_timeout: float = 60.0
    #: Time for the closing handshake.
    close_timeout: float = 5.0
    #: Messages that may wait beyond what the socket took (see `Outbox`).
    outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY
    #: Most frames one message may come in; more: Close 1008.
    max_fragments: int = 128
    #: Time from a message's first byte to its last; longer: Close 1008.
    message_timeout: float = 30.0


_DEFAULT_SETTINGS: Final = WebSocketSettings()


class WebSocketObserver(Protocol):
    """Told when a transport closes a peer on its own (for metrics)."""

    def violation(self, code: int) -> None:
        """The peer broke RFC 6455 and was closed with `code` (1002, 1007, 1009...)."""

    def idle(self) -> None:
        """The peer was silent past the idle timeout and was closed with 1001."""

    def limit(self, name: str) -> None:
        """The peer ran into the limit `name` ("fragments", "message_timeout") and was closed."""


class WebSocketTransport(Transport):
    """One WebSocket connection after its handshake (see the module docstring).

    `stream` is the accepted stream; `trailing` the bytes that arrived after
    the request head; `observer` hears of violations and idle closes.
    """

    __slots__ = (
        "_close_code",
        "_close_deadline",
        "_close_reason",
        "_close_received",
        "_closing",
        "_done",
        "_drained",
        "_fd",
        "_fragments",
        "_frames",
        "_last_received",
        "_lost",
        "_message_started",
        "_notified",
        "_observer",
        "_outbox",
        "_partial",
        "_partial_reliable",
        "_parts",
        "_parts_size",
        "_pending",
        "_pending_at",
        "_pinged",
        "_receive_scope",
        "_received_at",
        "_released",
        "_settings",
        "_socket",
        "_stream",
        "on_backlog",
        "on_frame",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        settings: WebSocketSettings = _DEFAULT_SETTINGS,
        *,
        subprotocol: str | None = None,
        trailing: bytes = b"",
        observer: WebSocketObserver | None = None,
    ) -> None:
        self.subprotocol = subprotocol
        self.on_backlog = None
        self.on_frame: Callable[[], None] | None = None
        self._stream = stream
        # A plain TCP socket is read and written directly; TLS goes through its stream.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._fd = None if self._socket is None else self._socket.fileno()
        # Whether the last read emptied the socket (it took less than it asked for).
        self._drained = False
        # wsproto's parser, made on the first frame that is not plain (`_parser`).
        self._frames: FrameProtocol | None = None
        # Bytes read and not parsed yet, from `_pending_at` on, that wsproto
        # has not seen: while it is between messages, whole small data frames
        # are taken here (`_take_plain_frame`); anything else goes to it.
        self._pending = trailing
        self._pending_at = 0
        # Made on the first backlog: most connections never have one.
        self._outbox: Outbox | None = None
        self._settings = settings
        self._observer = observer
        # The unwritten rest of what the socket took part of: always first out.
        self._partial: memoryview | None = None
        # Whether `_partial` holds a message that is not a latest-value one.
        self._partial_reliable = False
        self._notified = False
        self._lost = False
        # When the peer last completed a frame (its life), and when bytes last came.
        self._last_received = self._received_at = trio.current_time()
        # When the first byte of the message being received came; None between messages.
        self._message_started: float | None = None
        self._pinged = False
        self._receive_scope: trio.CancelScope | None = None
        # Fragments of the message being received, their size in bytes and number.
        self._parts: list[str | bytes] = []
        self._parts_size = 0
        self._fragments = 0
        self._closing = False
        self._close_code = 1000
        self._close_reason = ""
        self._close_deadline: float | None = None
        self._close_received = False
        # Nothing more will be read: the close is complete, or the peer failed.
        self._done = False
        self._released = False

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<WebSocketTransport {state}>"

    # --- writing ---------------------------------------------------------------

    @property
    def backlog(self) -> bool:
        return self._partial is not None or bool(self._outbox)

    @property
    def behind(self) -> bool:
        if self._partial is not None and self._partial_reliable:
            return True
        return self._outbox is not None and self._outbox.reliable > 0

    def release_keys(self, match: Callable[[Hashable], bool]) -> None:
        if self._outbox:
            self._outbox.release_keys(match)

    @property
    def queued(self) -> int:
        return (len(self._outbox) if self._outbox else 0) + (self._partial is not None)

    @property
    def closing(self) -> bool:
        return self._closing

    def send(self, wire: Wire, key: Hashable | None = None) -> bool:
        if self._closing or self._lost:
            return False
        if self._fd is None or self._partial is not None or self._outbox:
            replaced = self._the_outbox().push(wire, key)
            self._note_backlog()
            return replaced
        self._write_now(_framed(wire), reliable=key is None)
        return False

    def send_raw(self, data: bytes) -> None:
        """Send bytes that are not a message (the handshake's 101 response), in order."""
        self._send_control(data)

    def _send_control(self, frame: bytes, key: Hashable | None = None) -> None:
        """Send a control frame (pong, Close): past the outbox's capacity, never refused.

        A `key` keeps at most one of its kind waiting (the newest pong).
        """
        if self._lost:
            return
        if self._fd is None or self._partial is not None or self._outbox:
            self._the_outbox().push_control(Wire(b"", framed=frame), key)
            self._note_backlog()
            return
        self._write_now(frame, reliable=key is None)

    def _the_outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self._settings.outbox_capacity)
        return self._outbox

    def _write_now(self, data: bytes, *, reliable: bool) -> None:
        assert self._fd is not None
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._lose(error)
            return
        if sent < len(data):
            self._partial = memoryview(data)[sent:]
            self._partial_reliable = reliable
            self._note_backlog()

    def _note_backlog(self) -> None:
        if not self._notified:
            self._notified = True
            if self.on_backlog is not None:
                self.on_backlog()

    def _lose(self, error: BaseException) -> None:
        """The peer is gone (reset, broken pipe): drop what waits; the reader sees the end."""
        logger.debug("WebSocket write failed: %r", error)
        self._lost = True
        self._partial = None
        self._outbox = None

    async def flush(self) -> None:
        while self._partial is not None or self._outbox:
            if self._lost:
                raise TransportClosed(1006, "connection lost")
            chunks: list[bytes | memoryview] = []
            size = 0
            reliable = False
            if self._partial is not None:
                chunks.append(self._partial)
                size = len(self._partial)
                reliable = self._partial_reliable
            while size < _FLUSH_BYTES and self._outbox:
                waiting = self._outbox.reliable
                for wire in self._outbox.take(64):
                    framed = _framed(wire)
                    chunks.append(framed)
                    size += len(framed)
                reliable = reliable or self._outbox.reliable < waiting
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._partial = memoryview(data)
            self._partial_reliable = reliable
            await self._write_partial()
        self._notified = False
        if self._lost:
            raise TransportClosed(1006, "connection lost")

    async def _write_partial(self) -> None:
        """Write `_partial` whole, waiting for the socket whenever it is full."""
        if self._fd is None:
            assert self._partial is not None
            data = bytes(self._partial)
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                self._lose(error)
                return
            self._partial = None
            return
        while self._partial is not None:
            await trio.lowlevel.wait_writable(self._fd)
            if self._lost:
                return
            try:
                sent = os.write(self._fd, self._partial)
            except BlockingIOError:
                continue
            except OSError as error:
                self._lose(error)
                return
            self._partial = self._partial[sent:] if sent < len(self._partial) else None

    # --- reading ---------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._done:
                raise TransportClosed(self._close_code, self._close_reason)
            message = self._next_message()
            if message is not None:
                return message
            if not self._parts and not self._unparsed():
                self._message_started = None  # between messages
            await self._read()

    def _unparsed(self) -> bool:
        """Whether bytes wait to be parsed (a message usually comes whole, in one read).

        Ours (`_pending`), or in wsproto's buffer, read off its frame decoder,
        which wsproto 1.2 and 1.3 keep at `_frame_decoder.buffer`; without it,
        assume there are (and parse).
        """
        if self._pending:
            return True
        if self._frames is None:
            return False
        buffer = getattr(self._decoder(), "buffer", None)
        return buffer is None or len(buffer) > 0

    def _parser(self) -> FrameProtocol:
        """wsproto's parser of this connection's frames, made on first use."""
        frames = self._frames
        if frames is None:
            frames = self._frames = FrameProtocol(client=False, extensions=[])
        return frames

    def _next_message(self) -> Message | None:
        """Parse frames until a whole message is in; None if more data is needed."""
        if self._pending:
            message = self._take_plain_frame()
            if message is not None:
                return message
        if self._frames is None:
            return None  # nothing was handed over: all is parsed
        try:
            for frame in self._frames.received_frames():
                if self._done:
                    return None  # closed for abuse while parsing: the rest is not read
                # A whole frame is life; bytes alone are not (they may dribble).
                self._last_received = self._received_at
                opcode = frame.opcode
                payload = frame.payload
                if opcode is Opcode.PING:
                    if not self._closing:
                        assert isinstance(payload, (bytes, bytearray))
                        pong = _control_frame(_PONG_FIRST, bytes(payload))
                        self._send_control(pong, key=_PONG)
                        if self.on_frame is not None:
                            self.on_frame()
                elif opcode is Opcode.PONG:
                    if self.on_frame is not None and not self._closing:
                        self.on_frame()
                elif opcode is Opcode.CLOSE:
                    assert isinstance(payload, tuple)
                    self._peer_closed(int(payload[0]), payload[1])
                elif not self._closing:  # after our Close, data is dropped (§5.5.1)
                    message = self._take_fragment(frame)
                    if message is not None:
                        # What is left in the buffer came with the last read at the earliest.
                        self._message_started = self._received_at
                        return message
        except ParseFailed as failure:
            self._violation(failure.code, str(failure))
        return None

    def _take_plain_frame(self) -> Message | None:
        """The message of the next frame in `_pending` if it is a plain one; else hand over.

        Plain: a whole, final, masked text or binary frame with no reserved
        bits, shorter than 64 KiB and the message size limit, text that is
        valid UTF-8, while no fragmented message is under way and we have not
        closed. That is nearly every frame a client sends, and taking it here
        costs a fraction of wsproto's generic parse. Pongs before it are
        taken here too (`_take_pongs`). Anything else (other control
        frames, fragments, bad bits or text, a frame not all read yet) goes
        to wsproto with whatever follows it, and from there on wsproto parses
        until it is between messages again, so every check it makes still
        applies to every frame that is not plain.
        """
        if self._parts or self._closing:
            self._hand_over()
            return None
        self._take_pongs()
        data, at = self._pending, self._pending_at
        if not data:
            return None
        end = len(data)
        if end - at >= 6 and not self._closing:  # a pong's on_frame may have closed
            first, second = data[at], data[at + 1]
            length = second & 0x7F
            start = at + 6
            if length == 126:
                length = (data[at + 2] << 8) | data[at + 3]
                start = at + 8
                if length < 126:
                    length = -1  # not the shortest form (RFC 6455 §5.2): wsproto refuses it
            elif length == 127:
                length = -1  # a 64-bit length: left to wsproto
            if (
                (first == 0x81 or first == 0x82)  # FIN, no reserved bits, text or binary
                and second & 0x80  # masked, as a client's frames must be
                and length >= 0
                and start + length <= end
                and length <= self._settings.max_message_size
            ):
                mask = data[start - 4 : start]
                if length:
                    masked = int.from_bytes(data[start : start + length], "little")
                    key = int.from_bytes(mask * (length // 4 + 1), "little")
                    payload = (masked ^ key).to_bytes(length + 4, "little")[:length]
                else:
                    payload = b""
                message: Message | None = payload
                if first == 0x81:
                    try:
                        message = payload.decode()
                    except UnicodeDecodeError:
                        message = None  # wsproto closes with 1007
                if message is not None:
                    at = start + length
                    if at == end:
                        self._pending, self._pending_at = b"", 0
                    else:
                        self._pending_at = at
                    self._last_received = self._message_started = self._received_at
                    return message
        self._hand_over()
        return None

    def _take_pongs(self) -> None:
        """Take the whole pongs at the head of `_pending`: each is life, and nothing else.

        Every quiet client answers the hub's ping with one, and every quiet
        client of a room is pinged at nearly the same moment; parsed here,
        a pong costs a few comparisons, and no connection makes wsproto's
        parser for it. A pong that is not a plain one (unmasked, reserved
        bits, a long length) is left to wsproto, which closes for it.
        """
        data = self._pending
        end = len(data)
        while not self._closing:
            at = self._pending_at
            if end - at < 6 or data[at] != _PONG_FIRST:
                return
            second = data[at + 1]
            length = second & 0x7F
            if not second & 0x80 or length > _MAX_CONTROL_PAYLOAD or at + 6 + length > end:
                return
            at += 6 + length
            self._pending_at = at
            self._last_received = self._received_at
            if self.on_frame is not None:
                self.on_frame()  # charged to the rate, as every frame is
            if at == end:
                self._pending, self._pending_at = b"", 0
                return

    def _take_fragment(self, frame: Frame) -> Message | None:
        data = frame.payload
        assert not isinstance(data, tuple)
        if isinstance(data, str):
            # A character is at most 4 UTF-8 bytes: count exactly only near the limit.
            size = len(data)
            if (self._parts_size + size) * 4 > self._settings.max_message_size:
                size = len(data.encode())
        else:
            data = bytes(data)
            size = len(data)
        self._parts_size += size
        limit = self._settings.max_message_size
        if self._parts_size > limit:
            self._violation(1009, f"message larger than {limit} bytes")
        if self._parts:
            # A fragment after the first: one more frame for the rate limits.
            self._fragments += 1
            if self._fragments > self._settings.max_fragments:
                most = self._settings.max_fragments
                self._over_limit("fragments", f"message in more than {most} frames")
            if self.on_frame is not None:
                self.on_frame()
        if not frame.message_finished:
            if not self._parts:
                self._fragments = 1
            self._parts.append(data)
            return None
        parts, self._parts, self._parts_size, self._fragments = self._parts, [], 0, 0
        if not parts:
            return data
        parts.append(data)
        if isinstance(data, str):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _peer_closed(self, code: int, reason: str) -> None:
        self._close_received = True
        self._done = True
        if not self._closing:
            # The peer closes first: answer with its code, and we are done.
            self._closing = True
            self._close_code, self._close_reason = code, reason
            reply = code if _sendable(code) else 1000
            self._send_control(_close_frame(reply))
        raise TransportClosed(self._close_code, self._close_reason)

    def _over_limit(self, limit: str, reason: str) -> NoReturn:
        """The peer ran into one of the hub's limits while a frame was read: close, stop reading."""
        self._close_for_limit(limit, reason)
        raise TransportClosed(_POLICY_VIOLATION, reason)

    def _close_for_limit(self, limit: str, reason: str) -> None:
        """Close 1008 now (which also ends the reading: see `close`), counted once."""
        if self._observer is not None and not self._closing:
            self._observer.limit(limit)
        self.close(_POLICY_VIOLATION, reason)

    def _violation(self, code: int, reason: str) -> None:
        """The peer broke the protocol: Close with `code` now, read nothing more."""
        if self._observer is not None and not self._closing:
            self._observer.violation(code)
        self.close(code, reason[:120])
        self._done = True  # nothing more is parsed
        raise TransportClosed(code, reason)

    async def serve(self, on_message: Callable[[Message], None]) -> NoReturn:
        # One cancel scope serves every read until the next ping or idle
        # check is due: a busy connection's reads cost no scope each. Its
        # deadline is not moved as data arrives; when it passes, `_on_timer`
        # looks at when the peer was last heard from and re-arms.
        while True:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._receive_scope = scope
                try:
                    while True:
                        if self._done:
                            raise TransportClosed(self._close_code, self._close_reason)
                        message = self._next_message() if self._unparsed() else None
                        if message is not None:
                            on_message(message)
                        else:
                            if not self._parts and not self._unparsed():
                                self._message_started = None  # between messages
                            self._received(await self._recv())
                finally:
                    self._receive_scope = None
            self._on_timer()

    async def _read(self) -> None:
        with trio.CancelScope(deadline=self._deadline()) as scope:
            self._receive_scope = scope
            try:
                data = await self._recv()
            finally:
                self._receive_scope = None
        if scope.cancelled_caught:
            self._on_timer()
            return
        self._received(data)

    async def _recv(self) -> bytes | bytearray:
        """The next bytes from the peer; empty when it has closed or reset."""
        fd = self._fd
        try:
            if fd is None:
                return await self._stream.receive_some(RECEIVE_SIZE)
            # A read that emptied the socket is followed by a wait for it to
            # be readable, not by a read that fails first: a client that
            # waits for each answer (a call, a game's input) is nearly always
            # in this case, and the failed read is a system call and an
            # exception per message.
            if self._drained:
                await trio.lowlevel.wait_readable(fd)
            else:
                await trio.lowlevel.checkpoint()
            while True:
                try:
                    data = os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(fd)
                    continue
                self._drained = len(data) < RECEIVE_SIZE
                return data
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            return b""  # reset by the peer, or closed under us: the end either way

    def _received(self, data: bytes | bytearray) -> None:
        if not data:
            self._done = self._lost = True
            self._partial = None
            self._outbox = None
            if not self._closing:
                self._closing = True
                self._close_code, self._close_reason = 1006, "connection lost"
            raise TransportClosed(self._close_code, self._close_reason)
        now = self._received_at = trio.current_time()
        if self._message_started is None:
            self._message_started = now
            # The read's scope ends when the message must be complete, if sooner.
            scope = self._receive_scope
            limit = now + self._settings.message_timeout
            if scope is not None and limit < scope.deadline:
                scope.deadline = limit
        self._pinged = False
        data = data if type(data) is bytes else bytes(data)
        if self._pending or self._parts or self._frames_busy():
            self._hand_over()
            self._parser().receive_bytes(data)
        else:
            self._pending = data
            self._pending_at = 0

    def _hand_over(self) -> None:
        """Give wsproto the bytes not parsed yet: from here on it parses them."""
        if self._pending:
            at = self._pending_at
            self._parser().receive_bytes(self._pending[at:] if at else self._pending)
            self._pending, self._pending_at = b"", 0

    def _frames_busy(self) -> bool:
        """Whether wsproto holds part of a frame or message (so what comes next is its to parse)."""
        if self._frames is None:
            return False
        decoder = self._decoder()
        return decoder is None or decoder.header is not None or len(decoder.buffer) > 0

    def _decoder(self) -> Any:
        """wsproto's frame decoder, kept at `_frame_decoder` by wsproto 1.2 and 1.3 (or None)."""
        return getattr(self._frames, "_frame_decoder", None)

    def _deadline(self) -> float:
        if self._close_deadline is not None:
            return self._close_deadline
        if self._pinged:
            deadline = self._last_received + self._settings.idle_timeout
        else:
            deadline = self._last_received + self._settings.ping_interval
        if self._message_started is not None:
            deadline = min(deadline, self._message_started + self._settings.message_timeout)
        return deadline

    def _on_timer(self) -> None:
        now = trio.current_time()
        if self._close_deadline is not None:
            if now >= self._close_deadline:
                # The peer did not answer our Close in time: give up on it.
                self._done = True
                raise TransportClosed(self._close_code, self._close_reason)
            return
        settings = self._settings
        started = self._message_started
        if started is not None and now >= started + settings.message_timeout:
            reason = f"message not complete within {settings.message_timeout:g} s"
            self._close_for_limit("message_timeout", reason)
        elif now >= self._last_received + settings.idle_timeout:
            if self._observer is not None:
                self._observer.idle()
            self.close(1001, "idle timeout")
        elif not self._pinged and now >= self._last_received + settings.ping_interval:
            self._pinged = True
            payload = (next(_ping_payloads) & 0xFFFFFFFF).to_bytes(8, "big")
            self._send_control(_control_frame(_PING_FIRST, payload))

    # --- closing ---------------------------------------------------------------

    def close(self, code: int, reason: str = "", *, discard: bool = False) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_code, self._close_reason = code, reason
        if discard and self._outbox is not None:
            self._outbox.clear()
        if not self._lost and not self._close_received:
            self._send_control(_close_frame(code, reason))
        self._close_deadline = trio.current_time() + self._settings.close_timeout
        if code == _POLICY_VIOLATION:
            # A peer closed for abuse (a flood, a limit) is not read any more:
            # waiting for its Close would mean parsing its flood meanwhile.
            self._done = True
        scope = self._receive_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, self._close_deadline)

    def _drop_parser(self) -> None:
        """Forget wsproto's parser, ending its parsing generator.

        The generator holds its parser, which holds it: left as it is, the
        pair waits for the garbage collector's full pass, which can be long
        in coming (`server.gc_threshold`), with its buffer.
        """
        frames, self._frames = self._frames, None
        parsing = getattr(frames, "_parse_more", None)
        if parsing is not None:
            parsing.close()

    async def aclose(self) -> None:
        if self._released:
            return
        try:
            self.close(1000, "")
            if self._done and not self.backlog:
                return  # the peer has closed, or broke the protocol: nothing to wait for
            with trio.move_on_after(self._settings.close_timeout):
                try:
                    await self.flush()
                    # Read until the peer's Close (or the deadline) so the
                    # closing handshake completes before TCP closes.
                    while True:
                        await self.receive()
                except TransportClosed:
                    pass
        finally:
            self._released = True
            self._drop_parser()
            if self._lost and self._socket is not None:
                # The peer is gone (EOF or reset): nothing of ours is in
                # flight that a lingering close would protect.
                self._socket.close()
            else:
                await close_lingering(self._stream, timeout=self._settings.close_timeout)
