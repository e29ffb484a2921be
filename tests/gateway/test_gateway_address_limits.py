"""Connections per client address and in all, handshakes per second, trusted proxies.

Every test runs a real gateway on 127.0.0.1 with loopback not exempt
(`unlimited_addresses=()`), so that one machine plays many clients.
"""

from __future__ import annotations

import logging

import pytest
import trio
from gateway_support import StartGateway
from wire_support import RawConnection, RawResponse, parse_head, upgrade_request

from hub.gateway import (
    ConnectRequest,
    GatewayConfig,
    LimitHit,
    RejectReason,
    RequestRejected,
)
from hub.http import HttpRequest, HttpResponse, HttpRoute

GET = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse.text("hello\n")


ROUTES = [HttpRoute("/hello", hello)]


def limited(**limits: object) -> GatewayConfig:
    return GatewayConfig(port=0, unlimited_addresses=(), **limits)  # type: ignore[arg-type]


async def response_to(connection: RawConnection, request: bytes) -> RawResponse:
    await connection.send_bytes(request)
    head, _, body = (await connection.read_until_eof()).partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    return RawResponse(status, headers, body)


async def test_one_connection_past_the_per_address_limit_is_429_before_its_request(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(limited(max_connections_per_address=2), http_routes=ROUTES)
        first = await RawConnection.open(gateway.port)
        second = await RawConnection.open(gateway.port)
        third = await RawConnection.open(gateway.port)
        # Answered without sending anything: nothing of it is read.
        head, _, body = (await third.read_until_eof()).partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        assert status == 429
        assert headers["retry-after"] == "1"
        assert body == b"too many connections from 127.0.0.1 (at most 2); close one first\n"
        assert LimitHit("connections_per_address") in gateway.events
        assert RequestRejected(RejectReason.LIMIT, 429, None) in gateway.events
        # A connection that ends frees its place.
        assert (await response_to(first, GET)).status == 200
        fourth = await RawConnection.open(gateway.port)
        assert (await response_to(fourth, GET)).body == b"hello\n"
        for connection in (second, third):
            await connection.aclose()


async def test_past_max_connections_the_gateway_answers_503(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(limited(max_connections=2), http_routes=ROUTES)
        held = [await RawConnection.open(gateway.port) for _ in range(2)]
        head, _, body = (await (await RawConnection.open(gateway.port)).read_until_eof()).partition(
            b"\r\n\r\n"
        )
        status, headers = parse_head(head)
        assert (status, headers["retry-after"]) == (503, "1")
        assert body == b"the server is full; try again later\n"
        assert LimitHit("connections") in gateway.events
        assert gateway.handle.full == "2 connections open (max_connections)"
        assert (await response_to(held[0], GET)).status == 200
        await held[1].aclose()
        with trio.fail_after(5):
            while gateway.handle.full is not None:
                await trio.lowlevel.checkpoint()


async def test_handshakes_past_the_rate_of_an_address_are_429_with_retry_after(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        # A burst of one, then one every 100 s: the second comes too soon, whatever the load.
        gateway = await start_gateway(limited(handshakes_per_second=0.01))
        first = await RawConnection.open_websocket(gateway.port, "/echo")
        second = await RawConnection.open(gateway.port)
        response = await response_to(second, upgrade_request("/echo"))
        assert response.status == 429
        assert 90 <= int(response.headers["retry-after"]) <= 100
        assert response.body.startswith(
            b"too many WebSocket handshakes from 127.0.0.1 (at most 0.01 a second); retry in "
        )
        assert LimitHit("handshakes_per_address") in gateway.events
        # Plain HTTP is no handshake: served.
        assert (await response_to(await RawConnection.open(gateway.port), GET)).status == 404
        await first.aclose()


def seen_by(remotes: list[object]) -> object:
    def authenticate(request: ConnectRequest) -> object:
        remotes.append(request.remote)
        return None

    return authenticate


async def test_a_trusted_proxy_names_the_client_and_the_limits_count_it(
    start_gateway: StartGateway,
) -> None:
    remotes: list[object] = []
    with trio.fail_after(10):
        gateway = await start_gateway(
            limited(trusted_proxies=("127.0.0.1",), max_connections_per_address=1),
            authenticate=seen_by(remotes),
        )

        async def connect(forwarded: str) -> RawConnection:
            connection = await RawConnection.open(gateway.port)
            await connection.send_bytes(
                upgrade_request("/echo", headers=[("X-Forwarded-For", forwarded)])
            )
            return connection

        alice = await connect("198.51.100.1, 203.0.113.7")  # the proxy appended the client
        assert (await alice.read_response_head()).status == 101
        assert remotes == [("203.0.113.7", 0)]
        # The same client again: one connection at most, counted by its address.
        again = await connect("203.0.113.7")
        response = await again.read_response_head()
        assert response.status == 429
        # Another client behind the same proxy is not.
        bob = await connect("203.0.113.8")
        assert (await bob.read_response_head()).status == 101
        assert remotes[-1] == ("203.0.113.8", 0)
        # Something that is no address, where the proxy vouches for one: 400.
        bad = await connect("not-an-address")
        assert (await bad.read_response_head()).status == 400
        for connection in (alice, again, bob, bad):
            await connection.aclose()


async def test_the_header_is_ignored_from_a_peer_that_is_no_trusted_proxy(
    start_gateway: StartGateway,
) -> None:
    remotes: list[object] = []
    with trio.fail_after(10):
        gateway = await start_gateway(
            limited(trusted_proxies=("10.0.0.1",)), authenticate=seen_by(remotes)
        )
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(
            upgrade_request("/echo", headers=[("X-Forwarded-For", "203.0.113.7")])
        )
        assert (await connection.read_response_head()).status == 101
        [(host, _port)] = remotes  # type: ignore[misc]
        assert host == "127.0.0.1"
        await connection.aclose()


def test_a_trusted_proxy_that_is_no_address_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"trusted proxy .proxy\.local. is not an IP address"):
        GatewayConfig(trusted_proxies=("proxy.local",))


async def test_refusals_are_logged_without_the_clients_bytes_and_rate_limited(
    start_gateway: StartGateway,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        gateway = await start_gateway()
        evil = b"\x1b[31mEVIL-BYTES\x1b[0m"
        request = b"GET /" + evil + b" HTTP/1.1\r\nHost: x\r\nX-Bad header: " + evil + b"\r\n\r\n"
        with caplog.at_level(logging.INFO, logger="hub.gateway"):
            for _ in range(25):
                connection = await RawConnection.open(gateway.port)
                assert (await response_to(connection, request)).status == 400
            lines = [r.getMessage() for r in caplog.records if r.name == "hub.gateway"]
            assert lines == ["refused a request from 127.0.0.1: 400 (bad_request)"] * 10
            # Past the interval, the next line says how many were not logged.
            await trio.sleep(10)
            connection = await RawConnection.open(gateway.port)
            await response_to(connection, request)
            lines = [r.getMessage() for r in caplog.records if r.name == "hub.gateway"]
        assert lines[10:] == [
            "15 more requests refused in 10 s, not logged",
            "refused a request from 127.0.0.1: 400 (bad_request)",
        ]
        assert not any(b"EVIL" in line.encode() for line in lines)


async def test_handshakes_past_the_rate_in_all_are_503_from_any_address(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        # Loopback is left alone by the per-address limits (the default), not by this one.
        gateway = await start_gateway(GatewayConfig(port=0, max_handshakes_per_second=0.01))
        first = await RawConnection.open_websocket(gateway.port, "/echo")
        response = await response_to(
            await RawConnection.open(gateway.port), upgrade_request("/echo")
        )
        assert response.status == 503
        assert 90 <= int(response.headers["retry-after"]) <= 100
        assert response.body.startswith(
            b"the server takes no more WebSocket handshakes now; retry in "
        )
        assert LimitHit("handshakes") in gateway.events
        await first.aclose()
