"""A channel: one topic of a client, across every connection the client makes.

The channel holds what the application has not taken yet. Pushes that
arrive before the application attaches a handler or starts iterating (the
pushes that follow a join's Reply at once, such as a room's history) are
held, up to HELD_PUSHES, and handed over when it does: in order, once the
application's task next waits (so several `on` calls in a row all see them).
One task per channel (in the client's nursery) runs the handlers, so a slow
handler holds up its own channel only, and then, as its buffer fills, the
connection: the server disconnects a client too far behind (1013), which
then reconnects and recovers.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import attrs
import trio

from hub.client.errors import ClientError
from hub.protocol import Ended, Payload, Push

if TYPE_CHECKING:
    from hub.client.connection import Client

__all__ = ["HELD_PUSHES", "PUSH_BUFFER", "Channel", "ChannelState", "Handler"]

logger = logging.getLogger(__name__)

# Pushes held for a channel the application has not taken yet (no handler,
# no iteration). Past this the oldest is dropped, counted in `dropped`, and
# logged once: a channel nobody listens to must not stall the connection.
HELD_PUSHES: Final = 1024

# Pushes waiting for the channel's handlers, and then for its `async for`.
# When full the connection's reader waits, which slows this connection only
# (and the server disconnects us if we fall far behind): keep handlers quick.
PUSH_BUFFER: Final = 256

Handler = Callable[[Payload], Awaitable[None] | None]


class ChannelState(enum.StrEnum):
    """Where a channel stands."""

    IDLE = "idle"
    """Not joined yet (or the join failed): `join()` it."""
    JOINING = "joining"
    """The Join is sent, or waits for the connection."""
    JOINED = "joined"
    """A member: pushes arrive."""
    REJOINING = "rejoining"
    """The connection dropped: joined again, with recovery, once it is back."""
    LEFT = "left"
    """Left by the application; done."""
    ENDED = "ended"
    """Ended by the server (`ended`), or a rejoin was refused (`error`); done."""


@attrs.frozen
class _Rejoined:
    """A rejoin's ok Reply, handed to `on_rejoin` handlers in order with the pushes."""

    payload: Payload


@attrs.define(eq=False)
class Channel:
    """One topic: join it, listen to its pushes, publish and call (get it from `Client.channel`).

    Attach handlers with `on` before or after the join: what arrives before
    the first handler (or `async for`) is held for it. `async for push in
    channel` yields each Push (the frame: `event`, `payload`, `offset`) until
    the channel is done. After a reconnect the client joins the channel
    again with its last `epoch` and `offset`, so the server replays what it
    missed; `on_rejoin` handlers then get the rejoin's Reply payload, whose
    `recovered` says whether that was everything (if False, refetch state).
    """

    client: Client
    topic: str
    params: dict[str, Payload] = attrs.Factory(dict)
    state: ChannelState = ChannelState.IDLE
    #: The payload of the last ok join Reply (the service's welcome, with the hub's keys).
    join_reply: Payload = None
    #: The topic's history epoch and the last offset this channel received, for rejoins.
    epoch: str | None = None
    offset: int | None = None
    #: Whether the last rejoin recovered everything missed (None before any rejoin).
    recovered: bool | None = None
    #: The server's Ended frame, if it ended the membership.
    ended: Ended | None = None
    #: Why a rejoin failed, if it did.
    error: ClientError | None = None
    #: Pushes dropped because nobody took the channel (see HELD_PUSHES).
    dropped: int = 0
    _handlers: dict[str, list[Handler]] = attrs.Factory(dict)
    _rejoin_handlers: list[Handler] = attrs.Factory(list)
    _held: deque[Push | _Rejoined] = attrs.Factory(deque)
    _taken: trio.Event = attrs.Factory(trio.Event)
    _iterating: bool = False
    _done: bool = False
    _inbox_send: trio.MemorySendChannel[Push | _Rejoined] = attrs.field(init=False)
    _inbox: trio.MemoryReceiveChannel[Push | _Rejoined] = attrs.field(init=False)
    _iter_send: trio.MemorySendChannel[Push] = attrs.field(init=False)
    _iter: trio.MemoryReceiveChannel[Push] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._inbox_send, self._inbox = trio.open_memory_channel[Push | _Rejoined](PUSH_BUFFER)
        self._iter_send, self._iter = trio.open_memory_channel[Push](PUSH_BUFFER)

    # --- the application's side ---------------------------------------------------

    def on(self, event: str, handler: Handler) -> Channel:
        """Call `handler(payload)` (sync or async) for each `event` Push; `*` for every event.

        Pushes held until now go to it first. Returns the channel, for chaining.
        """
        self._handlers.setdefault(event, []).append(handler)
        self._taken.set()
        return self

    def on_rejoin(self, handler: Handler) -> Channel:
        """Call `handler(reply_payload)` after each automatic rejoin, in order with the pushes.

        `reply_payload["recovered"]` is False when what was missed could not
        all be replayed: refetch the state you keep from this topic. Like
        `on`, it takes the channel: held pushes go to the handlers then.
        """
        self._rejoin_handlers.append(handler)
        self._taken.set()
        return self

    def __aiter__(self) -> AsyncIterator[Push]:
        self._iterating = True
        self._taken.set()
        return self._iter.__aiter__()

    async def join(
        self, params: Mapping[str, Payload] | None = None, *, timeout: float | None = None
    ) -> Channel:
        """Join the topic; return the channel once the server said yes.

        Raises ReplyError if refused (`join_refused`, `unknown_topic`, ...),
        RequestTimeoutError if no answer came within `timeout` (the client's
        `request_timeout` by default; a join waits for the connection too).
        """
        if self.state is not ChannelState.IDLE:
            raise ClientError(
                f"channel {self.topic!r} is {self.state}; get a new one to join again",
                code="already_joined" if self._active else "closed",
            )
        self.params = dict(params or {})
        await self.client._join(self, timeout=timeout)
        return self

    async def publish(
        self,
        event: str,
        payload: Payload = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish `event`; see `Client.publish`."""
        await self.client.publish(self.topic, event, payload, ack=ack, timeout=timeout)

    async def call(
        self, event: str, payload: Payload = None, *, timeout: float | None = None
    ) -> Payload:
        """Call the topic's service; see `Client.call`."""
        return await self.client.call(self.topic, event, payload, timeout=timeout)

    async def history(
        self,
        *,
        after: int = 0,
        epoch: str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> Payload:
        """Read the topic's kept history after `after` (docs/protocol.md, "Recovery")."""
        request: dict[str, Payload] = {"after": after}
        if epoch is not None:
            request["epoch"] = epoch
        if limit is not None:
            request["limit"] = limit
        return await self.call("$history", request, timeout=timeout)

    async def leave(self, *, timeout: float | None = None) -> None:
        """Leave the topic; no push is delivered after this returns."""
        await self.client._leave(self, timeout=timeout)

    # --- the client's side -----------------------------------------------------------

    @property
    def _active(self) -> bool:
        return self.state in (ChannelState.JOINING, ChannelState.JOINED, ChannelState.REJOINING)

    def _take_join_reply(self, payload: Payload) -> None:
        """Note the position an ok join Reply gives (the reader calls this, in order)."""
        self.join_reply = payload
        if not isinstance(payload, Mapping):
            return
        epoch, offset = payload.get("epoch"), payload.get("offset")
        if isinstance(epoch, str) and type(offset) is int:
            self.epoch = epoch
            # A recovered join's missed pushes follow with their offsets;
            # otherwise the Reply's position is where this channel now stands.
            if payload.get("recovered") is not True:
                self.offset = offset

    async def _receive(self, item: Push | _Rejoined) -> None:
        """Take a push (or a rejoin's news) from the connection's reader, in order."""
        if self._done:
            return
        if type(item) is Push and item.offset is not None:
            self.offset = item.offset
        if self._taken.is_set():
            # Closed (left, ended) while this waited for room: nobody wants it.
            with contextlib.suppress(trio.ClosedResourceError):
                await self._inbox_send.send(item)
            return
        if len(self._held) >= HELD_PUSHES:
            self._held.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "channel %r: nobody takes its pushes (no handler, no async for); "
                    "%d are held, older ones dropped",
                    self.topic,
                    HELD_PUSHES,
                )
        self._held.append(item)

    def _close(self) -> None:
        """No more pushes: handlers finish what they have, then iteration ends."""
        self._done = True
        self._inbox_send.close()
        if not self._taken.is_set():
            # Nobody took the channel: its task ends now, and what it held
            # waits for an `async for` that may still come.
            self._taken.set()

    async def _serve(self) -> None:
        """Hand pushes to the handlers and the iterator (the channel's task in the client)."""
        try:
            await self._taken.wait()
            if self._done and not (self._iterating or self._handlers or self._rejoin_handlers):
                for item in self._held:
                    if type(item) is Push:
                        with contextlib.suppress(trio.WouldBlock):
                            self._iter_send.send_nowait(item)
                self._held.clear()
                return
            while self._held:
                await self._dispatch(self._held.popleft())
            async for item in self._inbox:
                await self._dispatch(item)
        finally:
            self._iter_send.close()

    async def _dispatch(self, item: Push | _Rejoined) -> None:
        if type(item) is _Rejoined:
            for handler in self._rejoin_handlers:
                await _run(handler, item.payload)
            return
        assert type(item) is Push
        for handler in (*self._handlers.get(item.event, ()), *self._handlers.get("*", ())):
            await _run(handler, item.payload)
        if self._iterating:
            await self._iter_send.send(item)


async def _run(handler: Handler, payload: Payload) -> None:
    result = handler(payload)
    if inspect.isawaitable(result):
        await result
