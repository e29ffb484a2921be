"""A long-polling client for tests: real HTTP/1.1 requests (h11) over real sockets.

    client = await LongPollClient.open(port, subprotocol="triohub.v1.json")
    client.send('[1,1,"room:a",{"user":"ann"}]')
    messages = await client.poll()

One kept-alive connection for polls and one for everything else, as a
browser would use; `request` sends any request on a fresh connection.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping

import attrs
import h11
import trio

from hub.transport.longpoll import decode_body, encode_body


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpClient:
    """One kept-alive HTTP/1.1 connection to 127.0.0.1:`port`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> HttpClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if self._h11.our_state is h11.DONE:
            self._h11.start_next_cycle()
        all_headers = [("host", "127.0.0.1"), ("content-length", str(len(body)))]
        all_headers += list((headers or {}).items())
        data = self._h11.send(h11.Request(method=method, target=target, headers=all_headers))
        data = (data or b"") + (self._h11.send(h11.Data(data=body)) or b"") if body else data
        data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        await self.stream.send_all(data)
        status = 0
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {
                    name.decode(): value.decode("latin-1") for name, value in event.headers
                }
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, response_headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection mid-response")

    async def aclose(self) -> None:
        await self.stream.aclose()


class LongPollClient:
    """One long-polling session of the hub protocol (see the module docstring)."""

    def __init__(
        self, port: int, path: str, session: str, subprotocol: str, origin: str | None
    ) -> None:
        self.port = port
        self.path = path
        self.session = session
        self.subprotocol = subprotocol
        self.binary = subprotocol.endswith("msgpack")
        self.origin = origin
        #: Messages received so far (the `ack` of the next poll).
        self.seq = 0
        #: (code, reason) once a poll delivered the Close.
        self.closed: tuple[int, str] | None = None
        self._polls: HttpClient | None = None
        self._posts: HttpClient | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        subprotocol: str = "triohub.v1.json",
        path: str = "/poll",
        query: Mapping[str, str] | None = None,
        origin: str | None = None,
    ) -> LongPollClient:
        response = await open_session(
            port, path=path, offered=subprotocol, query=query, origin=origin
        )
        assert response.status == 200, response
        opened = json.loads(response.body)
        return cls(port, path, opened["session"], opened["subprotocol"], origin)

    @property
    def url(self) -> str:
        return f"{self.path}/{self.session}"

    def _headers(self) -> dict[str, str]:
        return {} if self.origin is None else {"origin": self.origin}

    async def poll(self, *, ack: int | None = None) -> list[str | bytes]:
        """One poll: the messages it brought (empty on the poll timeout)."""
        response = await self.poll_response(ack=ack)
        assert response.status == 200, response
        return self.take(response)

    async def poll_response(self, *, ack: int | None = None) -> Response:
        if self._polls is None:
            self._polls = await HttpClient.connect(self.port)
        ack = self.seq if ack is None else ack
        return await self._polls.request("GET", f"{self.url}?ack={ack}", headers=self._headers())

    def take(self, response: Response) -> list[str | bytes]:
        """The messages of a poll's answer; notes its seq and Close."""
        messages = decode_body(response.body, binary=self.binary, max_message_size=1 << 30)
        self.seq = int(response.headers["triohub-seq"])
        if "triohub-close-code" in response.headers:
            reason = urllib.parse.unquote(response.headers["triohub-close-reason"])
            self.closed = (int(response.headers["triohub-close-code"]), reason)
        return messages

    async def post(self, *messages: str | bytes) -> Response:
        return await self.post_body(encode_body(list(messages), binary=self.binary))

    async def post_body(self, body: bytes) -> Response:
        if self._posts is None:
            self._posts = await HttpClient.connect(self.port)
        return await self._posts.request("POST", self.url, body, headers=self._headers())

    async def delete(self) -> Response:
        if self._posts is None:
            self._posts = await HttpClient.connect(self.port)
        return await self._posts.request("DELETE", self.url, headers=self._headers())

    async def poll_until(self, predicate: object, *, polls: int = 50) -> list[str | bytes]:
        """Poll until a message satisfies `predicate` (a callable); return all received."""
        assert callable(predicate)
        received: list[str | bytes] = []
        for _ in range(polls):
            batch = await self.poll()
            received += batch
            if any(predicate(message) for message in batch) or self.closed:
                return received
        raise AssertionError(f"no matching message in {polls} polls: {received!r}")

    async def aclose(self) -> None:
        for client in (self._polls, self._posts):
            if client is not None:
                await client.aclose()


async def open_session(
    port: int,
    *,
    path: str = "/poll",
    offered: str = "triohub.v1.json",
    query: Mapping[str, str] | None = None,
    origin: str | None = None,
) -> Response:
    """POST to open a session; the raw response."""
    target = path + ("?" + urllib.parse.urlencode(dict(query)) if query else "")
    client = await HttpClient.connect(port)
    try:
        headers = {} if origin is None else {"origin": origin}
        return await client.request("POST", target, offered.encode(), headers=headers)
    finally:
        await client.aclose()


def encode_lines(*messages: str) -> bytes:
    return encode_body(list(messages), binary=False)
