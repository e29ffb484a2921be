"""Raw-socket clients for the gateway tests: bytes in, bytes out, parsed by hand.

The WebSocket helpers deliberately avoid a WebSocket library on the client
side, so the tests can send frames no library would produce and see exactly
what the server wrote, in order, up to the end of the TCP stream.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Awaitable, Callable

import attrs
import trio

from hub.gateway import GatewayEvent, GatewayHandle

HANDSHAKE_KEY = base64.b64encode(b"0123456789abcdef").decode()

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


@attrs.define
class RunningGateway:
    """A gateway started by the `start_gateway` fixture, with the events it reported."""

    handle: GatewayHandle
    events: list[GatewayEvent]
    # Cancelling this scope shuts this gateway down alone.
    scope: trio.CancelScope

    @property
    def port(self) -> int:
        return self.handle.port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


StartGateway = Callable[..., Awaitable[RunningGateway]]


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        assert self.opcode == OPCODE_CLOSE
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class RawConnection:
    """A TCP connection to the gateway that keeps whatever it has read but not used."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
        self.buffer += data
        return bool(data)

    async def read_until_eof(self) -> bytes:
        """Everything the server sends until it closes (raises if it resets)."""
        while await self._fill():
            continue
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    async def read_response_head(self) -> RawResponse:
        """Read a response's status line and headers; the body stays buffered."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"EOF inside a response head: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.buffer = bytearray(rest)
        return RawResponse(int(status_line.split()[1]), headers, b"")

    async def read_response(self, *, head_request: bool = False) -> RawResponse:
        """Read one HTTP response, its body framed by Content-Length."""
        response = await self.read_response_head()
        length = int(response.headers.get("content-length", "0"))
        if head_request or response.status == 304:
            length = 0
        while len(self.buffer) < length:
            if not await self._fill():
                raise AssertionError("EOF inside a response body")
        body, self.buffer = bytes(self.buffer[:length]), self.buffer[length:]
        return attrs.evolve(response, body=body)

    async def read_frame(self) -> Frame | None:
        """Read one server frame, or None at a clean EOF between frames."""
        while True:
            frame, used = parse_frame(bytes(self.buffer))
            if frame is not None:
                del self.buffer[:used]
                return frame
            if not await self._fill():
                assert not self.buffer, f"EOF inside a frame: {bytes(self.buffer)!r}"
                return None

    async def read_frames_until_eof(self) -> list[Frame]:
        """Every frame the server sends before the TCP stream ends."""
        frames = []
        while (frame := await self.read_frame()) is not None:
            frames.append(frame)
        return frames

    async def aclose(self) -> None:
        await self.stream.aclose()


def upgrade_request(
    path: str = "/echo", *, extra_headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {HANDSHAKE_KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in extra_headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_raw_websocket(port: int, path: str = "/echo") -> RawConnection:
    """Connect and complete the opening handshake; assert the server switched."""
    connection = await RawConnection.open(port)
    await connection.send(upgrade_request(path))
    response = await connection.read_response_head()
    assert response.status == 101, response
    return connection


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """Encode a client frame; every field can be made wrong on purpose.

    `length` overrides the announced payload length (for oversize tests that
    announce more than they send).
    """
    announced = len(payload) if length is None else length
    header = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if announced < 126:
        header.append(mask_bit | announced)
    elif announced < 1 << 16:
        header.append(mask_bit | 126)
        header += struct.pack("!H", announced)
    else:
        header.append(mask_bit | 127)
        header += struct.pack("!Q", announced)
    if not masked:
        return bytes(header) + payload
    key = os.urandom(4)
    header += key
    return bytes(header) + bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))


def parse_frame(data: bytes) -> tuple[Frame | None, int]:
    """Parse one unmasked server frame from the front of `data`."""
    if len(data) < 2:
        return None, 0
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    assert not data[1] & 0x80, "server frames must not be masked"
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None, 0
        (length,), offset = struct.unpack("!H", data[2:4]), 4
    elif length == 127:
        if len(data) < 10:
            return None, 0
        (length,), offset = struct.unpack("!Q", data[2:10]), 10
    if len(data) < offset + length:
        return None, 0
    return Frame(fin, opcode, data[offset : offset + length]), offset + length
