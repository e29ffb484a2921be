"""Bugs found by trying the hub as an attacker would, each with its regression test."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
import trio
import trio.testing
from hub_support import JSON, RawWebSocket, wait_until

from hub.protocol import Join, Publish, Push, Reply

ABRUPT_CLIENTS = 300


async def close_abruptly(client: RawWebSocket) -> None:
    """Drop the TCP connection with a reset: no Leave, no Close frame, no FIN."""
    raw_socket = client.stream.socket
    raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()


async def test_clients_that_vanish_leave_no_watch_behind_on_a_long_lived_topic(start_hub):
    """Bug: a connection's monitor on its topic outlived the connection.

    A room that stays open (its first member stays) kept a watcher, with the
    departed client's actor reference and mailbox, for every client that had
    closed without a Leave: 6,000 abrupt closes kept ~5 MB. (No presence
    grace here: the departed are to be gone at once, presence entries too.)
    """
    hub = await start_hub(presence={"grace_seconds": 0})
    with trio.fail_after(60):
        async with hub.client() as keeper:
            await keeper.join_ok("room:long", {"user": "keeper"})
            topic_ref = hub.runtime.topics.whereis("room:long")
            assert topic_ref is not None
            # The supervisor's own watch, and the keeper's session's watch.
            watchers_before = len(topic_ref._watchers or {})
            for index in range(ABRUPT_CLIENTS):
                client = await RawWebSocket.connect(hub.port, codec=JSON)
                await client.send(Join(1, "room:long", {"user": f"u{index}"}))
                [reply] = await client.read_data_frames(1)
                assert isinstance(reply, Reply) and reply.ok
                await close_abruptly(client)
            await wait_until(lambda: hub.runtime.connection_count() == 1)
            await trio.testing.wait_all_tasks_blocked()
            assert len(topic_ref._watchers or {}) == watchers_before
            assert (await keeper.call("room:long", "members")).payload == ["keeper"]
            assert (await hub.runtime.presence("room:long")).count == 1


async def test_a_reconnect_storm_during_writes_crashes_no_session(hub):
    """Bug: closing a socket while a write was in flight crashed its connection actor.

    (`trio.BusyResourceError` from a second writer on the same stream.) Here
    clients vanish while a publisher floods their room: nothing may be logged
    as an error (the suite fails any test that logs one), and the hub serves on.
    """
    with trio.fail_after(60):
        async with hub.client() as publisher, trio.open_nursery() as nursery:
            await publisher.join_ok("room:storm", {"user": "publisher"})
            stop = trio.Event()

            async def flood() -> None:
                number = 0
                while not stop.is_set():
                    await publisher.send(
                        Publish(0, "room:storm", "message", {"text": f"m{number} " + "x" * 500})
                    )
                    number += 1
                    if number % 50 == 0:
                        await publisher.heartbeat()  # keep within what it reads

            nursery.start_soon(flood)
            for wave in range(4):
                clients = []
                for index in range(50):
                    client = await RawWebSocket.connect(hub.port, codec=JSON, receive_buffer=4096)
                    await client.send(Join(1, "room:storm", {"user": f"w{wave}-{index}"}))
                    clients.append(client)
                for client in clients:
                    await close_abruptly(client)
            stop.set()
        await wait_until(lambda: hub.runtime.connection_count() == 0)
        async with hub.client() as late:
            await late.join_ok("room:storm", {"user": "late"})


async def test_a_broadcast_is_framed_once_per_codec_however_many_receive_it(
    hub, monkeypatch: pytest.MonkeyPatch
):
    """Eight members in two codecs: one room message, two frames built, eight written."""
    import hub.transport.websocket as websocket_module

    built: list[object] = []
    original = websocket_module.build_frame

    def counting_build_frame(message: str | bytes) -> bytes:
        built.append(message)
        return original(message)

    with trio.fail_after(20):
        async with contextlib.AsyncExitStack() as stack:
            members = []
            for index in range(8):
                client = await stack.enter_async_context(
                    hub.client("json" if index % 2 else "msgpack")
                )
                await client.join_ok("room:framed", {"user": f"u{index}"})
                members.append(client)
            monkeypatch.setattr(websocket_module, "build_frame", counting_build_frame)
            await members[0].send(Publish(0, "room:framed", "message", {"text": "once"}))
            for client in members:
                # (The test hub's rooms announce nothing: this is the only Push.)
                push = await client.wait_for(
                    lambda frame: isinstance(frame, Push) and frame.event == "message"
                )
                assert push.payload["text"] == "once"
            assert len(built) == 2
            assert {type(message) for message in built} == {str, bytes}
