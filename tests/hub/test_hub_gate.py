"""Who gets in, and how bad connections are answered: origin, subprotocol, token, size, RFC 6455."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio
import trio_websocket
from hub_support import SUBPROTOCOL_OF, RawWebSocket, counter_value
from join_support import join_ok
from wire_support import OPCODE_CLOSE, OPCODE_TEXT, client_frame, request_until_eof, upgrade_request

from hub.app import Hub
from hub.gateway import AuthenticationError, ConnectRequest
from hub.protocol import (
    JSON,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Heartbeat,
    Join,
    Payload,
    Publish,
    Push,
    Reply,
)
from hub.services import Service
from hub.topics import Member


async def _rejected_head(port: int, request: bytes) -> tuple[str, bytes]:
    """Send a raw upgrade request; return the status line and everything after it, to EOF."""
    status_line, _, rest = (await request_until_eof(port, request)).partition(b"\r\n")
    return status_line.decode(), rest


async def test_origin_outside_the_allow_list_gets_403_and_no_upgrade(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(server={"origins": ("http://good.example",)})

        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with hub.client(headers=[("Origin", "http://evil.example")]):
                pytest.fail("connected from an origin outside the allow-list")
        assert rejected.value.status_code == 403
        assert b"http://evil.example" in (rejected.value.body or b"")

        # On the wire: a plain 403, no 101, no Upgrade header, then the end.
        request = upgrade_request(
            "/ws", subprotocols=[SUBPROTOCOL_JSON], headers=[("Origin", "http://evil.example")]
        )
        status_line, rest = await _rejected_head(hub.port, request)
        assert status_line.startswith("HTTP/1.1 403"), status_line
        headers = rest.partition(b"\r\n\r\n")[0].lower()
        assert b"upgrade:" not in headers
        assert b"sec-websocket-accept" not in headers

        async with hub.client(headers=[("Origin", "http://good.example")]) as client:
            assert (await client.heartbeat()).ok
        assert counter_value(hub.metrics.rejections.labels(reason="origin")) == 2


@pytest.mark.parametrize("offered", [["foo.v1"], []], ids=["foo.v1", "none"])
async def test_unsupported_subprotocol_gets_400_naming_the_supported_ones(hub, offered):
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with hub.client(subprotocols=offered):
                pytest.fail(f"connected offering {offered}")
        assert rejected.value.status_code == 400
        body = (rejected.value.body or b"").decode()
        assert SUBPROTOCOL_MSGPACK in body and SUBPROTOCOL_JSON in body, body


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_each_subprotocol_works_end_to_end(hub, codec):
    """msgpack travels in binary messages, JSON in text ones, both ways."""
    with trio.fail_after(10):
        async with hub.client(codec) as client:
            assert client.websocket.subprotocol == SUBPROTOCOL_OF[codec]
            # The hub reads the message type of its codec (and only that one).
            await client.send_raw(client.codec.encode(Join(1, "echo:x")))
            reply = await client.reply_to(1)
            assert reply == join_ok(1, "echo:x")
            payload: Payload = {"n": 1, "list": [1.5, "two", None, True]}
            if codec == "msgpack":
                payload["blob"] = b"\x00\xff"  # bytes only travel over msgpack
            await client.send(Publish(2, "echo:x", "ping", payload))
            assert await client.next_frame() == Push("echo:x", "ping", payload)
            assert await client.next_frame() == Reply(2, "echo:x", True)
            # HubClient checks each message's type against the codec as it decodes.
            assert {type(message.data) for message in client.received} == {
                bytes if codec == "msgpack" else str
            }


async def test_both_subprotocols_offered_picks_msgpack(hub):
    with trio.fail_after(10):
        async with hub.client(subprotocols=[SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]) as client:
            assert client.websocket.subprotocol == SUBPROTOCOL_MSGPACK
            assert (await client.heartbeat()).ok


class WhoAmIService(Service):
    """Answers a join with the identity the hub's authenticate hook gave the member."""

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        assert isinstance(member.identity, dict)
        return member.identity


def _check_token(request: ConnectRequest) -> object:
    token = request.query.get("token")
    if token != "s3cret":
        raise AuthenticationError(f"bad token {token!r}")
    return {"user": "alice", "via": request.path}


@pytest.mark.parametrize("query", ["token=wrong", "", "token="], ids=["wrong", "missing", "empty"])
async def test_bad_token_gets_401(start_hub, query):
    app = Hub("auth", authenticate=_check_token)
    app.route("me:*", WhoAmIService)
    with trio.fail_after(10):
        hub = await start_hub(app)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with hub.client(query=query):
                pytest.fail("connected with a bad token")
        assert rejected.value.status_code == 401
        assert b"bad token" in (rejected.value.body or b"")
        assert (b"www-authenticate", b"Bearer") in rejected.value.headers
        assert hub.runtime.connection_count() == 0


async def test_good_token_connects_and_the_service_sees_the_identity(start_hub):
    async def check_token_async(request: ConnectRequest) -> object:
        await trio.lowlevel.checkpoint()  # an async hook works too
        return _check_token(request)

    app = Hub("auth", authenticate=check_token_async)
    app.route("me:*", WhoAmIService)
    with trio.fail_after(10):
        hub = await start_hub(app)
        async with hub.client("msgpack", query="token=s3cret") as client:
            reply = await client.join_ok("me:1")
            assert reply == join_ok(reply.ref, "me:1", {"user": "alice", "via": "/ws"})


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_oversized_message_gets_close_1009(start_hub, codec):
    with trio.fail_after(10):
        hub = await start_hub(websocket={"max_message_size": 1024})
        async with hub.client(codec) as client:
            await client.join_ok("echo:x")
            # Just under the limit is fine...
            small = client.codec.encode(Publish(0, "echo:x", "e", "x" * 900))
            assert len(small) <= 1024
            await client.send_raw(small)
            assert (await client.next_push("echo:x")).payload == "x" * 900
            # ...and over it ends the connection with 1009.
            big = client.codec.encode(Publish(0, "echo:x", "e", "x" * 1100))
            await client.send_raw(big)
            frames, reason = await client.expect_close()
            assert frames == []
            assert reason.code == 1009
        assert counter_value(hub.metrics.protocol_closes.labels(code="1009")) == 1


async def test_websocket_protocol_violation_on_the_hub_route_gets_close_1002(hub):
    """An unmasked client frame (RFC 6455 §5.1) after a valid handshake on /ws."""
    with trio.fail_after(10):
        client = await RawWebSocket.connect(hub.port, "/ws", codec=JSON)
        await client.send(Join(1, "echo:x"))
        reply = await client.read_data_frames(1)
        assert reply == [join_ok(1, "echo:x")]
        await client.send_bytes(
            client_frame(OPCODE_TEXT, JSON.encode(Heartbeat(2)).encode(), masked=False)
        )
        frames = await client.read_frames_until_eof()
        await client.aclose()
        assert [frame.opcode for frame in frames] == [OPCODE_CLOSE], frames
        assert frames[-1].close_code == 1002
        assert counter_value(hub.metrics.protocol_closes.labels(code="1002")) == 1
