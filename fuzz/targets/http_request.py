"""Fuzz target: what a client sends on a fresh connection to the gateway's port.

The input is the client's bytes, preceded by one byte of choices (how they
are cut into reads, and whether the client then closes its side or falls
silent). The connection is served by the gateway's own per-connection
server (`hub.gateway.serve.connection_server`, what `serve_gateway` runs
for each accepted socket) over a real TCP connection on loopback, with
routes like the hub's: static files at "/", an exact GET route, a POST
route that reads a body, and a WebSocket route with subprotocols, an
origin list and an authenticate hook. trio's autojump clock makes every
timeout (the head's, the body's, keep-alive, the closing handshake) pass in
no time.

The documented outcomes, and nothing else: HTTP/1.1 responses, each with a
status the gateway documents; every 4xx or 5xx one says why in a text body
and closes the connection; a 101 is followed only by WebSocket frames. A
request that makes the gateway log an error ("error serving connection",
a route failing) is a finding, as is any broken expectation.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import socket
from typing import Final

import h11
import trio
import trio.testing
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from fuzz.targets.peer import read_all, send_reads
from hub.gateway import AuthenticationError, ConnectRequest, GatewayConfig, WebSocketRoute
from hub.gateway.serve import connection_server
from hub.gateway.server import ConnectionServer
from hub.gateway.websocket import serve_echo
from hub.http import HttpRequest, HttpResponse, HttpRoute, static_files
from hub.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

CONFIG: Final = GatewayConfig(
    origins=frozenset({"https://app.example"}),
    max_head_size=2048,
    max_body_size=4096,
    max_message_size=4096,
)

# Every status the gateway answers with, for these routes: 100 (Expect:
# 100-continue), 101 (upgrade), 200 and 304 (files, ETags), and the
# refusals, each with its reason.
STATUSES: Final = frozenset(
    {100, 101, 200, 304, 400, 401, 403, 404, 405, 408, 413, 426, 431, 501, 503, 505}
)


async def _healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse(body=b'{"ok": true}', content_type="application/json")


async def _echo_body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(body=request.body, content_type="application/octet-stream")


def _authenticate(request: ConnectRequest) -> object:
    if "token" not in request.query:
        raise AuthenticationError("a token query parameter is needed")
    return request.query["token"]


@functools.cache
def _server() -> ConnectionServer:
    server, _longpoll = connection_server(
        CONFIG,
        websocket_routes=[
            WebSocketRoute("/ws", serve_echo, (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON))
        ],
        http_routes=[
            HttpRoute("/healthz", _healthz),
            HttpRoute("/echo", _echo_body, methods=frozenset({"POST", "PUT"})),
            static_files(importlib.resources.files("hub") / "static", prefix="/"),
        ],
        authenticate=_authenticate,
        observe=lambda event: None,
    )
    return server


class _Errors(logging.Handler):
    """Keeps the error records the gateway logs (an unexpected exception, a failed route)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_errors = _Errors()
logging.getLogger("hub").addHandler(_errors)


@functools.cache
def _listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def test_one_input(data: bytes) -> None:
    """Run one input; raise if the gateway does anything undocumented."""
    if not data:
        return
    _errors.records.clear()
    written = trio.run(_run, data[0], data[1:], clock=trio.testing.MockClock(autojump_threshold=0))
    if _errors.records:
        record = _errors.records[0]
        raise AssertionError(f"the gateway logged: {record.getMessage()}") from (
            record.exc_info[1] if record.exc_info else None
        )
    check_responses(_requests(data[1:]), written)


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    """A TCP connection on loopback: (client, server), both non-blocking."""
    listener = _listener()
    client = socket.create_connection(listener.getsockname())
    server, _address = listener.accept()
    # Closed with a reset, not a FIN: no TIME_WAIT left behind per input.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.setblocking(False)
    server.setblocking(False)
    return client, server


async def _run(choices: int, stream: bytes) -> bytes:
    # choices: bits 0-5 the read size, bit 7 the client closes its side at
    # the end (else it falls silent, and the timeouts end the connection).
    read_size = ((choices & 0x3F) + 1) ** 2
    reads = [stream[i : i + read_size] for i in range(0, len(stream), read_size)]
    client_socket, server_socket = _connected_pair()
    client = trio.socket.from_stdlib_socket(client_socket)
    written = bytearray()
    # No fail_after: reading a static file runs in a thread, during which the
    # autojump clock would reach any deadline. A hang is caught by libFuzzer's
    # -timeout (and pytest's, in the replay).
    with client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, client, written)
            nursery.start_soon(send_reads, client, reads, bool(choices & 0x80))
            server_stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_socket))
            await _server().serve_connection(server_stream)
    return bytes(written)


def _requests(stream: bytes) -> list[bytes]:
    """The methods of the requests h11 reads from `stream`, in order, as far as it can."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(stream)
    connection.receive_data(b"")
    methods = []
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Request):
                methods.append(bytes(event.method))
            elif (
                event is h11.NEED_DATA
                or event is h11.PAUSED
                or isinstance(event, h11.ConnectionClosed)
            ):
                return methods
            elif isinstance(event, h11.EndOfMessage):
                # Answer it, so that h11 reads the next request.
                connection.send(h11.Response(status_code=204, headers=[]))
                connection.send(h11.EndOfMessage())
                connection.start_next_cycle()
    except h11.ProtocolError:
        return methods


def check_responses(methods: list[bytes], written: bytes) -> None:
    """Check what the gateway wrote: responses with documented statuses, errors explained.

    `methods` are those of the requests as read from the client's bytes,
    in order (for a HEAD's response, which has no body).
    """
    position = 0
    index = 0
    while position < len(written):
        end = written.find(b"\r\n\r\n", position)
        assert end >= 0, f"an incomplete response head: {written[position:][:200]!r}"
        lines = written[position:end].split(b"\r\n")
        position = end + 4
        version, _, rest = lines[0].partition(b" ")
        assert version == b"HTTP/1.1", lines[0]
        status = int(rest[:3])
        assert status in STATUSES, f"status {status}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status == 101:
            _check_websocket(written[position:])
            return
        method = methods[index] if index < len(methods) else None
        index += 1
        length = int(headers.get(b"content-length", b"0"))
        has_body = method != b"HEAD" and status not in (204, 304)
        body = written[position : position + length] if has_body else b""
        if has_body:
            assert len(body) == length, f"{len(body)} body bytes, Content-Length {length}"
            position += length
        if status == 100:
            index -= 1  # the final response to the same request follows
        if status >= 400:
            assert headers.get(b"content-type", b"").startswith(b"text/plain"), headers
            assert method == b"HEAD" or body.strip(), f"{status} without a reason"
        if headers.get(b"connection") == b"close":
            rest = written[position:]
            assert not rest, f"bytes after Connection: close: {rest!r}"


def _check_websocket(written: bytes) -> None:
    """After a 101: only valid server frames, at most one Close, last, with a sendable code."""
    frames = FrameProtocol(client=True, extensions=[])
    frames.receive_bytes(written)
    closed = False
    try:
        for frame in frames.received_frames():
            assert not closed, f"a frame after the Close: {frame}"
            if frame.opcode is Opcode.CLOSE:
                closed = True
                code = int(frame.payload[0])
                assert (
                    code in range(1000, 1004)
                    or code in range(1007, 1015)
                    or (code in range(3000, 5000))
                ), f"Close {code}"
    except ParseFailed as failure:
        raise AssertionError(f"the server wrote an invalid frame: {failure}") from failure
