"""Clients for the hub's integration tests: a protocol client and a bare-socket one.

`HubClient` speaks the hub protocol over a real trio-websocket connection and
decodes with `hub.protocol` codecs; it keeps every raw message it received so
tests can look at batching. `RawWebSocket` is a WebSocket client written by
hand on a TCP socket, for what no library would do: stop reading with a tiny
receive buffer, send an unmasked frame, drop the connection without a Close,
and see exactly which frames the server wrote before the TCP stream ended.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import trio
import trio_websocket

from hub.protocol import (
    JSON,
    MSGPACK,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Call,
    Codec,
    Frame,
    Heartbeat,
    Join,
    Leave,
    Message,
    Payload,
    Publish,
    Push,
    Reply,
    codec_for,
)

CODECS: Mapping[str, Codec] = {"json": JSON, "msgpack": MSGPACK}
SUBPROTOCOL_OF: Mapping[str, str] = {"json": SUBPROTOCOL_JSON, "msgpack": SUBPROTOCOL_MSGPACK}


# --- the protocol client --------------------------------------------------------


@attrs.frozen
class ReceivedMessage:
    """One WebSocket message from the server and the frames it decoded into."""

    data: Message
    frames: tuple[Frame, ...]


class HubClient:
    """A hub protocol client on a trio-websocket connection.

    Requests get refs counting up from 1. Frames are read one at a time with
    `next_frame`; waiting for a particular Reply (`join`, `call`, ...) holds
    back the frames read on the way, in order, for the next `next_frame`.
    """

    def __init__(self, websocket: trio_websocket.WebSocketConnection) -> None:
        self.websocket = websocket
        self.codec = codec_for(websocket.subprotocol or "")
        self.received: list[ReceivedMessage] = []
        self._refs = itertools.count(1)
        self._unread: deque[Frame] = deque()

    def next_ref(self) -> int:
        return next(self._refs)

    # --- sending ----------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self.websocket.send_message(self.codec.encode(frame))

    async def send_raw(self, message: Message) -> None:
        await self.websocket.send_message(message)

    async def join(
        self, topic: str, params: Mapping[str, Payload] | None = None, offset: int | None = None
    ) -> Reply:
        ref = self.next_ref()
        await self.send(Join(ref, topic, dict(params or {}), offset))
        return await self.reply_to(ref)

    async def join_ok(
        self, topic: str, params: Mapping[str, Payload] | None = None, offset: int | None = None
    ) -> Reply:
        reply = await self.join(topic, params, offset)
        assert reply.ok, reply
        return reply

    async def leave(self, topic: str) -> Reply:
        ref = self.next_ref()
        await self.send(Leave(ref, topic))
        return await self.reply_to(ref)

    async def publish(self, topic: str, event: str, payload: Payload = None) -> None:
        """Publish without asking for an acknowledgement (ref 0)."""
        await self.send(Publish(0, topic, event, payload))

    async def publish_acked(self, topic: str, event: str, payload: Payload = None) -> Reply:
        ref = self.next_ref()
        await self.send(Publish(ref, topic, event, payload))
        return await self.reply_to(ref)

    async def call(
        self, topic: str, event: str, payload: Payload = None, *, timeout: float | None = None
    ) -> Reply:
        ref = self.next_ref()
        await self.send(Call(ref, topic, event, payload, timeout))
        return await self.reply_to(ref)

    async def heartbeat(self) -> Reply:
        ref = self.next_ref()
        await self.send(Heartbeat(ref))
        return await self.reply_to(ref)

    # --- receiving ----------------------------------------------------------------

    async def receive_message(self) -> ReceivedMessage:
        """Read one WebSocket message and decode it (strictly: the server must be right)."""
        data = await self.websocket.get_message()
        assert isinstance(data, bytes) == self.codec.binary, (
            f"{self.codec.subprotocol} got a {type(data).__name__} message"
        )
        message = ReceivedMessage(data, tuple(self.codec.decode_strict(data)))
        self.received.append(message)
        return message

    async def next_frame(self) -> Frame:
        """The next frame the server sent, batches taken apart in order."""
        while not self._unread:
            self._unread.extend((await self.receive_message()).frames)
        return self._unread.popleft()

    async def next_push(self, topic: str | None = None) -> Push:
        frame = await self.next_frame()
        assert isinstance(frame, Push), frame
        if topic is not None:
            assert frame.topic == topic, frame
        return frame

    async def reply_to(self, ref: int) -> Reply:
        """Read until the Reply to `ref`; frames on the way are kept for `next_frame`."""
        return await self.wait_for(lambda frame: isinstance(frame, Reply) and frame.ref == ref)

    async def wait_for(self, wanted: Callable[[Frame], bool]) -> Any:
        """Read until a frame matches `wanted`; the others stay unread, in order."""
        passed: list[Frame] = []
        try:
            while True:
                frame = await self.next_frame()
                if wanted(frame):
                    return frame
                passed.append(frame)
        finally:
            self._unread.extendleft(reversed(passed))

    def take_unread(self) -> list[Frame]:
        """The frames read past so far and not yet returned, oldest first."""
        frames = list(self._unread)
        self._unread.clear()
        return frames

    async def expect_close(self) -> tuple[list[Frame], trio_websocket.CloseReason]:
        """Read until the server closes; return the frames that came first and why."""
        frames = self.take_unread()
        try:
            while True:
                frames.extend((await self.receive_message()).frames)
        except trio_websocket.ConnectionClosed as closed:
            return frames, closed.reason


@contextlib.asynccontextmanager
async def open_client(
    url: str,
    codec: str = "json",
    *,
    subprotocols: Sequence[str] | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[HubClient]:
    """Connect a HubClient to `url`, offering `codec`'s subprotocol (or `subprotocols`)."""
    offered = [SUBPROTOCOL_OF[codec]] if subprotocols is None else list(subprotocols)
    websocket: trio_websocket.WebSocketConnection | None = None
    try:
        async with trio_websocket.open_websocket_url(
            url,
            subprotocols=offered,
            extra_headers=[(name.encode(), value.encode()) for name, value in headers],
        ) as websocket:
            yield HubClient(websocket)
    finally:
        # trio-websocket 0.12.2 never closes a client's TCP stream after the
        # closing handshake: it waits for the server's FIN, then leaves the
        # socket open until it is garbage collected. The hub lingers for the
        # client's FIN (browsers send it at once), so without this each close
        # would cost the hub its linger timeout, and a shutdown wait for it.
        if websocket is not None:
            await websocket._stream.aclose()


# --- the bare-socket client -------------------------------------------------------

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
    def message(self) -> Message:
        """The payload as a message: str for text, bytes for binary."""
        assert self.fin, "fragmented messages are not used by the hub"
        if self.opcode == OPCODE_TEXT:
            return self.payload.decode()
        assert self.opcode == OPCODE_BINARY, self
        return self.payload


@attrs.frozen
class HttpResponseHead:
    status: int
    headers: Mapping[str, str]


def parse_frame(data: bytes | bytearray) -> tuple[RawFrame | None, int]:
    """Parse one server frame off the front of `data`: (frame, bytes used), or (None, 0)."""
    if len(data) < 2:
        return None, 0
    first, second = data[0], data[1]
    length = second & 0x7F
    position = 2
    if length == 126:
        if len(data) < 4:
            return None, 0
        length = struct.unpack("!H", data[2:4])[0]
        position = 4
    elif length == 127:
        if len(data) < 10:
            return None, 0
        length = struct.unpack("!Q", data[2:10])[0]
        position = 10
    assert not second & 0x80, "a server frame must not be masked"
    if len(data) < position + length:
        return None, 0
    frame = RawFrame(bool(first & 0x80), first & 0x0F, bytes(data[position : position + length]))
    return frame, position + length


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


def client_frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    """Encode a client frame; `masked=False` breaks RFC 6455 §5.1 on purpose."""
    header = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        header.append(mask_bit | len(payload))
    elif len(payload) < 1 << 16:
        header.append(mask_bit | 126)
        header += struct.pack("!H", len(payload))
    else:
        header.append(mask_bit | 127)
        header += struct.pack("!Q", len(payload))
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


class RawWebSocket:
    """A WebSocket client on a bare TCP socket; it reads only when told to."""

    def __init__(self, stream: trio.SocketStream, codec: Codec | None) -> None:
        self.stream = stream
        self.codec = codec
        self.buffer = bytearray()

    @classmethod
    async def open_tcp(cls, port: int, *, receive_buffer: int | None = None) -> trio.SocketStream:
        """Connect to 127.0.0.1:`port`; a fixed `receive_buffer` turns off autotuning."""
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting, so the window offered in the handshake is small too.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.connect(("127.0.0.1", port))
        return trio.SocketStream(sock)

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        *,
        codec: Codec | None = JSON,
        receive_buffer: int | None = None,
    ) -> RawWebSocket:
        """Connect and complete the opening handshake, offering `codec`'s subprotocol."""
        stream = await cls.open_tcp(port, receive_buffer=receive_buffer)
        client = cls(stream, codec)
        subprotocols = () if codec is None else (codec.subprotocol,)
        await client.send_bytes(upgrade_request(path, subprotocols=subprotocols))
        head = await client.read_response_head()
        assert head.status == 101, head
        if codec is not None:
            assert head.headers.get("sec-websocket-protocol") == codec.subprotocol, head
        return client

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_message(self, message: Message) -> None:
        if isinstance(message, str):
            await self.send_bytes(client_frame(OPCODE_TEXT, message.encode()))
        else:
            await self.send_bytes(client_frame(OPCODE_BINARY, message))

    async def send(self, frame: Frame) -> None:
        assert self.codec is not None
        await self.send_message(self.codec.encode(frame))

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        await self.send_bytes(client_frame(OPCODE_CLOSE, struct.pack("!H", code) + reason.encode()))

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(256 * 1024)
        self.buffer += data
        return bool(data)

    async def read_response_head(self) -> HttpResponseHead:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"EOF inside a response head: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.buffer = bytearray(rest)
        return HttpResponseHead(int(status_line.split()[1]), headers)

    async def read_frame(self) -> RawFrame | None:
        """Read one frame, or None at an EOF between frames (an EOF inside one fails)."""
        while True:
            frame, used = parse_frame(self.buffer)
            if frame is not None:
                del self.buffer[:used]
                return frame
            if not await self._fill():
                assert not self.buffer, f"EOF inside a frame, {len(self.buffer)} bytes in"
                return None

    async def read_data_frames(self, count: int) -> list[Frame]:
        """Read `count` hub frames (batches taken apart), failing on anything else."""
        assert self.codec is not None
        frames: list[Frame] = []
        while len(frames) < count:
            raw = await self.read_frame()
            assert raw is not None and raw.opcode in (OPCODE_TEXT, OPCODE_BINARY), raw
            frames.extend(self.codec.decode_strict(raw.message))
        return frames

    async def read_until_close(self) -> tuple[list[Frame], RawFrame]:
        """Read hub frames until the server's Close frame; return both."""
        assert self.codec is not None
        frames: list[Frame] = []
        while True:
            raw = await self.read_frame()
            assert raw is not None, "the TCP stream ended without a Close frame"
            if raw.opcode == OPCODE_CLOSE:
                return frames, raw
            if raw.opcode == OPCODE_PING:
                continue
            frames.extend(self.codec.decode_strict(raw.message))

    async def read_bytes_until_eof(self) -> bytes:
        """Everything left on the stream, frames or not, up to the server's FIN."""
        while await self._fill():
            continue
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    async def read_frames_until_eof(self) -> list[RawFrame]:
        frames = []
        while (frame := await self.read_frame()) is not None:
            frames.append(frame)
        return frames

    async def aclose(self) -> None:
        await self.stream.aclose()


# --- plain HTTP -----------------------------------------------------------------


@attrs.frozen
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


async def http_get(port: int, path: str) -> HttpResponse:
    """GET `path` from 127.0.0.1:`port` with `Connection: close`; read to EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), headers
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]), (len(body), headers)
    return HttpResponse(int(status_line.split()[1]), headers, body)


# --- waiting without sleeping -------------------------------------------------------


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the scheduler until `condition()` holds.

    For state with no event to wait on (a Prometheus counter, a supervisor's
    child count). Each turn is a checkpoint with no time passing; the caller's
    `fail_after` bounds the wait.
    """
    # No event to wait on, by definition of this helper; each turn yields.
    while not condition():
        await trio.lowlevel.checkpoint()


def counter_value(counter: Any) -> float:
    """The value of an unlabelled prometheus_client Counter or Gauge."""
    value: float = counter._value.get()
    return value
