"""The transport seam: how encoded messages reach one client and come back.

A session (the connection actor) holds one `Transport`. It reads the
client's messages with `receive()` and hands it `Wire`s to deliver with
`send()`, which never waits: a transport writes at once when it can, and
otherwise keeps what waits in its outbox (bounded; latest-value entries
replaced in place) until `flush()` is awaited by whoever owns the writing.
Closing is `close(code, reason)`, a request that returns at once, then
`aclose()` to finish and release what the transport holds.

The WebSocket transport is the first implementation (`hub.transport.websocket`);
`hub.transport.memory` serves tests with no socket at all.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final, NoReturn

import attrs

from hub.errors import HubError
from hub.protocol import Message

__all__ = [
    "DEFAULT_OUTBOX_CAPACITY",
    "Outbox",
    "OutboxFullError",
    "Transport",
    "TransportClosed",
    "Wire",
]

# Messages queued for one client beyond what its socket took. A client this
# far behind is evicted (1013) so that it cannot stall the fan-out for others.
DEFAULT_OUTBOX_CAPACITY: Final = 1024


class Wire:
    """One encoded message on its way to clients, shared by all who get it.

    A broadcast makes one Wire per codec in use and hands the same object
    to every subscriber of that codec; each transport kind turns it into its
    own bytes once (`framed`, a cache a transport fills on first use), so a
    message is encoded once and framed once however many clients get it.
    """

    __slots__ = ("framed", "message")

    def __init__(self, message: Message, framed: bytes | None = None) -> None:
        self.message = message
        self.framed = framed

    def __repr__(self) -> str:
        return f"Wire({self.message!r})"


class TransportClosed(HubError):
    """The transport is closed; `code` and `reason` say how (RFC 6455 codes)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"transport closed ({code}: {reason})" if reason else f"closed ({code})")
        self.code = code
        self.reason = reason


class OutboxFullError(HubError):
    """A client's outbox is full: it reads too slowly to keep up."""


class _Slot:
    """A latest-value place in an outbox: the newest Wire for its key."""

    __slots__ = ("key", "wire")

    def __init__(self, key: Hashable, wire: Wire) -> None:
        self.key = key
        self.wire = wire


@attrs.define(eq=False)
class Outbox:
    """What waits for one client, in order, with latest-value entries replaced in place.

    `push` with a key replaces a queued entry of the same key (game state,
    cursors: the client gets the newest, never a backlog); without one it
    appends. At most `capacity` entries wait; past that `push` raises
    OutboxFullError and the owner decides (the hub evicts the client).
    `reliable` counts the entries that are not latest-value ones: a client
    with only latest-value entries waiting is slow, not behind.
    """

    capacity: int = DEFAULT_OUTBOX_CAPACITY
    _entries: deque[Wire | _Slot] = attrs.Factory(deque)
    _slots: dict[Hashable, _Slot] = attrs.Factory(dict)
    _reliable: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def reliable(self) -> int:
        """How many waiting entries are not latest-value ones (each must be written)."""
        return self._reliable

    def push(self, wire: Wire, key: Hashable | None = None) -> bool:
        """Queue `wire`; return True if it replaced a queued one of the same key."""
        if key is not None:
            slot = self._slots.get(key)
            if slot is not None:
                slot.wire = wire
                return True
        if len(self._entries) >= self.capacity:
            raise OutboxFullError(f"more than {self.capacity} messages waiting")
        if key is None:
            self._entries.append(wire)
            self._reliable += 1
        else:
            slot = self._slots[key] = _Slot(key, wire)
            self._entries.append(slot)
        return False

    def push_control(self, wire: Wire, key: Hashable | None = None) -> None:
        """Append past the capacity: a control message (pong, Close) is never refused.

        With `key`, a queued one of the same key is replaced instead (only the
        newest pong need be sent, RFC 6455 §5.5.3): a peer that pings and
        never reads cannot grow the outbox past one of each.
        """
        if key is not None:
            slot = self._slots.get(key)
            if slot is not None:
                slot.wire = wire
                return
            slot = self._slots[key] = _Slot(key, wire)
            self._entries.append(slot)
            return
        self._entries.append(wire)
        self._reliable += 1

    def release_keys(self, match: Callable[[Hashable], bool]) -> None:
        """Queued latest-value entries whose key matches keep their place, but are no
        longer replaced (their membership ended: a newer one must not overtake it)."""
        for key in [key for key in self._slots if match(key)]:
            del self._slots[key]

    def take(self, limit: int) -> list[Wire]:
        """Remove and return up to `limit` entries, oldest first."""
        taken: list[Wire] = []
        entries = self._entries
        while entries and len(taken) < limit:
            entry = entries.popleft()
            if type(entry) is _Slot:
                if self._slots.get(entry.key) is entry:
                    del self._slots[entry.key]
                taken.append(entry.wire)
            else:
                self._reliable -= 1
                taken.append(entry)  # type: ignore[arg-type]
        return taken

    def clear(self) -> int:
        """Drop everything waiting; return how many entries were dropped."""
        count = len(self._entries)
        self._entries.clear()
        self._slots.clear()
        self._reliable = 0
        return count


class Transport(abc.ABC):
    """How encoded messages reach one client and come back (see the module docstring).

    One task receives; any code may `send` (it never waits, so messages go
    out in the order they were sent, whoever sent them); one task at a time
    awaits `flush`. `on_backlog` is called once each time the transport goes
    from "everything written" to "something waits", so the owner can arrange
    a `flush`.
    """

    #: The subprotocol (codec) the client speaks, None if none was chosen.
    subprotocol: str | None
    #: Called when something starts waiting in the outbox (see the class docstring).
    on_backlog: Callable[[], None] | None

    @abc.abstractmethod
    async def receive(self) -> Message:
        """Wait for the client's next message.

        Raises TransportClosed once the transport is closed, by either side,
        with the code and reason of the close.
        """

    async def serve(self, on_message: Callable[[Message], None]) -> NoReturn:
        """Hand every message the client sends to `on_message`, in order, until it closes.

        Raises TransportClosed, as `receive` does, when the transport is
        closed. `on_message` must not wait. A transport may do this more
        cheaply than a loop over `receive` (the WebSocket one does).
        """
        while True:
            on_message(await self.receive())

    @abc.abstractmethod
    def send(self, wire: Wire, key: Hashable | None = None) -> bool:
        """Deliver `wire` without waiting: written now if possible, else queued.

        With `key`, a queued message of the same key is replaced by this one
        (and True is returned: the older one will never be written). Raises
        OutboxFullError if too much is queued already. After `close`,
        messages are dropped.
        """

    def send_message(self, message: Message) -> None:
        """Send one message of this client's own (a reply, an echo): `send(Wire(message))`."""
        self.send(Wire(message))

    @property
    @abc.abstractmethod
    def backlog(self) -> bool:
        """Whether something waits in the outbox to be written."""

    @property
    def behind(self) -> bool:
        """Whether a message that is not a latest-value one waits to be written.

        A client whose backlog is only latest-value entries (game state,
        cursors) costs a bounded outbox however long it takes: the session's
        write timeout evicts only a client that is behind. This default,
        for a transport that does not tell them apart, is `backlog`.
        """
        return self.backlog

    @abc.abstractmethod
    def release_keys(self, match: Callable[[Hashable], bool]) -> None:
        """Stop replacing queued latest-value messages whose key matches (see `Outbox`)."""

    @property
    @abc.abstractmethod
    def queued(self) -> int:
        """How many messages wait in the outbox (one partly written counts too)."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything queued is written.

        Raises TransportClosed if the client is gone, with what waits dropped.
        """

    @abc.abstractmethod
    def close(self, code: int, reason: str = "", *, discard: bool = False) -> None:
        """Start closing with `code` and `reason`; return at once.

        What is queued is still written first, unless `discard` (a client
        evicted for falling behind gets its Close without the backlog).
        `receive` then raises TransportClosed once the close is complete.
        Closing a closed transport does nothing.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Finish closing (bounded in time) and release what the transport holds."""

    @property
    @abc.abstractmethod
    def closing(self) -> bool:
        """Whether `close` was called or the client left."""
