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
Any other exception, or a broken expectation (AssertionError), is a finding.
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
