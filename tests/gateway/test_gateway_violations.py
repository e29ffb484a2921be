"""Protocol violations on a raw socket: a Close frame with the RFC 6455 code, then EOF.

Each test completes a valid handshake by hand, writes frames no WebSocket
library would write, and reads every byte the server sends until the TCP
stream ends. The Close frame must be among them, before the end: a server
that just drops the connection fails these tests (RFC 6455 §7.1.7).
"""

from __future__ import annotations

import pytest
import trio
from gateway_support import StartGateway
from wire_support import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    RawConnection,
    RawFrame,
    client_frame,
    upgrade_request,
)

from hub.gateway import GatewayConfig, ProtocolViolationClosed, WebSocketAccepted

LIMIT = 1024


async def closing_frames(connection: RawConnection) -> list[RawFrame]:
    """Read to EOF; assert the server's last frame is a Close and return all frames."""
    frames = await connection.read_frames_until_eof()
    assert frames, "the server closed without a Close frame"
    assert frames[-1].opcode == OPCODE_CLOSE, frames
    return frames


@pytest.mark.parametrize(
    ("name", "frames", "code"),
    [
        ("unmasked frame", [client_frame(OPCODE_TEXT, b"hi", masked=False)], 1002),
        ("reserved bit", [client_frame(OPCODE_TEXT, b"hi", rsv=0b100)], 1002),
        ("unknown opcode", [client_frame(0x3, b"hi")], 1002),
        ("fragmented ping", [client_frame(OPCODE_PING, b"hi", fin=False)], 1002),
        ("oversized ping", [client_frame(OPCODE_PING, b"x" * 126)], 1002),
        ("continuation first", [client_frame(0x0, b"hi")], 1002),
        ("invalid UTF-8", [client_frame(OPCODE_TEXT, b"caf\xc3")], 1007),
        ("invalid UTF-8 byte", [client_frame(OPCODE_TEXT, b"\xff\xfe")], 1007),
        (
            "invalid UTF-8 across fragments",
            [client_frame(OPCODE_TEXT, b"ok \xc3", fin=False), client_frame(0x0, b"(")],
            1007,
        ),
        ("message too big", [client_frame(OPCODE_BINARY, b"x" * (LIMIT + 1))], 1009),
        (
            "too big across fragments",
            [
                client_frame(OPCODE_BINARY, b"x" * 600, fin=False),
                client_frame(0x0, b"x" * 600),
            ],
            1009,
        ),
        (
            "announced too big, trickling in",
            [client_frame(OPCODE_BINARY, b"x" * (LIMIT + 10), length=1 << 40)],
            1009,
        ),
    ],
)
async def test_violation_gets_a_close_frame_before_eof(
    start_gateway: StartGateway, name: str, frames: list[bytes], code: int
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(GatewayConfig(port=0, max_message_size=LIMIT))
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        for frame in frames:
            await connection.send_bytes(frame)
        received = await closing_frames(connection)
        assert received[-1].close_code == code, (name, received[-1])
        await connection.aclose()
        assert gateway.events == [
            WebSocketAccepted("/echo", None),
            ProtocolViolationClosed("/echo", code),
        ]


async def test_violation_after_good_messages_still_gets_its_close(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        await connection.send_bytes(
            client_frame(OPCODE_TEXT, b"one") + client_frame(OPCODE_BINARY, b"two")
        )
        assert await connection.read_frame() == RawFrame(True, OPCODE_TEXT, b"one")
        assert await connection.read_frame() == RawFrame(True, OPCODE_BINARY, b"two")
        await connection.send_bytes(client_frame(OPCODE_TEXT, b"three", masked=False))
        received = await closing_frames(connection)
        assert [frame.close_code for frame in received] == [1002]
        await connection.aclose()


async def test_violation_sent_with_the_handshake_gets_its_close(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open(gateway.port)
        # Frames in the same write as the head reach the server in one read,
        # before the handshake is accepted.
        await connection.send_bytes(
            upgrade_request("/echo")
            + client_frame(OPCODE_TEXT, b"early")
            + client_frame(OPCODE_TEXT, b"bad", masked=False)
        )
        assert (await connection.read_response_head()).status == 101
        received = await closing_frames(connection)
        assert received[-1].close_code == 1002
        # The good frame was delivered to the handler; whether its echo beats
        # the Close depends on scheduling, since both came in one read.
        assert received[:-1] in ([], [RawFrame(True, OPCODE_TEXT, b"early")])
        await connection.aclose()


async def test_peer_initiated_close_is_echoed_and_not_counted(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        await connection.send_close(1002, "my reason")
        received = await closing_frames(connection)
        assert [frame.close_code for frame in received] == [1002]
        await connection.aclose()
        assert gateway.events == [WebSocketAccepted("/echo", None)]


async def test_normal_close_handshake(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        await connection.send_close(1000)
        received = await closing_frames(connection)
        assert [frame.close_code for frame in received] == [1000]
        await connection.aclose()
        assert gateway.events == [WebSocketAccepted("/echo", None)]
