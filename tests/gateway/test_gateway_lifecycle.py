"""Keeping connections alive, TLS, and winding the gateway down."""

from __future__ import annotations

import pathlib
import ssl
from collections.abc import Iterator

import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from gateway_support import StartGateway
from wire_support import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    RawConnection,
    RawFrame,
    client_frame,
)

from hub.gateway import ConnectInfo, GatewayConfig, IdleClosed, WebSocketRoute, serve_echo
from hub.http import HttpRequest, HttpResponse, HttpRoute
from hub.transport import WebSocketTransport

KEEPALIVE = GatewayConfig(port=0, ping_interval=10, idle_timeout=30, close_timeout=5)


async def test_silent_peer_is_pinged_then_closed_with_1001(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        gateway = await start_gateway(KEEPALIVE)
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        connected = trio.current_time()
        ping = await connection.read_frame()
        assert ping is not None and ping.opcode == OPCODE_PING
        assert trio.current_time() - connected == pytest.approx(10, abs=0.5)
        close = await connection.read_frame()
        assert close is not None and close.opcode == OPCODE_CLOSE
        assert close.close_code == 1001
        assert trio.current_time() - connected == pytest.approx(30, abs=0.5)
        assert IdleClosed("/echo") in gateway.events
        # The peer never answers the Close either: after close_timeout the
        # gateway gives up on the closing handshake and ends the TCP stream.
        assert await connection.read_frames_until_eof() == []
        assert trio.current_time() - connected == pytest.approx(30 + 5, abs=0.5)
        await connection.aclose()


async def test_peer_that_answers_pings_stays_connected(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        gateway = await start_gateway(KEEPALIVE)
        connection = await RawConnection.open_websocket(gateway.port, "/echo")
        connected = trio.current_time()
        for _ in range(6):
            ping = await connection.read_frame()
            assert ping is not None and ping.opcode == OPCODE_PING
            await connection.send_bytes(client_frame(OPCODE_PONG, ping.payload))
        # Six ping intervals is twice the idle timeout: the pongs kept it open.
        assert trio.current_time() - connected >= 2 * KEEPALIVE.idle_timeout
        await connection.send_bytes(client_frame(OPCODE_TEXT, b"still here"))
        assert await connection.read_frame() == RawFrame(True, OPCODE_TEXT, b"still here")
        assert not any(isinstance(event, IdleClosed) for event in gateway.events)
        await connection.send_close(1000)
        assert [frame.close_code for frame in await connection.read_frames_until_eof()] == [1000]
        await connection.aclose()


async def test_library_client_keeps_the_connection_alive_by_itself(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    """trio-websocket (like browsers) answers pings on its own: the handler never sees them."""
    with trio.fail_after(300):
        gateway = await start_gateway(KEEPALIVE)
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/echo") as websocket:
            # Nothing to wait for but time itself: the point is that 100
            # (virtual) seconds pass and the connection is still open.
            await trio.sleep(100)
            await websocket.send_message("hello")
            assert await websocket.get_message() == "hello"
        assert not any(isinstance(event, IdleClosed) for event in gateway.events)


@pytest.fixture
def tls_files(tmp_path: pathlib.Path) -> Iterator[tuple[GatewayConfig, ssl.SSLContext]]:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    pem = tmp_path / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    yield GatewayConfig(port=0, certfile=str(pem)), client_context


async def test_wss_echo_and_https_over_tls(
    start_gateway: StartGateway, tls_files: tuple[GatewayConfig, ssl.SSLContext]
) -> None:
    async def health(request: HttpRequest) -> HttpResponse:
        return HttpResponse.text("ok")

    config, client_context = tls_files
    with trio.fail_after(10):
        gateway = await start_gateway(config, http_routes=(HttpRoute("/health", health),))
        assert gateway.handle.tls
        url = f"wss://127.0.0.1:{gateway.port}/echo"
        async with trio_websocket.open_websocket_url(url, client_context) as websocket:
            await websocket.send_message("secure")
            assert await websocket.get_message() == "secure"
            await websocket.send_message(b"\x00" * 100_000)
            assert await websocket.get_message() == b"\x00" * 100_000

        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", gateway.port, ssl_context=client_context, https_compatible=True
        )
        connection = RawConnection(stream)
        await connection.send_bytes(
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        response = await connection.read_response()
        assert (response.status, response.body) == (200, b"ok")
        await connection.aclose()


async def test_plain_text_on_a_tls_port_is_dropped(
    start_gateway: StartGateway, tls_files: tuple[GatewayConfig, ssl.SSLContext]
) -> None:
    config, _client_context = tls_files
    with trio.fail_after(10):
        gateway = await start_gateway(config)
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = await connection.read_until_eof()
        except trio.BrokenResourceError:
            data = b""
        assert b"HTTP/1.1" not in data
        await connection.aclose()


async def test_stop_accepting_keeps_open_connections_and_refuses_new_ones(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        handle = gateway.handle
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/echo") as websocket:
            await websocket.send_message("before")
            assert await websocket.get_message() == "before"
            assert handle.connection_count == 1

            await handle.stop_accepting()
            assert not handle.accepting
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", gateway.port)

            await websocket.send_message("after")
            assert await websocket.get_message() == "after"

            drained = trio.Event()

            async def wait_drained() -> None:
                await handle.wait_drained()
                drained.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_drained)
                await trio.testing.wait_all_tasks_blocked()
                assert not drained.is_set()
                await websocket.aclose()
        assert drained.is_set()
        assert handle.connection_count == 0


async def test_shutdown_closes_websockets_with_1001(start_gateway: StartGateway) -> None:
    handler_started = trio.Event()

    async def wait_forever(transport: WebSocketTransport, info: ConnectInfo) -> None:
        handler_started.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        gateway = await start_gateway(websocket_routes=[WebSocketRoute("/wait", wait_forever)])
        async with trio_websocket.open_websocket_url(gateway.ws_url + "/wait") as websocket:
            await handler_started.wait()
            gateway.scope.cancel()
            with pytest.raises(trio_websocket.ConnectionClosed) as caught:
                await websocket.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 1001


async def test_stop_accepting_closes_idle_keep_alive_connections(
    start_gateway: StartGateway,
) -> None:
    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse.text("hello")

    with trio.fail_after(10):
        gateway = await start_gateway(http_routes=(HttpRoute("/hello", hello),))
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await connection.read_response()).body == b"hello"
        await trio.testing.wait_all_tasks_blocked()
        assert gateway.handle.connection_count == 1

        await gateway.handle.stop_accepting()
        assert await connection.read_until_eof() == b""
        await connection.aclose()
        await gateway.handle.wait_drained()
        assert gateway.handle.connection_count == 0


async def test_clashing_routes_are_refused(start_gateway: StartGateway) -> None:
    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse.text("hello")

    with trio.fail_after(10):
        with pytest.raises(ValueError, match="two HTTP routes"):
            await start_gateway(http_routes=(HttpRoute("/a", hello), HttpRoute("/a", hello)))
        with pytest.raises(ValueError, match="two WebSocket routes"):
            await start_gateway(
                websocket_routes=(
                    WebSocketRoute("/ws", serve_echo),
                    WebSocketRoute("/ws", serve_echo),
                )
            )


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        GatewayConfig(ping_interval=30, idle_timeout=30)
    with pytest.raises(ValueError, match="positive"):
        GatewayConfig(max_message_size=0)
    with pytest.raises(ValueError, match="at most"):
        GatewayConfig(max_head_size=64 * 1024)
    with pytest.raises(TypeError):
        GatewayConfig(origins="https://one.example")
    assert GatewayConfig(origins=["https://one.example"]).origins == frozenset(
        {"https://one.example"}
    )
