"""Plain HTTP on the gateway port: routes, methods, static files, bad and slow requests."""

from __future__ import annotations

import pathlib

import pytest
import trio
import trio.testing
from gateway_support import StartGateway
from wire_support import RawConnection, RawResponse

from hub.gateway import GatewayConfig, RejectReason, RequestRejected
from hub.http import HttpRequest, HttpResponse, HttpRoute, static_files


async def hello(request: HttpRequest) -> HttpResponse:
    name = request.query.get("name", "world")
    return HttpResponse.text(f"hello {name}", headers=(("x-seen-method", request.method),))


async def echo_body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(body=request.body, content_type="application/octet-stream")


async def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("route bug")


ROUTES = (
    HttpRoute("/hello", hello),
    HttpRoute("/upload", echo_body, methods=frozenset({"POST"})),
    HttpRoute("/broken", broken),
)


async def exchange(port: int, raw: bytes, *, head_request: bool = False) -> RawResponse:
    connection = await RawConnection.open(port)
    try:
        await connection.send_bytes(raw)
        return await connection.read_response(head_request=head_request)
    finally:
        await connection.aclose()


def get(path: str, *, method: str = "GET", headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()


async def test_route_answers_200_with_length_and_type(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        response = await exchange(gateway.port, get("/hello?name=trio&name=other"))
        assert response.status == 200
        assert response.body == b"hello trio"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-length"] == str(len(response.body))


async def test_unknown_path_is_404(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        response = await exchange(gateway.port, get("/nowhere"))
        assert response.status == 404


async def test_wrong_method_is_405_with_allow(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        response = await exchange(gateway.port, get("/hello", method="DELETE"))
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"
        response = await exchange(gateway.port, get("/upload"))
        assert response.status == 405
        assert response.headers["allow"] == "POST"


async def test_head_answers_a_get_route_without_body(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(get("/hello", method="HEAD") + get("/hello"))
        head = await connection.read_response(head_request=True)
        assert head.status == 200
        assert head.headers["content-length"] == str(len(b"hello world"))
        assert head.headers["x-seen-method"] == "HEAD"
        # The next bytes on the connection are the GET's response, so the
        # HEAD response really carried no body.
        full = await connection.read_response()
        assert full.body == b"hello world"
        await connection.aclose()


async def test_keep_alive_serves_several_requests(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        connection = await RawConnection.open(gateway.port)
        for name in ("a", "b", "c"):
            await connection.send_bytes(get(f"/hello?name={name}"))
            response = await connection.read_response()
            assert response.body == f"hello {name}".encode()
        await connection.send_bytes(get("/hello", headers="Connection: close\r\n"))
        assert (await connection.read_response()).status == 200
        assert await connection.read_until_eof() == b""
        await connection.aclose()


async def test_post_body_reaches_the_handler(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        body = bytes(range(256)) * 40
        raw = get("/upload", method="POST", headers=f"Content-Length: {len(body)}\r\n") + body
        response = await exchange(gateway.port, raw)
        assert response.status == 200
        assert response.body == body


async def test_too_large_body_is_413(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(GatewayConfig(port=0, max_body_size=100), http_routes=ROUTES)
        raw = get("/upload", method="POST", headers="Content-Length: 101\r\n") + b"x" * 101
        response = await exchange(gateway.port, raw)
        assert response.status == 413


@pytest.mark.gateway_logs_errors
async def test_broken_route_is_500_and_the_gateway_serves_on(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=ROUTES)
        assert (await exchange(gateway.port, get("/broken"))).status == 500
        assert (await exchange(gateway.port, get("/hello"))).status == 200


async def test_plain_get_on_a_websocket_path_is_426(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway()
        response = await exchange(gateway.port, get("/echo"))
        assert response.status == 426
        assert response.headers["upgrade"] == "websocket"


@pytest.fixture
def static_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("<h1>demo</h1>")
    (root / "client.js").write_text("export const x = 1;")
    (root / ".hidden").write_text("hidden")
    (tmp_path / "secret.txt").write_text("top secret")
    return root


async def test_static_file_has_type_and_etag(
    start_gateway: StartGateway, static_dir: pathlib.Path
) -> None:
    with trio.fail_after(5):
        route = static_files(static_dir, prefix="/static/")
        gateway = await start_gateway(http_routes=(route,))
        script = await exchange(gateway.port, get("/static/client.js"))
        assert script.status == 200
        assert script.body == b"export const x = 1;"
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert script.headers["x-content-type-options"] == "nosniff"
        etag = script.headers["etag"]
        assert etag.startswith('"')

        index = await exchange(gateway.port, get("/static/"))
        assert index.body == b"<h1>demo</h1>"
        assert index.headers["content-type"] == "text/html; charset=utf-8"

        cached = await exchange(
            gateway.port, get("/static/client.js", headers=f"If-None-Match: {etag}\r\n")
        )
        assert cached.status == 304
        assert cached.body == b""
        assert cached.headers["etag"] == etag


@pytest.mark.parametrize(
    "target",
    [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/./../secret.txt",
        "/static/..\\secret.txt",
        "/static/.hidden",
        "/static//etc/passwd",
        "/static/missing.js",
    ],
)
async def test_static_refuses_paths_outside_its_directory(
    start_gateway: StartGateway, static_dir: pathlib.Path, target: str
) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(http_routes=(static_files(static_dir, prefix="/static/"),))
        response = await exchange(gateway.port, get(target))
        assert response.status == 404
        assert b"secret" not in response.body


async def test_garbage_is_400(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway()
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
        response = await connection.read_response()
        assert response.status == 400
        assert await connection.read_until_eof() == b""
        assert gateway.events == [RequestRejected(RejectReason.BAD_REQUEST, 400, None)]


async def test_oversized_head_is_431(start_gateway: StartGateway) -> None:
    with trio.fail_after(5):
        gateway = await start_gateway(GatewayConfig(port=0, max_head_size=1024))
        connection = await RawConnection.open(gateway.port)
        await connection.send_bytes(b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 2000)
        response = await connection.read_response()
        assert response.status == 431
        assert await connection.read_until_eof() == b""
        assert gateway.events == [RequestRejected(RejectReason.TOO_LARGE, 431, None)]


async def test_slowloris_gets_408_after_the_head_timeout(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        gateway = await start_gateway(GatewayConfig(port=0, head_timeout=10))
        connection = await RawConnection.open(gateway.port)
        started = trio.current_time()
        await connection.send_bytes(b"GET / HTTP/1.1\r\nHost: te")
        response = await connection.read_response()
        assert response.status == 408
        assert await connection.read_until_eof() == b""
        assert trio.current_time() - started == pytest.approx(10, abs=0.5)
        assert gateway.events == [RequestRejected(RejectReason.TIMEOUT, 408, None)]


async def test_silent_connection_is_closed_without_a_response(
    start_gateway: StartGateway, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        gateway = await start_gateway(GatewayConfig(port=0, head_timeout=10))
        connection = await RawConnection.open(gateway.port)
        assert await connection.read_until_eof() == b""
        assert gateway.events == []
