"""A client written by hand on a TCP socket: HTTP/1.1 and WebSocket bytes, parsed by hand.

Shared by the gateway and hub tests. It deliberately avoids an HTTP or
WebSocket library, so a test can send what no library would (an unmasked
frame, a reserved bit, a length that lies), stop reading with a tiny receive
buffer, and see exactly what the server wrote, in order, up to the end of the
TCP stream.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Iterable, Mapping
from typing import Self

import attrs
import trio

HANDSHAKE_KEY = base64.b64encode(b"triohub-test-key").decode()

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


@attrs.frozen
class RawFrame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        assert self.opcode == OPCODE_CLOSE, self
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code

    @property
    def close_reason(self) -> str:
        assert self.opcode == OPCODE_CLOSE, self
        return self.payload[2:].decode()

    @property
    def message(self) -> str | bytes:
        """The payload as a message: str for text, bytes for binary."""
        assert self.fin, "fragmented messages are not used by the hub"
        if self.opcode == OPCODE_TEXT:
            return self.payload.decode()
        assert self.opcode == OPCODE_BINARY, self
        return self.payload


@attrs.frozen
class RawResponse:
    """An HTTP response; `body` stays empty when only the head was read."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and headers (names lower-cased) of a response head."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def frame_header(data: bytes | bytearray) -> tuple[int, int, int] | None:
    """(opcode, announced payload length, header length) of the frame starting `data`."""
    if len(data) < 2:
        return None
    length, size = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, size = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, size = struct.unpack("!Q", data[2:10])[0], 10
    return data[0] & 0x0F, length, size


def parse_frame(data: bytes | bytearray) -> tuple[RawFrame | None, int]:
    """Parse one server frame off the front of `data`: (frame, bytes used), or (None, 0)."""
    if len(data) >= 2:
        assert not data[1] & 0x80, "a server frame must not be masked"
    header = frame_header(data)
    if header is None:
        return None, 0
    opcode, length, size = header
    if len(data) < size + length:
        return None, 0
    return RawFrame(bool(data[0] & 0x80), opcode, bytes(data[size : size + length])), size + length


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

    `masked=False` breaks RFC 6455 §5.1; `length` overrides the announced
    payload length (for oversize tests that announce more than they send).
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
    mask = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(
        len(payload), "big"
    )
    return bytes(header) + key + masked_payload


def upgrade_request(
    path: str,
    *,
    subprotocols: Iterable[str] = (),
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {HANDSHAKE_KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    offered = ", ".join(subprotocols)
    if offered:
        lines.append(f"Sec-WebSocket-Protocol: {offered}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_tcp(port: int, *, receive_buffer: int | None = None) -> trio.SocketStream:
    """Connect to 127.0.0.1:`port`; a fixed `receive_buffer` turns off autotuning."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Set before connecting, so the window offered in the handshake is small too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


class RawConnection:
    """A client connection that reads only when told to and keeps what it read but did not use."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, port: int, *, receive_buffer: int | None = None) -> Self:
        return cls(await open_tcp(port, receive_buffer=receive_buffer))

    @classmethod
    async def open_websocket(
        cls,
        port: int,
        path: str,
        *,
        subprotocol: str | None = None,
        receive_buffer: int | None = None,
    ) -> Self:
        """Connect and complete the opening handshake; assert the server switched.

        With `subprotocol`, offer it and assert the server chose it.
        """
        connection = await cls.open(port, receive_buffer=receive_buffer)
        offered = () if subprotocol is None else (subprotocol,)
        await connection.send_bytes(upgrade_request(path, subprotocols=offered))
        head = await connection.read_response_head()
        assert head.status == 101, head
        if subprotocol is not None:
            assert head.headers.get("sec-websocket-protocol") == subprotocol, head
        return connection

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.send_bytes(client_frame(OPCODE_TEXT, message.encode()))
        else:
            await self.send_bytes(client_frame(OPCODE_BINARY, message))

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        await self.send_bytes(client_frame(OPCODE_CLOSE, struct.pack("!H", code) + reason.encode()))

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(256 * 1024)
        self.buffer += data
        return bool(data)

    async def read_response_head(self) -> RawResponse:
        """Read a response's status line and headers; the body stays buffered."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"EOF inside a response head: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return RawResponse(*parse_head(head))

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

    async def read_frame(self) -> RawFrame | None:
        """Read one frame, or None at an EOF between frames (an EOF inside one fails)."""
        while True:
            frame, used = parse_frame(self.buffer)
            if frame is not None:
                del self.buffer[:used]
                return frame
            if not await self._fill():
                assert not self.buffer, (
                    f"EOF inside a frame, {len(self.buffer)} bytes in: {bytes(self.buffer[:64])!r}"
                )
                return None

    async def read_frames_until_eof(self) -> list[RawFrame]:
        """Every frame the server sends before the TCP stream ends."""
        frames = []
        while (frame := await self.read_frame()) is not None:
            frames.append(frame)
        return frames

    async def read_until_eof(self) -> bytes:
        """Everything left on the stream, frames or not, up to the server's FIN.

        Raises if the server resets the connection instead.
        """
        while await self._fill():
            continue
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


async def request_until_eof(port: int, request: bytes) -> bytes:
    """Send `request` to 127.0.0.1:`port` on a new connection; everything that comes back."""
    connection = await RawConnection.open(port)
    try:
        await connection.send_bytes(request)
        return await connection.read_until_eof()
    finally:
        await connection.aclose()


async def http_get(port: int, path: str) -> RawResponse:
    """GET `path` from 127.0.0.1:`port` with `Connection: close`; read to EOF."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    head, _, body = (await request_until_eof(port, request.encode())).partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    assert "chunked" not in headers.get("transfer-encoding", ""), headers
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]), (len(body), headers)
    return RawResponse(status, headers, body)
