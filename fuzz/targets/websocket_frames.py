"""Fuzz target: a WebSocket client's byte stream, after the handshake, into the hub's transport.

The input is what a client sends once the 101 is out, preceded by one byte
of choices: how the bytes are cut into reads, whether the first read came
along with the request head (`trailing`), and whether the client then
closes its side or falls silent. The transport runs on a real socket pair
under trio's autojump clock, so pings, the idle timeout and the closing
handshake's timeout all run, in no time.

The documented outcomes, and nothing else: whole messages (text or binary,
none over the limit), then the transport closed with an RFC 6455 code; what
the server wrote is valid server frames (unmasked, control frames short),
at most one Close, last, carrying a code a Close may carry (RFC 6455 §7.4).
The messages are also those wsproto alone parses from the same bytes (the
transport takes plain frames itself: `_take_plain_frame`), and a violation
closes at the same message with the code wsproto gives it. Any other
exception, or a broken expectation (AssertionError), is a finding.
"""

from __future__ import annotations

import socket
from typing import Final

import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from fuzz.targets.peer import read_all, send_reads
from hub.transport import TransportClosed, WebSocketSettings, WebSocketTransport

# Small limits, so that the paths past them are reached with small inputs.
SETTINGS: Final = WebSocketSettings(
    max_message_size=4096, ping_interval=20.0, idle_timeout=60.0, close_timeout=5.0
)

# Codes the transport closes with on its own: normal, idle (1001), the
# client's violations (1002, 1007, 1009), and the connection lost (1006).
SERVER_CODES: Final = frozenset({1000, 1001, 1002, 1006, 1007, 1009})

# Codes a peer's Close may carry that wsproto accepts (RFC 6455 §7.4.1-2),
# and 1005 for a Close without a code.
PEER_CODE_RANGES: Final = ((1000, 1003), (1005, 1005), (1007, 1014), (3000, 4999))

# Codes a Close frame may carry on the wire (§7.4.2: never 1005, 1006, 1015).
SENDABLE_RANGES: Final = ((1000, 1003), (1007, 1014), (3000, 4999))


def _in(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= code <= high for low, high in ranges)


def test_one_input(data: bytes) -> None:
    """Run one input; raise if the transport does anything undocumented."""
    if not data:
        return
    trio.run(_run, data[0], data[1:], clock=trio.testing.MockClock(autojump_threshold=0))


async def _run(choices: int, stream: bytes) -> None:
    # choices: bits 0-5 the read size, bit 6 the first read as `trailing`,
    # bit 7 the client closes its side at the end (else it falls silent).
    read_size = ((choices & 0x3F) + 1) ** 2
    reads = [stream[i : i + read_size] for i in range(0, len(stream), read_size)]
    trailing = reads.pop(0) if choices & 0x40 and reads else b""
    server_socket, client_socket = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    transport = WebSocketTransport(trio.SocketStream(server_socket), SETTINGS, trailing=trailing)
    written = bytearray()
    messages: list[str | bytes] = []
    closed: TransportClosed | None = None
    with trio.fail_after(3600), client_socket:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, client_socket, written)
            nursery.start_soon(send_reads, client_socket, reads, bool(choices & 0x80))
            try:
                await transport.serve(messages.append)
            except TransportClosed as error:
                closed = error
            # What the gateway does once the handler is done (run_handler).
            transport.close(1000, "handler finished")
            await transport.aclose()
            nursery.cancel_scope.cancel()
    assert closed is not None
    _check_outcome(messages, closed, bytes(written))
    _check_against_wsproto(messages, closed, trailing + b"".join(reads))


def _check_outcome(messages: list[str | bytes], closed: TransportClosed, written: bytes) -> None:
    for message in messages:
        assert isinstance(message, (str, bytes)), message
        size = len(message.encode()) if isinstance(message, str) else len(message)
        assert size <= SETTINGS.max_message_size, size
    code = closed.code
    assert code in SERVER_CODES or _in(code, PEER_CODE_RANGES), f"closed with {code}"
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(written)
    close_codes: list[int] = []
    try:
        for frame in frames.received_frames():
            assert not close_codes, f"a frame after the Close: {frame}"
            if frame.opcode is Opcode.CLOSE:
                close_codes.append(int(frame.payload[0]))
            else:
                assert frame.opcode in (Opcode.PING, Opcode.PONG), frame
    except ParseFailed as failure:
        raise AssertionError(f"the server wrote an invalid frame: {failure}") from failure
    for sent in close_codes:
        assert _in(sent, SENDABLE_RANGES), f"the server sent Close {sent}"


def _reference(stream: bytes) -> tuple[list[str | bytes], int | None]:
    """The messages wsproto alone parses from `stream`, and the code the stream ends with.

    That code is the first violation's (the limit on a message's size
    applied as the transport applies it), or the code of the client's Close;
    None if the stream ends with neither.
    """
    frames = FrameProtocol(client=False, extensions=[])
    frames.receive_bytes(stream)
    messages: list[str | bytes] = []
    parts: list[str | bytes] = []
    try:
        for frame in frames.received_frames():
            if frame.opcode is Opcode.CLOSE:
                assert isinstance(frame.payload, tuple)
                return messages, int(frame.payload[0])
            if frame.opcode in (Opcode.PING, Opcode.PONG):
                continue
            payload = frame.payload
            assert isinstance(payload, (str, bytes, bytearray))
            parts.append(payload if isinstance(payload, str) else bytes(payload))
            size = sum(len(part.encode()) if isinstance(part, str) else len(part) for part in parts)
            if size > SETTINGS.max_message_size:
                return messages, 1009
            if frame.message_finished:
                joined: str | bytes = (
                    "".join(parts)  # type: ignore[arg-type]
                    if isinstance(parts[0], str)
                    else b"".join(parts)  # type: ignore[arg-type]
                )
                messages.append(joined)
                parts = []
    except ParseFailed as failure:
        return messages, int(failure.code)
    return messages, None


def _check_against_wsproto(
    messages: list[str | bytes], closed: TransportClosed, stream: bytes
) -> None:
    expected, end = _reference(stream)
    # The transport may stop sooner (a limit on fragments or time, the peer's silence).
    assert messages == expected[: len(messages)], "the messages differ from wsproto's"
    if closed.code in (1002, 1007, 1009):
        # A violation, or the client's own Close with one of these codes.
        assert (len(messages), closed.code) == (len(expected), end), (
            f"closed {closed.code} after {len(messages)} messages; wsproto: "
            f"{end} after {len(expected)}"
        )
