"""WebSocket connects through the gateway: checks before the upgrade, echo, limits."""

from __future__ import annotations

import pytest
import trio
import trio_websocket
from gateway_support import StartGateway
from wire_support import RawConnection, upgrade_request

from hub.gateway import (
    AuthenticationError,
    ConnectInfo,
    ConnectRequest,
    GatewayConfig,
    ProtocolViolationClosed,
    RejectReason,
    RequestRejected,
    WebSocketAccepted,
    WebSocketRoute,
)
from hub.transport import WebSocketTransport

SUBPROTOCOLS = ("triohub.v1.msgpack", "triohub.v1.json")


class Recorder:
    """A handler that records what it was given and then echoes one message."""

    def __init__(self) -> None:
        self.infos: list[ConnectInfo] = []

    async def __call__(self, transport: WebSocketTransport, info: ConnectInfo) -> None:
        self.infos.append(info)
        transport.send_message(await transport.receive())
        await transport.flush()


async def rejection(url: str, **options: object) -> trio_websocket.ConnectionRejected:
    with pytest.raises(trio_websocket.ConnectionRejected) as caught:
        async with trio_websocket.open_websocket_url(url, **options):  # type: ignore[arg-type]
            raise AssertionError("the connection was accepted")
    return caught.value


async def test_echo_returns_text_as_text_and_binary_as_binary(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/echo") as websocket:
            await websocket.send_message("héllo")
            assert await websocket.get_message() == "héllo"
            await websocket.send_message(b"\x00\xffbinary")
            assert await websocket.get_message() == b"\x00\xffbinary"
            near_limit = bytes(range(256)) * (1024 * 1024 // 256 - 1)
            await websocket.send_message(near_limit)
            assert await websocket.get_message() == near_limit
            text = "x" * (1024 * 1024 - 10)
            await websocket.send_message(text)
            assert await websocket.get_message() == text
        assert gateway.events == [WebSocketAccepted("/echo", None)]


async def test_oversized_message_is_closed_with_1009(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(GatewayConfig(port=0, max_message_size=1000))
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/echo") as websocket:
            await websocket.send_message(b"x" * 1000)
            assert await websocket.get_message() == b"x" * 1000
            await websocket.send_message(b"x" * 1001)
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                await websocket.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 1009
        assert ProtocolViolationClosed("/echo", 1009) in gateway.events


async def test_disallowed_origin_is_403_without_upgrade(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        recorder = Recorder()
        gateway = await start_gateway(
            GatewayConfig(port=0, origins={"https://game.example"}),
            websocket_routes=[WebSocketRoute("/hub", recorder)],
        )
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(
            upgrade_request("/hub", headers=(("Origin", "https://evil.example"),))
        )
        response = await connection.read_response()
        assert response.status == 403
        assert "upgrade" not in response.headers
        assert b"https://evil.example" in response.body
        assert await connection.read_until_eof() == b""
        assert recorder.infos == []
        assert gateway.events == [RequestRejected(RejectReason.ORIGIN, 403, "/hub")]


async def test_allowed_origin_is_accepted(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        recorder = Recorder()
        gateway = await start_gateway(
            GatewayConfig(port=0, origins={"https://game.example", "https://lobby.example"}),
            websocket_routes=[WebSocketRoute("/hub", recorder)],
        )
        headers = [(b"Origin", b"https://lobby.example")]
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/hub", extra_headers=headers
        ) as websocket:
            await websocket.send_message("ping")
            assert await websocket.get_message() == "ping"
        assert recorder.infos[0].headers["origin"] == "https://lobby.example"


async def test_wildcard_origin_allows_any(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(GatewayConfig(port=0, origins={"*"}))
        headers = [(b"Origin", b"https://anywhere.example")]
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/echo", extra_headers=headers
        ) as websocket:
            await websocket.send_message("x")
            assert await websocket.get_message() == "x"


async def test_subprotocol_is_chosen_in_route_preference_order(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        recorder = Recorder()
        gateway = await start_gateway(
            websocket_routes=[WebSocketRoute("/hub", recorder, SUBPROTOCOLS)]
        )
        offered = ["triohub.v1.json", "other", "triohub.v1.msgpack"]
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/hub", subprotocols=offered
        ) as websocket:
            assert websocket.subprotocol == "triohub.v1.msgpack"
            await websocket.send_message(b"x")
            await websocket.get_message()
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/hub", subprotocols=["triohub.v1.json"]
        ) as websocket:
            assert websocket.subprotocol == "triohub.v1.json"
            await websocket.send_message(b"x")
            await websocket.get_message()
        assert [info.subprotocol for info in recorder.infos] == [
            "triohub.v1.msgpack",
            "triohub.v1.json",
        ]


@pytest.mark.parametrize("offered", [None, ["chat", "triohub.v2.json"]])
async def test_missing_or_unknown_subprotocol_is_400_naming_the_supported(
    start_gateway: StartGateway, offered: list[str] | None
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(
            websocket_routes=[WebSocketRoute("/hub", Recorder(), SUBPROTOCOLS)]
        )
        refused = await rejection(gateway.ws_url + "/hub", subprotocols=offered)
        assert refused.status_code == 400
        assert refused.body is not None
        assert b"triohub.v1.msgpack, triohub.v1.json" in refused.body
        assert gateway.events == [RequestRejected(RejectReason.SUBPROTOCOL, 400, "/hub")]


def token_auth(request: ConnectRequest) -> str:
    token = request.query.get("token")
    if token is None:
        authorization = request.headers.get("authorization", "")
        token = (
            authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None
        )
    if token != "s3cret":
        raise AuthenticationError("bad or missing token")
    return "user-42"


async def async_token_auth(request: ConnectRequest) -> str:
    await trio.lowlevel.checkpoint()
    return token_auth(request)


@pytest.mark.parametrize("authenticate", [token_auth, async_token_auth])
async def test_authenticated_identity_reaches_the_handler(
    start_gateway: StartGateway, authenticate: object
) -> None:
    with trio.fail_after(10):
        recorder = Recorder()
        gateway = await start_gateway(
            websocket_routes=[WebSocketRoute("/hub", recorder)], authenticate=authenticate
        )
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/hub?token=s3cret&room=1"
        ) as websocket:
            await websocket.send_message("x")
            await websocket.get_message()
        headers = [(b"Authorization", b"Bearer s3cret")]
        async with trio_websocket.open_websocket_url(
            gateway.ws_url + "/hub", extra_headers=headers
        ) as websocket:
            await websocket.send_message("x")
            await websocket.get_message()
        first, second = recorder.infos
        assert first.identity == second.identity == "user-42"
        assert first.query == {"token": "s3cret", "room": "1"}
        assert first.path == "/hub"
        assert first.remote is not None and first.remote[0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?token=wrong", []), ("", []), ("", [(b"Authorization", b"Bearer wrong")])],
)
async def test_failed_authentication_is_401_with_the_reason(
    start_gateway: StartGateway, query: str, headers: list[tuple[bytes, bytes]]
) -> None:
    with trio.fail_after(10):
        recorder = Recorder()
        gateway = await start_gateway(
            websocket_routes=[WebSocketRoute("/hub", recorder)], authenticate=token_auth
        )
        refused = await rejection(gateway.ws_url + "/hub" + query, extra_headers=headers)
        assert refused.status_code == 401
        assert refused.body == b"bad or missing token\n"
        assert (b"www-authenticate", b"Bearer") in refused.headers
        assert recorder.infos == []
        assert gateway.events == [RequestRejected(RejectReason.AUTH, 401, "/hub")]


async def test_slow_authentication_is_503(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    async def never(request: ConnectRequest) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(60):
        gateway = await start_gateway(GatewayConfig(port=0, auth_timeout=5), authenticate=never)
        refused = await rejection(gateway.ws_url + "/echo")
        assert refused.status_code == 503


async def test_unsupported_version_is_426(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open(gateway.port)
        request = upgrade_request("/echo").replace(b"Version: 13", b"Version: 8")
        await connection.send_bytes(request)
        response = await connection.read_response()
        assert response.status == 426
        assert response.headers["sec-websocket-version"] == "13"


@pytest.mark.gateway_logs_errors
async def test_handler_crash_closes_with_1011(start_gateway: StartGateway) -> None:
    async def crash(transport: WebSocketTransport, info: ConnectInfo) -> None:
        await transport.receive()
        raise RuntimeError("handler bug")

    with trio.fail_after(10):
        gateway = await start_gateway(
            websocket_routes=[WebSocketRoute("/crash", crash), WebSocketRoute("/echo", Recorder())]
        )
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/crash") as websocket:
            await websocket.send_message("boom")
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                await websocket.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 1011
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/echo") as websocket:
            await websocket.send_message("still serving")
            assert await websocket.get_message() == "still serving"


async def test_handler_that_returns_closes_with_1000(start_gateway: StartGateway) -> None:
    async def greet(transport: WebSocketTransport, info: ConnectInfo) -> None:
        transport.send_message("bye")

    with trio.fail_after(10):
        gateway = await start_gateway(websocket_routes=[WebSocketRoute("/greet", greet)])
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/greet") as websocket:
            assert await websocket.get_message() == "bye"
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                await websocket.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 1000
