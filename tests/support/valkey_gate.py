"""A TCP proxy in front of Valkey that stops a client's pipeline between two of its commands.

Redis runs one client's pipelined commands one after another, but another
client's command can come between two of them. A test that needs that
interleaving at a chosen place (a node subscribing in the middle of another
node's batch) cannot get it by timing; this proxy makes it:

    gate = ValkeyGate(server.port)
    await nursery.start(gate.serve)          # clients connect to gate.url
    gate.hold_after(b"marker")
    ...                                      # a client pipelines commands
    await gate.holding.wait()                # the command carrying b"marker" has run
    ...                                      # another client does something meanwhile
    gate.release()                           # the rest of the pipeline goes on

It reads the RESP protocol both ways (RESP2 and RESP3) only to find where
each command ends and to count the answers: once the command carrying the
marker has been passed on, it holds the client's next bytes until Redis has
answered every command passed on so far, which proves the marked one has
run, and then until `release`.
"""

from __future__ import annotations

import contextlib

import attrs
import trio

__all__ = ["ValkeyGate"]


def value_end(data: bytes | bytearray, start: int) -> int | None:
    """Where the RESP value at `start` ends, or None if `data` holds only part of it."""
    line_end = data.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, header, after = data[start : start + 1], data[start + 1 : line_end], line_end + 2
    if kind in (b"$", b"!", b"="):  # bulk: its length, then its bytes
        length = int(header)
        if length < 0:
            return after  # RESP2's null
        end = after + length + 2
        return end if len(data) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):  # aggregates: their count, then their values
        count = int(header)
        if count < 0:
            return after
        for _ in range(2 * count if kind in (b"%", b"|") else count):
            end = value_end(data, after)
            if end is None:
                return None
            after = end
        # An attribute comes before the value it describes: one answer, both.
        return value_end(data, after) if kind == b"|" else after
    return after  # one line: + - : _ # , (


@attrs.define(eq=False)
class _Link:
    """One client connection through the gate: what it sent, what Redis answered."""

    commands: int = 0
    answers: int = 0
    answered: trio.Event = attrs.Factory(trio.Event)

    def count_answer(self) -> None:
        self.answers += 1
        self.answered.set()
        self.answered = trio.Event()


@attrs.define(eq=False)
class ValkeyGate:
    """The proxy (see the module docstring); Valkey listens on `target_port`."""

    target_port: int
    port: int = 0
    #: Set once a connection has passed on the marked command, Redis has run
    #: it, and the connection's next commands are held.
    holding: trio.Event = attrs.Factory(trio.Event)
    _marker: bytes | None = None
    _released: trio.Event = attrs.Factory(trio.Event)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold_after(self, marker: bytes) -> None:
        """Hold the next commands of the connection that sends a command carrying `marker`."""
        self._marker = marker
        self.holding = trio.Event()
        self._released = trio.Event()

    def release(self) -> None:
        self._released.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._released.set()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        link = _Link()
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", self.target_port) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._commands, client, server, link, nursery.cancel_scope)
            nursery.start_soon(self._answers, server, client, link, nursery.cancel_scope)

    async def _commands(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        link: _Link,
        both: trio.CancelScope,
    ) -> None:
        buffer = bytearray()
        # Either side closing ends both.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some():
                buffer += data
                while (end := value_end(buffer, 0)) is not None:
                    command = bytes(buffer[:end])
                    del buffer[:end]
                    await sink.send_all(command)
                    link.commands += 1
                    if self._marker is not None and self._marker in command:
                        self._marker = None
                        while link.answers < link.commands:
                            await link.answered.wait()
                        self.holding.set()
                        await self._released.wait()
        both.cancel()

    async def _answers(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        link: _Link,
        both: trio.CancelScope,
    ) -> None:
        buffer = bytearray()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some():
                await sink.send_all(data)
                buffer += data
                while (end := value_end(buffer, 0)) is not None:
                    del buffer[:end]
                    link.count_answer()
        both.cancel()
