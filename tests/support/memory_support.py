"""Sessions over the in-memory transport: the hub protocol with no socket.

    client, done = await connect_memory(runtime, nursery)
    client.send(JSON.encode(Join(1, "room:x", {"user": "ann"})))
    [reply] = await read_frames(client, 1)

With no socket I/O at all, these tests can run on trio's autojump clock.
Tests of services use `hub.testing` instead (a hub without sockets, raw
clients with `TestHub.open_raw`, and `hub.client` clients); these helpers
serve the tests of sessions and transports, next to a hub that listens.
"""

from __future__ import annotations

import trio

from hub.app import HubRuntime
from hub.gateway import ConnectInfo
from hub.protocol import JSON, Frame
from hub.transport import DEFAULT_OUTBOX_CAPACITY, MemoryClient, memory_transport_pair


def memory_info(identity: object = None) -> ConnectInfo:
    return ConnectInfo(
        path="/memory",
        query={},
        headers={},
        remote=None,
        subprotocol="triohub.v1.json",
        identity=identity,
    )


async def connect_memory(
    runtime: HubRuntime,
    nursery: trio.Nursery,
    *,
    buffer: int = 64,
    identity: object = None,
    outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY,
) -> tuple[MemoryClient, trio.Event]:
    """A JSON session over a memory transport; the event is set when its reader returns."""
    transport, client = memory_transport_pair(
        "triohub.v1.json", buffer=buffer, outbox_capacity=outbox_capacity
    )
    done = trio.Event()

    async def serve() -> None:
        await runtime.serve_transport(transport, memory_info(identity))
        done.set()

    nursery.start_soon(serve)
    return client, done


async def read_until(client: MemoryClient, wanted: Frame) -> list[Frame]:
    """Read frames until `wanted` arrives; return every frame read, `wanted` last."""
    received: list[Frame] = []
    while wanted not in received:
        received.extend(await read_frames(client, 1))
    return received


async def read_frames(client: MemoryClient, count: int) -> list[Frame]:
    """Read at least `count` frames (batches taken apart)."""
    received: list[Frame] = []
    while len(received) < count:
        received.extend(JSON.decode_strict(await client.receive()))
    return received
