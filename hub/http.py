"""Plain HTTP/1.1 on the gateway's port: requests, routes, static files.

The gateway reads every request head through `HttpConnection` (h11). A
WebSocket upgrade is answered with 101 here and the stream handed on to a
WebSocket transport; anything else is answered by the first matching
`HttpRoute`. Nothing else in this module knows about WebSockets, actors or
the hub's wire protocol.

Connections are kept alive between requests (HTTP/1.1 persistent
connections, RFC 9112 §9.3) until the client asks to close, a response
carries `Connection: close`, or the next request head does not arrive in time.
"""

from __future__ import annotations

import hashlib
import http
import importlib.resources.abc
import logging
import mimetypes
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs
import h11
import trio

__all__ = [
    "HeadTimeoutError",
    "HttpConnection",
    "HttpError",
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "HttpRoute",
    "RemoteAddress",
    "close_lingering",
    "match_route",
    "parse_request",
    "route_request",
    "static_files",
]

logger = logging.getLogger(__name__)

# How much one receive asks the transport for while reading a request.
RECEIVE_SIZE = 16 * 1024

RemoteAddress = tuple[str, int]


@attrs.frozen
class HttpRequest:
    """One HTTP request, read in full before its handler runs.

    `path` is percent-decoded and has no query. `query` keeps the first value
    of each parameter. `headers` has lower-case names; a repeated header's
    values are joined with ", " (RFC 9110 §5.3).
    """

    method: str
    path: str
    query: Mapping[str, str] = attrs.field(factory=lambda: MappingProxyType({}))
    headers: Mapping[str, str] = attrs.field(factory=lambda: MappingProxyType({}))
    body: bytes = b""
    remote: RemoteAddress | None = None
    #: "1.1" or "1.0".
    http_version: str = "1.1"


@attrs.frozen
class HttpResponse:
    """A complete response. Content-Length is always set from `body`."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(
        cls, text: str, *, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """Build a plain-text UTF-8 response."""
        return cls(status=status, body=text.encode(), headers=headers)


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@attrs.frozen
class HttpRoute:
    """Serve `path` with `handler` for the given methods.

    With `prefix=True`, `path` must end in "/" and the route serves every
    path below it; the longest matching prefix wins, an exact route beats any
    prefix. A route that allows GET also answers HEAD: the handler sees the
    HEAD request and the gateway drops the body it returns. `max_body_size`,
    if set, replaces the gateway's limit on request bodies for this route.
    """

    path: str = attrs.field()
    handler: HttpHandler
    methods: frozenset[str] = frozenset({"GET"})
    prefix: bool = False
    max_body_size: int | None = None

    @path.validator
    def _check_path(self, _attribute: attrs.Attribute[str], path: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        if self.prefix and not path.endswith("/"):
            raise ValueError(f"prefix route path must end with '/': {path!r}")


class HttpError(Exception):
    """A request that cannot be served; answered with `status` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HeadTimeoutError(HttpError):
    """A request head did not arrive in time (slowloris or a stalled peer)."""

    def __init__(self, message: str) -> None:
        super().__init__(http.HTTPStatus.REQUEST_TIMEOUT, message)


class HttpConnection:
    """One HTTP/1.1 connection on a byte stream, driven by h11.

    The caller owns `stream` and closes it; this object only reads requests
    and writes responses. It is not safe for concurrent use.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_head_size: int) -> None:
        self.stream = stream
        self._max_head_size = max_head_size
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        # The request being answered is a HEAD: its response has no body
        # (RFC 9110 §9.3.2), refusals included; h11 refuses to send one.
        self._head = False

    async def next_request(self, *, timeout: float) -> h11.Request | None:
        """Read the next request head, or return None if the peer closed first.

        Raises HttpError for a malformed head (400) or one larger than
        `max_head_size` (431), and HeadTimeoutError if the head is not
        complete within `timeout` after some of it arrived. A connection that
        sends nothing at all for `timeout` counts as closed and returns None.
        """
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        self._head = False  # a refusal of what comes next is no answer to the last HEAD
        received_any = False
        with trio.move_on_after(timeout):
            while True:
                event = self._next_event()
                if isinstance(event, h11.Request):
                    self._head = event.method == b"HEAD"
                    _check_request(event, self._max_head_size)
                    return event
                if isinstance(event, h11.ConnectionClosed):
                    return None
                data = await self.stream.receive_some(RECEIVE_SIZE)
                received_any = received_any or bool(data)
                self._h11.receive_data(bytes(data))
        if received_any:
            raise HeadTimeoutError(f"request head not complete within {timeout}s")
        return None

    async def read_body(self, *, max_size: int, timeout: float) -> bytes:
        """Read the rest of the current request's body.

        Raises HttpError 413 past `max_size` bytes and 408 after `timeout`.
        """
        if self._h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(timeout):
            while True:
                event = self._next_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > max_size:
                        raise HttpError(
                            http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"request body larger than {max_size} bytes",
                        )
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                elif event is h11.PAUSED:
                    # An upgrade request we decided to serve as plain HTTP:
                    # it has no body (RFC 9110 §7.8 lets a server ignore Upgrade).
                    return b""
                elif isinstance(event, h11.ConnectionClosed):
                    raise HttpError(http.HTTPStatus.BAD_REQUEST, "connection closed in body")
                else:
                    self._h11.receive_data(bytes(await self.stream.receive_some(RECEIVE_SIZE)))
        raise HttpError(http.HTTPStatus.REQUEST_TIMEOUT, f"body not complete within {timeout}s")

    def accept_upgrade(self, headers: Sequence[tuple[str, str]]) -> tuple[bytes, bytes]:
        """Accept an upgrade request: return the 101 response to write, and the bytes after.

        Call after `next_request` returned a request asking for a protocol
        switch; from here on the stream belongs to the new protocol, which
        writes the response first. Raises HttpError 400 for an upgrade
        request that carries a body.
        """
        event = self._next_event()
        if isinstance(event, h11.EndOfMessage):
            event = self._next_event()
        if event is not h11.PAUSED:
            raise HttpError(http.HTTPStatus.BAD_REQUEST, "upgrade request with a body")
        response = self._h11.send(h11.InformationalResponse(status_code=101, headers=list(headers)))
        data, _closed = self._h11.trailing_data
        return response or b"", bytes(data)

    async def send_response(self, response: HttpResponse, *, head_only: bool = False) -> None:
        """Write `response`; with `head_only`, or to a HEAD request, everything but the body."""
        headers = [(name.lower(), value) for name, value in response.headers]
        if response.content_type is not None:
            headers.append(("content-type", response.content_type))
        headers.append(("content-length", str(len(response.body))))
        try:
            phrase = http.HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        # One write for the whole response: a long-polling client waits on it.
        data = (
            self._h11.send(
                h11.Response(status_code=response.status, headers=headers, reason=phrase.encode())
            )
            or b""
        )
        if response.body and not (head_only or self._head):
            data += self._h11.send(h11.Data(data=response.body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def send_error(
        self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Answer with `status` and a plain-text `message`, then expect to close.

        Does nothing if a response is already under way; h11 then cannot
        frame another one.
        """
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        await self.send_response(
            HttpResponse.text(
                message + "\n", status=status, headers=(*headers, ("connection", "close"))
            )
        )

    @property
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection."""
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as err:
            raise HttpError(err.error_status_hint, str(err)) from err

    async def _send(self, event: h11.Event) -> None:
        await self.stream.send_all(self._h11.send(event) or b"")


def _check_request(request: h11.Request, max_head_size: int) -> None:
    """Refuse what h11 lets through but a careful server must not serve.

    A head larger than `max_head_size` that arrived complete in pieces (h11
    checks its limit only while a head is incomplete: 431); HTTP versions
    other than 1.0 and 1.1 (505); a request with both Content-Length and
    Transfer-Encoding (400, and the connection closes: RFC 9112 §6.1, the
    shape of request smuggling).
    """
    size = len(request.method) + len(request.target) + 12
    size += sum(len(name) + len(value) + 4 for name, value in request.headers)
    if size > max_head_size:
        raise HttpError(
            http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"request head larger than {max_head_size} bytes",
        )
    if request.http_version not in (b"1.0", b"1.1"):
        raise HttpError(
            http.HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            f"HTTP/{request.http_version.decode('ascii', 'replace')} is not supported; "
            "use HTTP/1.1",
        )
    names = {name for name, _value in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise HttpError(
            http.HTTPStatus.BAD_REQUEST, "Content-Length and Transfer-Encoding together"
        )


def parse_request(request: h11.Request, *, remote: RemoteAddress | None) -> HttpRequest:
    """Turn an h11 request head into an `HttpRequest` without a body."""
    target = urllib.parse.urlsplit(request.target.decode("ascii", errors="replace"))
    query: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(target.query, keep_blank_values=True):
        query.setdefault(name, value)
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return HttpRequest(
        method=request.method.decode("ascii"),
        path=urllib.parse.unquote(target.path) or "/",
        query=MappingProxyType(query),
        headers=MappingProxyType(headers),
        remote=remote,
        http_version=request.http_version.decode("ascii"),
    )


async def route_request(routes: Sequence[HttpRoute], request: HttpRequest) -> HttpResponse:
    """Answer `request` with the matching route: 404 without one, 405 for a wrong method."""
    route = match_route(routes, request.path)
    if route is None:
        return HttpResponse.text("not found\n", status=http.HTTPStatus.NOT_FOUND)
    methods = route.methods | ({"HEAD"} if "GET" in route.methods else set())
    if request.method not in methods:
        return HttpResponse.text(
            "method not allowed\n",
            status=http.HTTPStatus.METHOD_NOT_ALLOWED,
            headers=(("allow", ", ".join(sorted(methods))),),
        )
    return await route.handler(request)


def match_route(routes: Iterable[HttpRoute], path: str) -> HttpRoute | None:
    """Return the route serving `path`: an exact one, else the longest prefix."""
    best: HttpRoute | None = None
    for route in routes:
        if not route.prefix and route.path == path:
            return route
        longer = best is None or len(route.path) > len(best.path)
        if route.prefix and path.startswith(route.path) and longer:
            best = route
    return best


# Types the browser must not guess (X-Content-Type-Options: nosniff is sent);
# mimetypes fills in the rest from the platform's table.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}


def content_type_for(name: str) -> str:
    """Return the Content-Type to serve a file called `name` with."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _encoding = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def static_files(
    directory: importlib.resources.abc.Traversable, *, prefix: str, index: str = "index.html"
) -> HttpRoute:
    """Serve the files under `directory` below the URL path `prefix`.

    `directory` is any Traversable: a `pathlib.Path`, or a package directory
    from `importlib.resources.files("hub") / "static"`. A request ending in
    "/" gets `index`. Path segments that are empty, ".", "..", hidden (leading
    "."), or contain a backslash or NUL are refused with 404, after
    percent-decoding, so no request reaches outside `directory`.

    Responses carry a strong ETag of the content and `Cache-Control:
    no-cache`: browsers revalidate every time and get 304 when unchanged.
    Files are read on each request; this is for a handful of small assets.
    """

    async def serve_static(request: HttpRequest) -> HttpResponse:
        relative = request.path[len(prefix) :]
        if relative == "" or relative.endswith("/"):
            relative += index
        resource = _resolve(directory, relative.split("/"))
        if resource is None:
            return HttpResponse.text("not found\n", status=http.HTTPStatus.NOT_FOUND)
        body = await trio.to_thread.run_sync(resource.read_bytes)
        etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
        headers = (
            ("etag", etag),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
        )
        if etag in _etags(request.headers.get("if-none-match", "")):
            return HttpResponse(
                status=http.HTTPStatus.NOT_MODIFIED, content_type=None, headers=headers
            )
        return HttpResponse(
            body=body, content_type=content_type_for(resource.name), headers=headers
        )

    return HttpRoute(prefix, serve_static, prefix=True)


def _resolve(
    directory: importlib.resources.abc.Traversable, segments: list[str]
) -> importlib.resources.abc.Traversable | None:
    resource = directory
    for segment in segments:
        if not segment or segment.startswith(".") or "\\" in segment or "\0" in segment:
            return None
        resource = resource / segment
    try:
        return resource if resource.is_file() else None
    except OSError:
        # A segment the file system refuses (ENAMETOOLONG, say) names nothing.
        return None


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


# How long a closing connection waits for the peer to finish sending, and how
# much it reads at a time while discarding.
LINGER_SECONDS = 2.0
_LINGER_RECEIVE_SIZE = 64 * 1024


async def close_lingering(stream: trio.abc.Stream, *, timeout: float = LINGER_SECONDS) -> None:
    """Close `stream` so the last bytes sent reach the peer (RFC 9112 §9.6).

    Closing a socket that still has unread input makes the kernel answer
    with RST, and an RST can destroy a response or Close frame still in
    flight. So: half-close our side, discard what the peer still sends until
    it closes or `timeout` passes, then close. Under TLS the TCP stream below
    is half-closed and drained: the bytes are discarded either way, and
    clients treat a TCP EOF as the end of the TLS session (which is what
    `https_compatible` streams expect). Never raises for a broken or closed
    stream; cancellation skips straight to the close.
    """
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(transport, trio.SocketStream) and transport.socket.fileno() == -1:
        return  # closed already (a WebSocket transport closes its own stream)
    with trio.move_on_after(timeout):
        try:
            if isinstance(transport, trio.abc.HalfCloseableStream):
                await transport.send_eof()
                while await transport.receive_some(_LINGER_RECEIVE_SIZE):
                    # Discarded: the peer's input no longer matters, only
                    # that it is read so the kernel does not reset.
                    continue
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            # The peer is gone or the stream is already closing: nothing left to protect.
            logger.debug("lingering close cut short on %r", stream)
        finally:
            await trio.aclose_forcefully(stream)
