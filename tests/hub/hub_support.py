"""Clients for the hub's integration tests: a protocol client and a bare-socket one.

`HubClient` speaks the hub protocol over a real trio-websocket connection and
decodes with `hub.protocol` codecs; it keeps every raw message it received so
tests can look at batching. `RawWebSocket` is the hand-written client of
`wire_support` taught the hub protocol, for what no library would do: stop
reading with a tiny receive buffer, send an unmasked frame, drop the
connection without a Close, and see exactly which frames the server wrote
before the TCP stream ended.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import trio
import trio_websocket
from wire_support import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    RawConnection,
    RawFrame,
)

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


class RawWebSocket(RawConnection):
    """A hand-written WebSocket client (see `wire_support`) that speaks the hub protocol."""

    codec: Codec | None = None

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
        subprotocol = None if codec is None else codec.subprotocol
        client = await cls.open_websocket(
            port, path, subprotocol=subprotocol, receive_buffer=receive_buffer
        )
        client.codec = codec
        return client

    async def send(self, frame: Frame) -> None:
        assert self.codec is not None
        await self.send_message(self.codec.encode(frame))

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


# Slow-consumer tests stop a client reading and then read again once the hub
# has evicted it for its full outbox; on a loaded machine that could take
# longer than the write timeout, which would evict it the other way. These
# settings keep those tests about the outbox alone.
PATIENT_WRITES: Final = {"websocket": {"write_timeout": 60.0}}
