"""Per-connection limits against real sockets, each case from the hostile-input issue.

A heartbeat flood, a flood of 16-byte fragments and a ping flood get one
Error `rate_limited`, then Close 1008, and cost the other clients nothing; a
message in too many fragments and a byte-dribbler are closed 1008; the idle
timeout counts whole frames, not bytes; calls in flight are bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from hub_support import HubClient, RawWebSocket, wait_until
from wire_support import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_TEXT,
    RawFrame,
    client_frame,
)

from hub.app import Hub
from hub.errors import ErrorCode
from hub.protocol import JSON, Call, Error, Frame, Heartbeat, Join, Publish, Reply
from hub.services import EchoService, Service
from hub.topics import Member

StartHub = Callable[..., Awaitable[Any]]

RATE_LIMITED = "more than 100 messages a second; messages are dropped until you slow down"


async def flood(client: RawWebSocket, data: bytes) -> None:
    """Send `data` over and over until the server closes the connection."""
    try:
        while True:
            await client.send_bytes(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # closed by the server: what the test waits for


async def read_until_close(client: RawWebSocket) -> tuple[list[Frame], RawFrame]:
    """Read hub frames until the server's Close, past pongs and pings."""
    frames: list[Frame] = []
    while True:
        raw = await client.read_frame()
        assert raw is not None, "the TCP stream ended without a Close frame"
        if raw.opcode == OPCODE_CLOSE:
            return frames, raw
        if raw.opcode in (OPCODE_TEXT, OPCODE_BINARY):
            frames.extend(JSON.decode_strict(raw.message))


async def flood_until_closed(client: RawWebSocket, data: bytes) -> tuple[list[Frame], RawFrame]:
    """Flood with `data` while reading what the server says until its Close."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, client, data)
        frames, close = await read_until_close(client)
        nursery.cancel_scope.cancel()
    return frames, close


async def others_are_served(other: HubClient, rounds: int = 20) -> None:
    for _ in range(rounds):
        assert (await other.heartbeat()).ok


def limit_hits(hub: object, limit: str) -> float:
    value: float = hub.metrics.limit_hits.labels(limit=limit)._value.get()  # type: ignore[attr-defined]
    return value


def assert_rate_limited_then_closed(frames: list[Frame], close: RawFrame) -> None:
    # One Error for the whole run, nothing else: the flood is dropped unanswered.
    errors = [frame for frame in frames if isinstance(frame, Error)]
    assert errors == [Error(None, ErrorCode.RATE_LIMITED, RATE_LIMITED)], frames[-5:]
    assert (close.close_code, close.close_reason) == (1008, "rate limit exceeded")


async def test_a_heartbeat_flood_is_rate_limited_then_closed_1008_and_costs_others_nothing(
    start_hub: StartHub,
) -> None:
    with trio.fail_after(30):
        hub = await start_hub()
        async with hub.client("json") as other:
            flooder = await RawWebSocket.connect(hub.port)
            beats = b"".join(
                client_frame(OPCODE_TEXT, JSON.encode(Heartbeat(0)).encode()) for _ in range(64)
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(others_are_served, other)
                frames, close = await flood_until_closed(flooder, beats)
            assert_rate_limited_then_closed(frames, close)
            assert limit_hits(hub, "messages") >= 1
            # The other client is served as before, and was never limited.
            await others_are_served(other)
            assert not [frame for frame in other.received if isinstance(frame, Error)]
            await flooder.aclose()


async def test_a_flood_of_16_byte_fragments_is_rate_limited_then_closed_1008(
    start_hub: StartHub,
) -> None:
    with trio.fail_after(30):
        hub = await start_hub()
        async with hub.client("json") as other:
            flooder = await RawWebSocket.connect(hub.port)
            await flooder.send(Join(1, "echo:x"))
            [joined] = await flooder.read_data_frames(1)
            assert isinstance(joined, Reply) and joined.ok, joined
            # One small message cut into 16-byte fragments: 8 frames a message.
            message = JSON.encode(Publish(0, "echo:x", "say", "x" * 80)).encode()
            pieces = [message[start : start + 16] for start in range(0, len(message), 16)]
            fragments = b"".join(
                client_frame(
                    OPCODE_TEXT if index == 0 else OPCODE_CONTINUATION,
                    piece,
                    fin=index == len(pieces) - 1,
                )
                for index, piece in enumerate(pieces)
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(others_are_served, other)
                frames, close = await flood_until_closed(flooder, fragments * 8)
            assert_rate_limited_then_closed(frames, close)
            await others_are_served(other)
            await flooder.aclose()


async def test_a_ping_flood_is_rate_limited_then_closed_1008(start_hub: StartHub) -> None:
    with trio.fail_after(30):
        hub = await start_hub()
        flooder = await RawWebSocket.connect(hub.port)
        pings = client_frame(OPCODE_PING, b"p") * 64
        frames, close = await flood_until_closed(flooder, pings)
        assert_rate_limited_then_closed(frames, close)
        await flooder.aclose()


async def test_a_message_in_too_many_fragments_is_closed_1008(start_hub: StartHub) -> None:
    with trio.fail_after(30):
        # A message rate that the fragments do not reach first.
        hub = await start_hub(session={"messages_per_second": 10_000})
        client = await RawWebSocket.connect(hub.port)
        fragments = (
            client_frame(OPCODE_TEXT, b"[", fin=False)
            + client_frame(OPCODE_CONTINUATION, b" ", fin=False) * 200
        )
        await client.send_bytes(fragments)
        _frames, close = await client.read_until_close()
        assert (close.close_code, close.close_reason) == (1008, "message in more than 128 frames")
        assert limit_hits(hub, "fragments") == 1
        await client.aclose()


async def test_a_one_byte_a_minute_dribbler_is_closed(
    start_hub: StartHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        hub = await start_hub()
        dribbler = await RawWebSocket.connect(hub.port)
        message = client_frame(OPCODE_TEXT, JSON.encode(Heartbeat(1)).encode())

        async def dribble() -> None:
            for byte in message:
                await dribbler.send_bytes(bytes([byte]))
                await trio.sleep(60)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            started = trio.current_time()
            _frames, close = await dribbler.read_until_close()
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
        # The first byte started the message, which had 30 s to be whole.
        assert (close.close_code, close.close_reason) == (
            1008,
            "message not complete within 30 s",
        )
        assert took < 31
        assert limit_hits(hub, "message_timeout") == 1
        await dribbler.aclose()


async def test_bytes_are_not_life_whole_frames_are(
    start_hub: StartHub, autojump_clock: trio.testing.MockClock
) -> None:
    """With a long message timeout, a dribbler still meets the idle timeout."""
    with trio.fail_after(600):
        hub = await start_hub(websocket={"message_timeout": 1000, "idle_timeout": 60})
        dribbler = await RawWebSocket.connect(hub.port)
        message = client_frame(OPCODE_TEXT, b"x" * 100)

        async def dribble() -> None:
            for byte in message:
                await dribbler.send_bytes(bytes([byte]))
                await trio.sleep(10)  # well inside the ping interval, every time

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble)
            started = trio.current_time()
            _frames, close = await dribbler.read_until_close()
            took = trio.current_time() - started
            nursery.cancel_scope.cancel()
        assert (close.close_code, close.close_reason) == (1001, "idle timeout")
        assert took <= 61
        await dribbler.aclose()


class StuckService(Service):
    """Answers `wait` calls only when the test says so."""

    release: trio.Event

    async def handle_call(self, member: Member, event: str, payload: object) -> object:
        await self.release.wait()
        return "done"


async def test_calls_in_flight_are_bounded(start_hub: StartHub) -> None:
    release = trio.Event()

    def stuck(topic: object) -> StuckService:
        service = StuckService(topic)  # type: ignore[arg-type]
        service.release = release
        return service

    app = Hub("stuck")
    app.route("stuck:*", stuck)
    app.route("echo:*", EchoService)
    with trio.fail_after(30):
        hub = await start_hub(app, session={"max_calls_in_flight": 3})
        client = await RawWebSocket.connect(hub.port)
        await client.send(Join(1, "stuck:x"))
        [joined] = await client.read_data_frames(1)
        assert isinstance(joined, Reply) and joined.ok, joined
        for ref in (10, 11, 12, 13):
            await client.send(Call(ref, "stuck:x", "wait"))
        [refused] = await client.read_data_frames(1)
        assert refused == Reply.error(
            13,
            "stuck:x",
            ErrorCode.RATE_LIMITED,
            "at most 3 calls wait for replies at once; await one first",
        )
        await wait_until(lambda: limit_hits(hub, "calls_in_flight") == 1)
        release.set()
        replies = await client.read_data_frames(3)
        assert sorted(frame.ref for frame in replies) == [10, 11, 12]  # type: ignore[attr-defined]
        # Answered calls free their places.
        await client.send(Call(14, "stuck:x", "wait"))
        assert await client.read_data_frames(1) == [Reply(14, "stuck:x", True, "done")]
        await client.aclose()
