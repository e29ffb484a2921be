"""What a careful HTTP server refuses, tried as an attacker would (issue: hostile input)."""

from __future__ import annotations

import pathlib

import trio
import trio.testing
from gateway_support import StartGateway
from wire_support import RawConnection, http_get, parse_head, request_until_eof, upgrade_request

from hub.http import HttpRequest, HttpResponse, HttpRoute, static_files


async def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse.text("secret metrics\n")


async def test_content_length_with_transfer_encoding_is_400_and_closes(
    start_gateway: StartGateway,
) -> None:
    """Request smuggling: the request hidden behind it is never served (RFC 9112 §6.1)."""
    with trio.fail_after(10):
        gateway = await start_gateway(http_routes=[HttpRoute("/metrics", metrics)])
        smuggled = (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = await request_until_eof(gateway.port, smuggled)
        status, _headers = parse_head(answer.partition(b"\r\n\r\n")[0])
        assert status == 400
        assert b"secret metrics" not in answer


async def test_an_unknown_http_version_is_505(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway(http_routes=[HttpRoute("/metrics", metrics)])
        answer = await request_until_eof(gateway.port, b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n")
        status, _headers = parse_head(answer.partition(b"\r\n\r\n")[0])
        assert status in (400, 505)  # h11 may refuse the version itself
        assert b"secret metrics" not in answer


async def test_an_http_1_0_upgrade_is_400(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        request = upgrade_request("/echo").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        answer = await request_until_eof(gateway.port, request)
        status, _headers = parse_head(answer.partition(b"\r\n\r\n")[0])
        assert status == 400
        assert b"HTTP/1.1" in answer.partition(b"\r\n\r\n")[2]


async def test_a_bad_websocket_key_is_400(start_gateway: StartGateway) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        request = upgrade_request("/echo")
        start = request.index(b"Sec-WebSocket-Key: ") + len(b"Sec-WebSocket-Key: ")
        end = request.index(b"\r\n", start)
        answer = await request_until_eof(gateway.port, request[:start] + b"short" + request[end:])
        status, _headers = parse_head(answer.partition(b"\r\n\r\n")[0])
        assert status == 400


async def test_a_head_in_two_writes_is_held_to_the_same_limit(
    start_gateway: StartGateway,
) -> None:
    with trio.fail_after(10):
        gateway = await start_gateway()
        connection = await RawConnection.open(gateway.port)
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        # 15 KB, incomplete, then 16 KB more that complete it: 31 KB in all,
        # over the 16 KiB limit though neither piece is.
        await connection.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n" + filler * 15)
        await trio.testing.wait_all_tasks_blocked()
        await connection.send_bytes(filler * 16 + b"\r\n")
        response = await connection.read_response_head()
        assert response.status == 431
        await connection.aclose()


async def test_a_path_segment_the_file_system_refuses_is_404_without_a_traceback(
    start_gateway: StartGateway, tmp_path: pathlib.Path
) -> None:
    """ENAMETOOLONG once answered 500 and logged a traceback with the path, per request."""
    (tmp_path / "index.html").write_text("hello")
    with trio.fail_after(10):
        gateway = await start_gateway(http_routes=[static_files(tmp_path, prefix="/")])
        response = await http_get(gateway.port, "/" + "a" * 300)
        assert response.status == 404
        assert (await http_get(gateway.port, "/")).status == 200


async def test_a_refused_head_request_is_answered_without_a_body(
    start_gateway: StartGateway,
) -> None:
    """Found by fuzzing: a refusal of a HEAD (here, a HEAD asking for an upgrade) once
    crashed the connection, since h11 will not send a body to a HEAD."""
    with trio.fail_after(10):
        gateway = await start_gateway()
        request = upgrade_request("/echo").replace(b"GET", b"HEAD", 1)
        answer = await request_until_eof(gateway.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        assert status == 400
        assert int(headers["content-length"]) > 0
        assert body == b""


async def test_a_malformed_request_after_a_head_gets_its_400_with_a_body(
    start_gateway: StartGateway,
) -> None:
    """Found by fuzzing: the refusal of what follows a HEAD on a kept-alive connection
    is no answer to that HEAD, and carries its reason."""
    with trio.fail_after(10):
        gateway = await start_gateway(http_routes=[HttpRoute("/metrics", metrics)])
        answer = await request_until_eof(
            gateway.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0\0\r\n\r\n"
        )
        first, _, rest = answer.partition(b"\r\n\r\n")
        assert parse_head(first)[0] == 200
        second, _, body = rest.partition(b"\r\n\r\n")
        status, headers = parse_head(second)
        assert status == 400
        assert len(body) == int(headers["content-length"]) > 0
