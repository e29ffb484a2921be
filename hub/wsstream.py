"""The byte stream the gateway gives trio-websocket, and why it is not the raw socket.

`WebSocketStream` sits between trio-websocket and the TCP (or TLS) stream of
one accepted connection. It does four things, none of which parse messages:

1. It replays the request head the gateway has already read with h11, so
   trio-websocket performs the opening handshake as if it read it itself.
2. It holds back every byte after the head until the gateway has accepted
   the handshake and called `attach()`. So no frame can be processed before
   the gateway holds the `WebSocketConnection` (see 4).
3. It follows frame boundaries in both directions (headers only: payloads are
   skipped, never copied or unmasked) to know whether a Close frame has
   been sent or received, and with which status code. This also tells the
   gateway's metrics when the server closed first for a violation.
4. When trio-websocket closes the stream, it sends the Close frame the
   connection still owes the peer, then closes the transport lingering
   (half-close, read until the peer closes, bounded), so that an RST
   caused by unread input cannot destroy the Close frame in flight.

Why 4 is needed (checked against trio-websocket 0.12.2 and wsproto 1.3.2):
when a client breaks the protocol after the handshake (an unmasked frame,
reserved bits, a bad opcode, a fragmented control frame, invalid UTF-8 in a
text message), wsproto reports it by yielding a synthetic `CloseConnection`
carrying the right RFC 6455 code (1002 or 1007) while its state stays OPEN.
trio-websocket treats that event like a Close received from the peer: since
the state is not REMOTE_CLOSING it sends no reply, records the code as the
close reason and closes the TCP stream. The peer sees the connection drop
without the Close frame RFC 6455 §7.1.7 requires ("_Fail the WebSocket
Connection_": send a Close frame with an appropriate code, then close).

The public API does expose the diagnosis: `WebSocketConnection.closed` holds
wsproto's code and reason at the moment trio-websocket calls `aclose()` on
its stream. So this stream's `aclose()` checks: if no Close frame has gone out
yet and the connection's close reason carries a code that may be sent, it
writes that Close frame itself before closing. No trio-websocket internals
are touched; if a later trio-websocket sends the frame itself, point 3 sees
it go out and this stream adds nothing.

Limits: a violation detected while a send is blocked (the peer is not
reading) or after a send was cut short cannot get its frame: the frame
would have to follow bytes of unknown length, so the stream just closes.
The workaround relies on two public facts of trio-websocket 0.12.2: that
`closed` carries wsproto's code when the stream is closed, and that it
closes its stream through `aclose()`. If either changes, the violation
tests in tests/gateway fail rather than the frame silently going missing.
Messages larger than the limit are answered by trio-websocket itself with
Close 1009 (that path works in 0.12.2); its size check counts what has
arrived, so the 1009 comes after the limit is passed, not when a frame
header announces a large payload.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

import trio
import trio_websocket

from hub.http import LINGER_SECONDS, close_lingering

__all__ = ["VIOLATION_CLOSE_CODES", "WebSocketStream", "close_frame"]

logger = logging.getLogger(__name__)

# Close codes that mean "the peer broke the rules" (RFC 6455 §7.4.1):
# protocol error, unacceptable data type, inconsistent data (bad UTF-8),
# policy violation, message too big.
VIOLATION_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009})

_OPCODE_CLOSE = 0x8
# RFC 6455 §5.5: a control frame's payload is at most 125 bytes, two of
# which carry the status code.
_MAX_CLOSE_REASON_BYTES = 123


def close_frame(code: int, reason: str = "") -> bytes:
    """Encode an unmasked (server-to-client) Close frame.

    The reason is cut to fit a control frame, on a character boundary.
    """
    encoded = reason.encode()[:_MAX_CLOSE_REASON_BYTES]
    encoded = encoded.decode(errors="ignore").encode()
    payload = struct.pack("!H", code) + encoded
    return bytes([0x80 | _OPCODE_CLOSE, len(payload)]) + payload


def _may_send(code: int) -> bool:
    # RFC 6455 §7.4.1-7.4.2: 1005, 1006 and 1015 are for local reporting only;
    # 1004 and 1016-2999 are reserved; 3000-4999 belong to applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class _FrameBoundaries:
    """Follow frame headers in one direction of a WebSocket byte stream (RFC 6455 §5.2).

    Payloads are skipped, not copied or unmasked, except the status code in
    the first two payload bytes of the first Close frame.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._payload_left = 0
        # Status code bytes of the first Close frame, while they arrive.
        self._close_payload: bytearray | None = None
        self._close_mask: bytes | bytearray = b"\0\0"
        self.close_seen = False
        # The first Close frame's status code, 1005 if it carries none
        # (RFC 6455 §7.1.5); None until known.
        self.close_code: int | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> int | None:
        """Follow `data`; return the first Close frame's code if known by now."""
        position, end = 0, len(data)
        while position < end:
            if self._payload_left:
                step = min(self._payload_left, end - position)
                if self._close_payload is not None:
                    self._collect_close_code(data[position : position + step])
                self._payload_left -= step
                position += step
                continue
            self._header.append(data[position])
            position += 1
            payload_length = _payload_length(self._header)
            if payload_length is None:
                continue
            if self._header[0] & 0x0F == _OPCODE_CLOSE and not self.close_seen:
                self.close_seen = True
                if payload_length < 2:
                    self.close_code = 1005
                else:
                    self._close_payload = bytearray()
                    self._close_mask = self._header[-4:] if self._header[1] & 0x80 else b"\0\0"
            self._payload_left = payload_length
            self._header.clear()
        return self.close_code

    def _collect_close_code(self, data: bytes | bytearray | memoryview) -> None:
        assert self._close_payload is not None
        self._close_payload += data[: 2 - len(self._close_payload)]
        if len(self._close_payload) == 2:
            code = bytes(
                byte ^ key
                for byte, key in zip(self._close_payload, self._close_mask[:2], strict=True)
            )
            self.close_code = int.from_bytes(code, "big")
            self._close_payload = None


def _payload_length(header: bytearray) -> int | None:
    """Return the payload length once `header` holds a complete frame header."""
    if len(header) < 2:
        return None
    length = header[1] & 0x7F
    extended = {126: 2, 127: 8}.get(length, 0)
    mask = 4 if header[1] & 0x80 else 0
    if len(header) < 2 + extended + mask:
        return None
    if extended:
        return int.from_bytes(header[2 : 2 + extended], "big")
    return length


class WebSocketStream(trio.abc.Stream):
    """One accepted connection's stream, as trio-websocket sees it.

    `head` is replayed first; `pending` (bytes that arrived after the head)
    and everything after it flow only once `attach()` is called.
    `on_violation(code)` is called once if this side closes first with a
    code from `VIOLATION_CLOSE_CODES`, whether trio-websocket or this
    stream sent the frame.

    This stream owns `transport` from construction on: `aclose()` closes it,
    lingering (see `hub.http.close_lingering`), within `close_timeout`.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        head: bytes,
        pending: bytes,
        on_violation: Callable[[int], None],
        close_timeout: float = LINGER_SECONDS,
    ) -> None:
        self._transport = transport
        self._head = memoryview(head)
        self._pending = pending
        self._on_violation = on_violation
        self._close_timeout = close_timeout
        self._websocket: trio_websocket.WebSocketConnection | None = None
        self._attached = trio.Event()
        self._incoming = _FrameBoundaries()
        self._outgoing = _FrameBoundaries()
        # Serializes writes from trio-websocket (which holds its own lock,
        # but does not take it when it closes the stream) with the Close
        # frame this stream may write while closing.
        self._send_lock = trio.StrictFIFOLock()
        # Held while trio-websocket's reader waits on the transport; a
        # lingering close takes it so the two never read at once.
        self._receive_lock = trio.StrictFIFOLock()
        # False once a send ended early: how much of it went out is unknown,
        # so no further frame can be framed correctly.
        self._frames_intact = True
        self._peer_closed_first = False
        self._close_started = False
        self._closed = trio.Event()
        self.last_received = trio.current_time()

    def attach(self, websocket: trio_websocket.WebSocketConnection) -> None:
        """Start passing frames: the handshake is accepted and `websocket` owns this stream.

        Everything written before this call was the HTTP handshake response;
        everything after is WebSocket frames.
        """
        self._websocket = websocket
        self._attached.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            size = len(self._head) if max_bytes is None else max_bytes
            chunk, self._head = self._head[:size], self._head[size:]
            await trio.lowlevel.checkpoint()
            return bytes(chunk)
        if self._close_started:
            raise trio.ClosedResourceError("the stream is closing")
        await self._attached.wait()
        data: bytes | bytearray
        if self._pending:
            size = len(self._pending) if max_bytes is None else max_bytes
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            async with self._receive_lock:
                data = await self._transport.receive_some(max_bytes)
        if data:
            self.last_received = trio.current_time()
            self._incoming.feed(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._close_started:
            raise trio.ClosedResourceError("the stream is closing")
        async with self._send_lock:
            if not self._frames_intact:
                # An earlier send was cut short: the peer is inside a frame of
                # unknown remaining length, so these bytes (trio-websocket's
                # Close frame, say) would only corrupt that frame's payload.
                raise trio.BrokenResourceError("an earlier send was cut short mid-frame")
            self._frames_intact = False
            await self._transport.send_all(data)
            self._frames_intact = True
        if self._websocket is not None:
            self._observe_outgoing(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send any Close frame still owed, then close the transport lingering.

        Safe to call more than once and from several tasks: later calls wait
        for the first to finish. Cancellation closes the transport at once.
        """
        reason = self._websocket.closed if self._websocket is not None else None
        await self._close(None if reason is None else (reason.code, reason.reason or ""))

    async def _close(self, close: tuple[int, str] | None) -> None:
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = True
        try:
            with trio.move_on_after(self._close_timeout):
                if close is not None:
                    await self._send_close(*close)
                # Lingering reads the transport, so wait for trio-websocket's
                # reader to be out of receive_some (it leaves on data, EOF or
                # cancellation); the deadline bounds the wait.
                async with self._receive_lock:
                    await close_lingering(self._transport, timeout=self._close_timeout)
        finally:
            try:
                await trio.aclose_forcefully(self._transport)
            finally:
                # Even if cancellation unwinds through the close above.
                self._closed.set()

    async def send_close(self, code: int, reason: str = "") -> None:
        """Send Close `code` unless a Close frame went out already; do not close.

        For when trio-websocket cannot run the closing handshake: at shutdown
        its reader task is cancelled together with the handler, so no Close
        reply could be read and `WebSocketConnection.aclose()` would only
        wait out its timeout. Follow with `aclose()`. Does nothing once the
        stream is closing.
        """
        if not self._close_started:
            await self._send_close(code, reason)

    async def _send_close(self, code: int, reason: str) -> None:
        if self._websocket is None or self._outgoing.close_seen or not _may_send(code):
            return
        async with self._send_lock:
            if not self._frames_intact:
                logger.debug("not sending Close %d after an interrupted send", code)
                return
            frame = close_frame(code, reason)
            try:
                await self._transport.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                logger.debug("peer gone before Close %d could be sent", code)
                return
        self._observe_outgoing(frame)

    def _observe_outgoing(self, data: bytes | bytearray | memoryview) -> None:
        if self._outgoing.close_code is not None:
            return
        if not self._outgoing.close_seen:
            # Decided when our Close starts: was it an answer to the peer's?
            self._peer_closed_first = self._incoming.close_seen
        code = self._outgoing.feed(data)
        if code is not None and not self._peer_closed_first and code in VIOLATION_CLOSE_CODES:
            self._on_violation(code)
