"""Settings reach the running hub: a raised `websocket.max_message_size` is the codec's limit too.

A real hub on 127.0.0.1, port 0, and a real WebSocket client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio_websocket

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig
from hub.protocol import MAX_MESSAGE_BYTES, Call, Codec, Join, Reply, codec_for
from hub.protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from hub.services import EchoService

LIMIT = 4 * 1024 * 1024
# Over the default limit (1 MiB), under the raised one.
PAYLOAD = "x" * (2 * 1024 * 1024)


@contextlib.asynccontextmanager
async def connect(url: str, subprotocol: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(
        url, subprotocols=[subprotocol], max_message_size=2 * LIMIT
    ) as websocket:
        try:
            yield websocket
        finally:
            # trio-websocket leaves its TCP stream open after the closing
            # handshake; the hub would linger for it (see hub_support).
            await websocket._stream.aclose()


async def receive(websocket: trio_websocket.WebSocketConnection, codec: Codec) -> list[object]:
    return list(codec.decode_strict(await websocket.get_message()))


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON])
async def test_a_message_over_the_old_limit_passes_when_max_message_size_is_raised(
    nursery: trio.Nursery, subprotocol: str
) -> None:
    app = Hub("big messages")
    app.route("echo:*", EchoService)
    config = HubConfig.from_settings(
        {"server": {"port": 0}, "websocket": {"max_message_size": LIMIT}}
    )
    with trio.fail_after(30):
        runtime: HubRuntime = await nursery.start(serve_hub, app, config)
        codec = codec_for(subprotocol, max_message_bytes=2 * LIMIT)
        async with connect(runtime.websocket_url, subprotocol) as websocket:
            await websocket.send_message(codec.encode(Join(1, "echo:big")))
            (joined,) = await receive(websocket, codec)
            assert isinstance(joined, Reply) and joined.ok, joined

            # Taken by the WebSocket and by the decoder alike, and answered.
            message = codec.encode(Call(2, "echo:big", "same", PAYLOAD))
            assert MAX_MESSAGE_BYTES < len(message) <= LIMIT
            await websocket.send_message(message)
            assert await receive(websocket, codec) == [Reply(2, "echo:big", True, PAYLOAD)]

            # Past the raised limit, the WebSocket closes with 1009 as before.
            too_big = codec.encode(Call(3, "echo:big", "same", "x" * LIMIT))
            await websocket.send_message(too_big)
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await websocket.get_message()
            assert closed.value.reason.code == 1009
        runtime.request_shutdown()
