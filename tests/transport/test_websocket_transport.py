"""The WebSocket transport on a real socket pair: writes without waiting, frames built once."""

from __future__ import annotations

import gc
import socket
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from wire_support import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    client_frame,
    parse_frame,
)
from wsproto.frame_protocol import FrameProtocol

import hub.transport.websocket as websocket_module
from hub.transport import (
    Outbox,
    OutboxFullError,
    TransportClosed,
    WebSocketSettings,
    WebSocketTransport,
    Wire,
)


async def socket_pair(
    *, send_buffer: int | None = None, receive_buffer: int | None = None
) -> tuple[trio.SocketStream, trio.socket.SocketType]:
    """A server stream and the raw client socket at its other end (TCP on loopback)."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    if receive_buffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await client.connect(listener.getsockname())
    server_socket, _address = await listener.accept()
    listener.close()
    if send_buffer is not None:
        server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    return trio.SocketStream(server_socket), client


async def read_exactly(client: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await client.recv(size - len(data))
        assert chunk, "the server closed early"
        data += chunk
    return data


def frames_in(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        frame, used = parse_frame(data)
        assert frame is not None, "a partial frame"
        frames.append((frame.opcode, frame.payload))
        data = data[used:]
    return frames


async def test_a_send_to_a_writable_socket_is_written_before_any_checkpoint() -> None:
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream)
    with trio.fail_after(5):
        # No await between the sends and the check: the bytes are in the
        # kernel already, so no task had to run to write them.
        transport.send(Wire("hello"))
        transport.send(Wire(b"\x01\x02"))
        assert not transport.backlog
        expected = websocket_module.build_frame("hello") + websocket_module.build_frame(b"\x01\x02")
        data = await read_exactly(client, len(expected))
        assert frames_in(data) == [(OPCODE_TEXT, b"hello"), (OPCODE_BINARY, b"\x01\x02")]
    client.close()
    await stream.aclose()


async def test_a_full_socket_queues_and_flush_waits_until_the_client_reads() -> None:
    stream, client = await socket_pair(send_buffer=4096, receive_buffer=4096)
    transport = WebSocketTransport(stream, WebSocketSettings(outbox_capacity=10_000))
    backlogs = []
    transport.on_backlog = lambda: backlogs.append(True)
    payload = b"x" * 8000
    with trio.fail_after(10):
        count = 0
        while not transport.backlog:
            transport.send(Wire(payload))
            count += 1
            assert count < 10_000, "the socket never filled"
        for _ in range(20):
            transport.send(Wire(payload))
        count += 20
        assert backlogs == [True]  # told once, when the backlog began
        async with trio.open_nursery() as nursery:
            flushed = trio.Event()

            async def flush() -> None:
                await transport.flush()
                flushed.set()

            nursery.start_soon(flush)
            await trio.testing.wait_all_tasks_blocked()
            assert not flushed.is_set(), "flush returned while the client read nothing"
            frame_size = len(websocket_module.build_frame(payload))
            data = await read_exactly(client, frame_size * count)
        assert flushed.is_set() and not transport.backlog
        assert frames_in(data) == [(OPCODE_BINARY, payload)] * count
    client.close()
    await stream.aclose()


async def test_the_outbox_is_bounded_and_latest_value_entries_are_replaced() -> None:
    stream, client = await socket_pair(send_buffer=4096, receive_buffer=4096)
    transport = WebSocketTransport(stream, WebSocketSettings(outbox_capacity=5))
    payload = b"y" * 8000
    while not transport.backlog:
        transport.send(Wire(payload))
    replaced = [transport.send(Wire(f"state {n}".encode()), key="state") for n in range(100)]
    assert replaced == [False] + [True] * 99
    for _ in range(4):
        transport.send(Wire(payload))
    with pytest.raises(OutboxFullError):
        transport.send(Wire(payload))
    # The keyed entry holds the newest value.
    assert transport.queued == 1 + 5  # the partly written frame, and the outbox
    client.close()
    await stream.aclose()


async def test_a_broadcast_is_framed_once_for_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    original = websocket_module.build_frame

    def counting_build_frame(message: str | bytes) -> bytes:
        built.append(message)
        return original(message)

    monkeypatch.setattr(websocket_module, "build_frame", counting_build_frame)
    pairs = [await socket_pair() for _ in range(20)]
    transports = [WebSocketTransport(stream) for stream, _client in pairs]
    wire = Wire(b"one broadcast")
    for transport in transports:
        transport.send(wire)
    assert built == [b"one broadcast"]
    expected = original(b"one broadcast")
    with trio.fail_after(5):
        for _stream, client in pairs:
            assert await read_exactly(client, len(expected)) == expected
    for stream, client in pairs:
        client.close()
        await stream.aclose()


async def test_the_peer_closing_is_answered_and_ends_receive() -> None:
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream)
    with trio.fail_after(5):
        await client.send(client_frame(OPCODE_TEXT, b"hi"))
        assert await transport.receive() == "hi"
        await client.send(client_frame(OPCODE_CLOSE, (4000).to_bytes(2, "big") + b"bye"))
        with pytest.raises(TransportClosed) as closed:
            await transport.receive()
        assert (closed.value.code, closed.value.reason) == (4000, "bye")
        [(opcode, payload)] = frames_in(await client.recv(1024))
        assert opcode == OPCODE_CLOSE and payload[:2] == (4000).to_bytes(2, "big")
    client.close()
    await transport.aclose()


async def test_close_wakes_a_receive_in_progress_within_the_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, client = await socket_pair()
    transport = WebSocketTransport(
        stream, WebSocketSettings(close_timeout=2, ping_interval=100, idle_timeout=200)
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ended: list[TransportClosed] = []

            async def read() -> None:
                with pytest.raises(TransportClosed) as closed:
                    await transport.receive()
                ended.append(closed.value)

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
            transport.close(1013, "slow consumer")
        # The peer never answered: the reader gave up after close_timeout.
        assert trio.current_time() - started == pytest.approx(2, abs=0.1)
        assert (ended[0].code, ended[0].reason) == (1013, "slow consumer")
        [(opcode, payload)] = frames_in(await client.recv(1024))
        assert opcode == OPCODE_CLOSE and payload == (1013).to_bytes(2, "big") + b"slow consumer"
    client.close()
    await stream.aclose()


async def test_serve_pings_a_quiet_peer_closes_a_silent_one_and_spares_a_busy_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`serve` checks liveness lazily (one scope per check, not per read), at the same times."""
    settings = WebSocketSettings(ping_interval=10, idle_timeout=30, close_timeout=2)
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream, settings)
    received: list[object] = []
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            closed: list[TransportClosed] = []

            async def serve() -> None:
                try:
                    await transport.serve(received.append)
                except TransportClosed as error:
                    closed.append(error)

            nursery.start_soon(serve)
            # Busy for a minute: a message every 5 s, never pinged, never closed.
            for number in range(12):
                await client.send(client_frame(OPCODE_TEXT, f"m{number}".encode()))
                await trio.sleep(5)
            assert received == [f"m{number}" for number in range(12)]
            assert not closed
            # Then silent: a ping 10 s after the last message, Close 1001 at 30 s.
            silent_from = trio.current_time() - 5
            data = b""
            while len(frames_in_partial(data)) < 2:
                data += await client.recv(1024)
            ping, close = frames_in_partial(data)[:2]
            assert ping[0] == 0x9 and close[0] == OPCODE_CLOSE
            assert close[1][:2] == (1001).to_bytes(2, "big")
        assert closed and closed[0].code == 1001
        assert trio.current_time() - silent_from == pytest.approx(30 + 2, abs=0.5)
    client.close()
    await stream.aclose()


def frames_in_partial(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while True:
        frame, used = parse_frame(data)
        if frame is None:
            return frames
        frames.append((frame.opcode, frame.payload))
        data = data[used:]


async def test_a_peer_that_pings_and_never_reads_gets_one_pong_waiting_not_a_pile() -> None:
    stream, client = await socket_pair(send_buffer=4096, receive_buffer=4096)
    transport = WebSocketTransport(stream)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.serve, lambda message: None)
            ping = client_frame(0x9, b"p" * 125)
            for _ in range(4000):  # ~0.5 MB of pings; their pongs fill the socket at once
                await client.send(ping)
            await trio.testing.wait_all_tasks_blocked()
            assert transport.backlog
            assert transport.queued <= 2  # the partly written write, and the newest pong
            nursery.cancel_scope.cancel()
    client.close()
    await stream.aclose()


def test_a_released_key_keeps_its_place_and_is_no_longer_replaced() -> None:
    outbox = Outbox(10)
    outbox.push(Wire(b"old state"), key=("room:a", "state"))
    outbox.release_keys(lambda key: key[0] == "room:a")
    outbox.push(Wire(b"leave reply"))
    outbox.push(Wire(b"new state"), key=("room:a", "state"))
    assert [wire.message for wire in outbox.take(10)] == [
        b"old state",
        b"leave reply",
        b"new state",
    ]


async def test_only_a_frame_that_is_not_plain_makes_a_parser_and_aclose_frees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Most connections never need wsproto's parser (about 1.5 KB); one that did frees it at once.

    The parser and its parsing generator refer to each other: left alone, the
    pair waits for the garbage collector's full pass. The collector is off
    here, so only reference counting frees it.
    """
    made: list[weakref.ref[FrameProtocol]] = []

    class CountedFrameProtocol(FrameProtocol):
        def __init__(self, client: bool, extensions: list[Any]) -> None:
            super().__init__(client, extensions)
            made.append(weakref.ref(self))

    monkeypatch.setattr(websocket_module, "FrameProtocol", CountedFrameProtocol)
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream)
    collecting = gc.isenabled()
    gc.disable()
    try:
        with trio.fail_after(5):
            for text in (b"one", b"two"):
                await client.send(client_frame(OPCODE_TEXT, text))
                assert await transport.receive() == text.decode()
            assert made == []

            await client.send(client_frame(OPCODE_PING, b"are you there"))
            await client.send(client_frame(OPCODE_TEXT, b"three"))
            assert await transport.receive() == "three"
            assert len(made) == 1
            assert frames_in(await client.recv(1024)) == [(OPCODE_PONG, b"are you there")]

            await client.send(client_frame(OPCODE_CLOSE, (1000).to_bytes(2, "big")))
            with pytest.raises(TransportClosed):
                await transport.receive()
            client.close()
            await transport.aclose()
        assert made[0]() is None
    finally:
        if collecting:
            gc.enable()


async def test_a_close_reason_too_long_for_a_control_frame_is_cut_at_a_character() -> None:
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream)
    reason = "\u00e9" * 100  # 200 bytes of UTF-8
    with trio.fail_after(5):
        transport.close(4000, reason)
        [(opcode, payload)] = frames_in(await client.recv(1024))
    assert opcode == OPCODE_CLOSE
    assert payload[:2] == (4000).to_bytes(2, "big")
    assert len(payload) == 2 + 122  # 123 bytes would split a character
    assert payload[2:].decode() == reason[:61]
    client.close()
    await transport.aclose()


async def test_pongs_are_life_and_frames_and_make_no_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every quiet client answers the hub's pings: its pongs are taken without wsproto."""
    made: list[object] = []

    class CountedFrameProtocol(FrameProtocol):
        def __init__(self, client: bool, extensions: list[Any]) -> None:
            super().__init__(client, extensions)
            made.append(self)

    monkeypatch.setattr(websocket_module, "FrameProtocol", CountedFrameProtocol)
    stream, client = await socket_pair()
    transport = WebSocketTransport(stream)
    frames = 0

    def on_frame() -> None:
        nonlocal frames
        frames += 1

    transport.on_frame = on_frame
    pongs = client_frame(OPCODE_PONG, b"1") + client_frame(OPCODE_PONG, b"") * 2
    with trio.fail_after(5):
        await client.send(pongs + client_frame(OPCODE_TEXT, b"after"))
        assert await transport.receive() == "after"
        assert frames == 3  # each pong is charged to the rate, as any frame is
        assert made == []

        # A pong that breaks the rules goes to wsproto, which closes for it.
        await client.send(client_frame(OPCODE_PONG, b"bad", masked=False))
        with pytest.raises(TransportClosed) as closed:
            await transport.receive()
    assert closed.value.code == 1002
    assert len(made) == 1
    client.close()
    await transport.aclose()
