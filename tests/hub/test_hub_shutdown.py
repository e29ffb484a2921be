"""Graceful shutdown: every queued message is written, then Close 1001, then serve_hub returns."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio
from hub_support import JSON, RawWebSocket
from join_support import join_ok
from wire_support import OPCODE_CLOSE

from hub.app import CLOSE_TIMEOUT_SECONDS, Hub
from hub.protocol import Join, Payload, Push
from hub.services import Service
from hub.topics import Member


class BurstService(Service):
    """On `burst` {count, size}, broadcasts `count` numbered items to everyone but the sender."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        assert isinstance(payload, Mapping)
        count, size = payload["count"], payload["size"]
        assert isinstance(count, int) and isinstance(size, int)
        for index in range(count):
            self.topic.broadcast("item", {"n": index, "pad": "x" * size}, exclude=member)


def burst_app() -> Hub:
    app = Hub("shutdown")
    app.route("feed:*", BurstService)
    return app


async def test_shutdown_writes_every_queued_message_then_closes_1001(start_hub):
    count = 1000
    with trio.fail_after(20):
        hub = await start_hub(burst_app())
        runtime = hub.runtime
        # A receiver with a small, fixed receive buffer that does not read for now:
        # most of the burst stays queued in the hub.
        receiver = await RawWebSocket.connect(hub.port, codec=JSON, receive_buffer=4096)
        await receiver.send(Join(1, "feed:x"))
        assert await receiver.read_data_frames(1) == [join_ok(1, "feed:x")]

        async with hub.client("msgpack") as sender:
            await sender.join_ok("feed:x")
            assert (
                await sender.publish_acked("feed:x", "burst", {"count": count, "size": 4000})
            ).ok
            queued = sum(
                session.transport.queued
                for info in runtime.sessions().which_children()
                if info.ref is not None and (session := runtime.session(info.ref)) is not None
            )
            assert queued > 0, "the burst should still be queued in the receiver's outbox"

            runtime.request_shutdown()

            frames, close = await receiver.read_until_close()
            assert all(isinstance(frame, Push) for frame in frames)
            assert [frame.payload["n"] for frame in frames] == list(range(count))
            assert (close.close_code, close.close_reason) == (1001, "server shutting down")

            # Shutdown has begun (this client was told): new connections are refused.
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", hub.port)

            frames, reason = await sender.expect_close()
            assert frames == [] and reason.code == 1001

        # Complete the closing handshake; the hub then closes the TCP stream.
        await receiver.send_close(1001)
        rest = await receiver.read_frames_until_eof()
        assert [frame.opcode for frame in rest if frame.opcode == OPCODE_CLOSE] == []
        await receiver.aclose()
        await hub.returned.wait()


async def test_shutdown_with_no_clients_returns(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(burst_app())
        hub.runtime.request_shutdown()
        await hub.returned.wait()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", hub.port)


async def test_a_client_that_never_answers_the_close_does_not_hold_up_shutdown(
    start_hub, autojump_clock
):
    """The closing handshake is bounded: a silent client is closed and shutdown ends.

    On the autojumping clock the hub's close timeout passes as soon as
    everything waits, real sockets included.
    """
    with trio.fail_after(20):
        hub = await start_hub(burst_app())
        silent = await RawWebSocket.connect(hub.port, codec=JSON)
        await silent.send(Join(1, "feed:x"))
        assert await silent.read_data_frames(1) == [join_ok(1, "feed:x")]
        hub.runtime.request_shutdown()
        frames, close = await silent.read_until_close()
        assert frames == [] and close.close_code == 1001
        started = trio.current_time()
        await hub.returned.wait()
        assert trio.current_time() - started == pytest.approx(CLOSE_TIMEOUT_SECONDS, abs=0.1)
        assert await silent.read_frames_until_eof() == []
        await silent.aclose()
