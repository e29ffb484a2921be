"""An in-memory transport: a session and a client in one process, no socket.

    transport, client = memory_transport_pair("triohub.v1.json")
    # give `transport` to the hub (HubRuntime.serve_transport), then:
    client.send(message); reply = await client.receive()

`buffer` plays the kernel's socket buffer: that many messages are taken
without waiting; past it, messages wait in the transport's outbox until the
client reads, as they would on a socket whose peer reads slowly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable

import trio

from hub.protocol import Message
from hub.transport.base import DEFAULT_OUTBOX_CAPACITY, Outbox, Transport, TransportClosed, Wire

# How long closing waits for the client to take what is queued.
_CLOSE_SECONDS = 5.0

__all__ = ["MemoryClient", "MemoryTransport", "memory_transport_pair"]


class MemoryTransport(Transport):
    """The session's end of an in-memory pair (see the module docstring)."""

    __slots__ = (
        "_close",
        "_flushing",
        "_from_client",
        "_in_flight",
        "_notified",
        "_outbox",
        "_sending_reliable",
        "_to_client",
        "on_backlog",
        "subprotocol",
        "written",
    )

    def __init__(
        self,
        subprotocol: str | None,
        from_client: trio.MemoryReceiveChannel[Message],
        to_client: trio.MemorySendChannel[Message],
        *,
        outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY,
    ) -> None:
        self.subprotocol = subprotocol
        self.on_backlog = None
        self._from_client = from_client
        self._to_client = to_client
        self._outbox = Outbox(outbox_capacity)
        self._notified = False
        self._flushing = False
        # The message a flush is handing over, and whether it is not a latest-value one.
        self._in_flight: Wire | None = None
        self._sending_reliable = False
        self._close: TransportClosed | None = None
        #: Messages handed to the client so far.
        self.written = 0

    @property
    def backlog(self) -> bool:
        return self._in_flight is not None or bool(self._outbox)

    @property
    def behind(self) -> bool:
        in_flight = self._in_flight is not None and self._sending_reliable
        return in_flight or self._outbox.reliable > 0

    def release_keys(self, match: Callable[[Hashable], bool]) -> None:
        if self._outbox:
            self._outbox.release_keys(match)

    @property
    def queued(self) -> int:
        return len(self._outbox) + (self._in_flight is not None)

    @property
    def closing(self) -> bool:
        return self._close is not None

    async def receive(self) -> Message:
        if self._close is not None:
            raise self._close
        try:
            return await self._from_client.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._close is None:
                self._close = TransportClosed(1006, "client went away")
            raise self._close from None

    def send(self, wire: Wire, key: Hashable | None = None) -> bool:
        if self._close is not None:
            return False
        if not self._outbox and not self._flushing and self._in_flight is None:
            try:
                self._to_client.send_nowait(wire.message)
                self.written += 1
                return False
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        replaced = self._outbox.push(wire, key)
        if not self._notified:
            self._notified = True
            if self.on_backlog is not None:
                self.on_backlog()
        return replaced

    async def flush(self) -> None:
        # While taken messages are on their way, a send must queue behind them.
        self._flushing = True
        try:
            while self._in_flight is not None or self._outbox:
                if self._in_flight is None:
                    # One at a time: what waits stays in the outbox, where a
                    # newer latest-value message still replaces it.
                    reliable = self._outbox.reliable
                    (self._in_flight,) = self._outbox.take(1)
                    self._sending_reliable = self._outbox.reliable < reliable
                try:
                    await self._to_client.send(self._in_flight.message)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._outbox.clear()
                    self._in_flight = None
                    raise TransportClosed(1006, "client went away") from None
                # Cancelled while the client did not read: the message stays
                # in flight, first out on the next flush.
                self._in_flight = None
                self._sending_reliable = False
                self.written += 1
        finally:
            self._flushing = False
        self._notified = False

    def close(self, code: int, reason: str = "", *, discard: bool = False) -> None:
        if self._close is not None:
            return
        self._close = TransportClosed(code, reason)
        if discard:
            self._outbox.clear()
            self._in_flight = None
        # Wakes a receive in progress: the session learns at once.
        self._from_client.close()

    @property
    def closed_with(self) -> TransportClosed | None:
        """How the transport closed (or is closing); None while open."""
        return self._close

    async def aclose(self) -> None:
        self.close(1000, "")
        with trio.move_on_after(_CLOSE_SECONDS):
            with contextlib.suppress(TransportClosed):
                await self.flush()
        # The client reads what was written, then learns the close code.
        self._to_client.close()


class MemoryClient:
    """The client's end of an in-memory pair."""

    def __init__(
        self,
        transport: MemoryTransport,
        to_server: trio.MemorySendChannel[Message],
        from_server: trio.MemoryReceiveChannel[Message],
    ) -> None:
        self._transport = transport
        self._to_server = to_server
        self._from_server = from_server

    def send(self, message: Message) -> None:
        """Send `message` to the session; raises TransportClosed once it is gone."""
        try:
            self._to_server.send_nowait(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed(1006, "the session is gone") from None

    async def receive(self) -> Message:
        """The next message from the session; raises TransportClosed with its close code."""
        try:
            return await self._from_server.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            closed = self._transport.closed_with or TransportClosed(1006, "the session is gone")
            raise closed from None

    def receive_nowait(self) -> Message | None:
        """The next message from the session if one is there already, else None.

        Raises TransportClosed, as `receive` does, once the session is gone.
        """
        try:
            return self._from_server.receive_nowait()
        except trio.WouldBlock:
            return None
        except (trio.EndOfChannel, trio.ClosedResourceError):
            closed = self._transport.closed_with or TransportClosed(1006, "the session is gone")
            raise closed from None

    def close(self) -> None:
        """Leave, as a client dropping its connection would."""
        self._to_server.close()


def memory_transport_pair(
    subprotocol: str | None, *, buffer: int = 64, outbox_capacity: int = DEFAULT_OUTBOX_CAPACITY
) -> tuple[MemoryTransport, MemoryClient]:
    """A connected (transport, client) pair; `buffer` messages go through without waiting."""
    to_server, from_client = trio.open_memory_channel[Message](math.inf)
    to_client, from_server = trio.open_memory_channel[Message](buffer)
    transport = MemoryTransport(
        subprotocol, from_client, to_client, outbox_capacity=outbox_capacity
    )
    return transport, MemoryClient(transport, to_server, from_server)
