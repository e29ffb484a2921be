"""hub.client against a real hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
import trio

from hub import (
    Hub,
    HubConfig,
    Member,
    Payload,
    RoomService,
    ServerConfig,
    Service,
    client,
    serve_hub,
)
from hub.app import HubRuntime
from hub.gateway import AuthenticationError, ConnectRequest
from hub.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

pytestmark = pytest.mark.timeout(30)


class Slow(Service):
    """Never answers a call: the server's call timeout must."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        await trio.sleep_forever()
        return None  # pragma: no cover


class Kicker(Service):
    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.kick(member, "asked for it")


def _identity(request: ConnectRequest) -> object:
    token = request.query.get("token")
    if token is None:
        return None
    if token != "good":
        raise AuthenticationError("bad token")
    return {"user": "ada"}


class WhoAmI(Service):
    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        identity = member.identity
        assert isinstance(identity, Mapping)
        return dict(identity)


@pytest.fixture
async def running(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = Hub("client test", authenticate=_identity)
    app.route("room:*", RoomService)
    app.route("slow:*", Slow)
    app.route("kick:*", Kicker)
    app.route("whoami", WhoAmI)
    config = HubConfig(server=ServerConfig(port=0))
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    yield runtime
    runtime.request_shutdown()


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON])
async def test_join_publish_and_handlers(running: HubRuntime, subprotocol: str) -> None:
    with trio.fail_after(10):
        async with (
            client.connect(running.websocket_url, subprotocol=subprotocol) as ada,
            client.connect(running.websocket_url, subprotocol=subprotocol) as bob,
        ):
            assert ada.subprotocol == subprotocol
            ada_room = await ada.join("room:lobby", {"user": "ada"})
            bob_room = await bob.join("room:lobby", {"user": "bob"})
            assert bob_room.join_reply["members"] == 2
            received: list[Payload] = []
            got = trio.Event()

            def on_message(payload: Payload) -> None:
                received.append(payload)
                got.set()

            bob_room.on("message", on_message)
            await ada_room.publish("message", {"text": "hello"}, ack=True)
            await got.wait()
            assert isinstance(received[0], dict)
            assert received[0]["user"] == "ada"
            assert received[0]["text"] == "hello"
            assert await bob_room.call("members") == ["ada", "bob"]


async def test_iterating_a_channel_yields_pushes_in_order(running: HubRuntime) -> None:
    with trio.fail_after(10):
        async with (
            client.connect(running.websocket_url) as ada,
            client.connect(running.websocket_url) as bob,
        ):
            ada_room = await ada.join("room:order", {"user": "ada"})
            bob_room = await bob.join("room:order", {"user": "bob"})
            iterator = bob_room.__aiter__()
            for index in range(20):
                await ada_room.publish("message", {"text": f"m{index}"})
            texts = []
            for _ in range(20):
                push = await iterator.__anext__()
                assert isinstance(push.payload, dict)
                texts.append(push.payload["text"])
                assert push.offset == len(texts)
            assert texts == [f"m{index}" for index in range(20)]


async def test_error_replies_raise_reply_error(running: HubRuntime) -> None:
    with trio.fail_after(10):
        async with client.connect(running.websocket_url) as connection:
            with pytest.raises(client.ReplyError) as refused:
                await connection.join("nowhere:1")
            assert refused.value.code == "unknown_topic"
            with pytest.raises(client.ReplyError) as bad_user:
                await connection.join("room:x", {"user": ""})
            assert bad_user.value.code == "bad_field"
            room = await connection.join("room:x", {"user": "ada"})
            with pytest.raises(client.ReplyError) as too_long:
                await room.publish("message", {"text": "x" * 2001}, ack=True)
            assert too_long.value.code == "bad_field"
            # The connection is still fine after each refusal.
            await connection.heartbeat()


async def test_call_timeout_on_the_server_is_a_reply_error(running: HubRuntime) -> None:
    with trio.fail_after(10):
        async with client.connect(running.websocket_url) as connection:
            slow = await connection.join("slow:1")
            with pytest.raises(client.ReplyError) as timed_out:
                # The server cuts the call at the client's timeout and says so.
                await slow.call("wait", timeout=0.2)
            assert timed_out.value.code == "call_timeout"
            await connection.heartbeat()


async def test_kick_ends_the_channel(running: HubRuntime) -> None:
    with trio.fail_after(10):
        async with client.connect(running.websocket_url) as connection:
            channel = await connection.join("kick:1")
            await channel.publish("kick_me")
            pushes = [push async for push in channel]
            assert pushes == []
            assert channel.ended is not None
            assert channel.ended.code == "kicked"
            assert "kick:1" not in connection.channels


async def test_identity_from_authenticate_reaches_the_service(running: HubRuntime) -> None:
    with trio.fail_after(10):
        async with client.connect(running.websocket_url, query={"token": "good"}) as connection:
            await connection.join("whoami")
            assert await connection.call("whoami", "who") == {"user": "ada"}
        with pytest.raises(client.ConnectError) as refused:
            async with client.connect(running.websocket_url, query={"token": "bad"}):
                pass  # pragma: no cover
        assert refused.value.status == 401 and not refused.value.retry
        assert "bad token" in str(refused.value)


async def test_without_reconnect_requests_after_the_server_closes_raise_closed(
    running: HubRuntime,
) -> None:
    with trio.fail_after(10):
        async with client.connect(running.websocket_url, reconnect=False) as connection:
            await connection.join("room:bye", {"user": "ada"})
            running.request_shutdown()
            await connection.wait_closed()
            with pytest.raises(client.ClientClosedError) as closed:
                await connection.heartbeat()
            assert closed.value.code == "closed" and "1001" in str(closed.value)


async def test_over_real_sockets_a_client_the_server_cut_off_reconnects_and_recovers(
    running: HubRuntime,
) -> None:
    with trio.fail_after(20):
        async with (
            client.connect(running.websocket_url, backoff_base=0.05) as ada,
            client.connect(running.websocket_url) as bob,
        ):
            mine = await ada.join("room:cut", {"user": "ada"})
            theirs = await bob.join("room:cut", {"user": "bob"})
            texts: list[str] = []
            got_all = trio.Event()

            def on_message(payload: Payload) -> None:
                assert isinstance(payload, dict)
                texts.append(payload["text"])
                if len(texts) == 4:
                    got_all.set()

            mine.on("message", on_message)
            await theirs.publish("message", {"text": "before"}, ack=True)
            # The server ends Ada's connection (1011) and Bob speaks meanwhile.
            ada_session = next(iter(running.connections())).session  # Ada connected first
            ada_session.transport.close(1011, "cut off by the test")
            for text in ("during 1", "during 2"):
                await theirs.publish("message", {"text": text}, ack=True)
            await ada.wait_connected()
            await mine.publish("message", {"text": "back"}, ack=True)
            await got_all.wait()
            assert texts == ["before", "during 1", "during 2", "back"]
            assert ada.connections == 2 and mine.recovered is True
