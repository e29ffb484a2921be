"""The client: one logical connection to a hub, kept up across network failures.

A `Client` runs in the nursery its `open_client` (or `connect`) opens:

- the **link task** dials (a `Dial`: a WebSocket, or memory in `hub.testing`),
  then for each link: starts its reader and heartbeats, joins the channels
  that were joined before again (with their epoch and offset, so the server
  replays what they missed), sends what was buffered meanwhile, in order,
  and waits for the link to end; then waits a backoff delay (exponential,
  full jitter) and dials again, until the client is closed, the server
  closes with 1008 (policy: reconnecting unchanged would not help), or a
  dial is refused for good (an HTTP 4xx other than 429);
- the **reader** decodes what the server sends (`hub.protocol.ClientMachine`)
  and hands each Reply to the request waiting for it, each Push to its
  channel (`hub.client.channel`), in order;
- one task per channel runs its handlers.

While no link is ready, requests wait in a buffer (at most `max_buffered`),
each within its own timeout, and go out in order once the channels are
joined again. A request already sent when a link drops fails with
ConnectionLostError: the client cannot know whether the server acted on it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

import attrs
import trio

from hub.client.backoff import Backoff
from hub.client.channel import Channel, ChannelState, _Rejoined
from hub.client.errors import (
    BufferFullError,
    ClientClosedError,
    ClientError,
    ConnectError,
    ConnectionLostError,
    ReplyError,
    RequestTimeoutError,
)
from hub.client.links import Dial, Link, LinkClosed
from hub.errors import DecodeError
from hub.protocol import (
    ClientMachine,
    Ended,
    Error,
    ErrorReceived,
    Expiring,
    Join,
    Message,
    Payload,
    Push,
    Reply,
    ReplyReceived,
    codec_for,
)

__all__ = ["DEFAULT_TIMEOUT", "Client", "ClientOptions", "TokenSource", "open_client"]

logger = logging.getLogger(__name__)

# How long a request waits for its answer unless told otherwise, in seconds
# (the time it waits in the buffer for a connection included).
DEFAULT_TIMEOUT: Final = 5.0

# A call's timeout goes to the server, which answers `call_timeout` when it
# runs out; the client waits this much longer for that answer before it
# gives up on its own (RequestTimeoutError).
CALL_REPLY_GRACE: Final = 1.0

# Requests that may wait for a connection at once; one more is BufferFullError.
DEFAULT_MAX_BUFFERED: Final = 1000

# A heartbeat goes out this often; a link that does not answer one within
# the same time is taken for dead, closed and replaced.
DEFAULT_HEARTBEAT_SECONDS: Final = 20.0

# A link that stayed up this long resets the backoff: the next outage starts
# again from short delays.
DEFAULT_STABLE_SECONDS: Final = 5.0

# Close codes after which reconnecting unchanged would not help (RFC 6455
# 1008 policy violation: authorization revoked, a flood of malformed frames).
_FINAL_CLOSE_CODES: Final = frozenset({1008})

# The reason of the 1008 close of a connection whose token ran out (hub.session):
# with a `refresh` source, a new token is fetched and the client reconnects.
_TOKEN_EXPIRED: Final = "token expired"

# The code this client closes a link with when the server stopped answering.
_CLOSE_NO_HEARTBEAT: Final = 4000
# ...and when the server sent something it cannot decode (a server bug).
_CLOSE_BAD_FRAME: Final = 1002


@attrs.frozen
class ClientOptions:
    """How a client behaves; every field is a keyword of `connect` and `open_client`."""

    #: Default timeout of requests, in seconds (waiting for a connection included).
    request_timeout: float = DEFAULT_TIMEOUT
    #: Send a heartbeat this often (None: never); one unanswered as long drops the link.
    heartbeat_seconds: float | None = DEFAULT_HEARTBEAT_SECONDS
    #: Reconnect after the link is lost (never after 1008, nor a refused dial).
    reconnect: bool = True
    #: Backoff before reconnecting: the first delay is at most this long...
    backoff_base: float = 0.5
    #: ...doubling per failed attempt up to this, each delay uniformly random below it.
    backoff_cap: float = 30.0
    #: A link up this long resets the backoff.
    stable_seconds: float = DEFAULT_STABLE_SECONDS
    #: Give up after this many failed dials in a row (None: never).
    max_attempts: int | None = None
    #: Requests that may wait for a connection at once.
    max_buffered: int = DEFAULT_MAX_BUFFERED
    #: The randomness of the backoff's jitter (numbers in [0, 1)); tests pass their own.
    random: Callable[[], float] | None = None
    #: Gets a new token (sync or async) when the hub says the current one expires
    #: (it is then handed over in-band), or closed the connection for it (1008).
    refresh: TokenSource | None = None


@attrs.define(eq=False)
class _Waiter:
    """One request on the wire, waiting for its answer."""

    done: trio.Event = attrs.Factory(trio.Event)
    reply: Reply | None = None
    error: Error | None = None
    lost: LinkClosed | None = None


@attrs.define(eq=False)
class _Link:
    """One open link and what is in flight on it."""

    link: Link
    machine: ClientMachine
    waiters: dict[int, _Waiter] = attrs.Factory(dict)
    #: Whether buffered requests have been sent and new ones go straight out.
    ready: bool = False
    closed: trio.Event = attrs.Factory(trio.Event)
    close: LinkClosed | None = None


# Gets a new token for the connection's user (`ClientOptions.refresh`).
TokenSource = Callable[[], Awaitable[str] | str]

# Builds a request with the link's machine: (ref, message); ref 0 asks for no answer.
_Build = Callable[[ClientMachine], tuple[int, Message]]


@attrs.define(eq=False)
class _Buffered:
    """A request waiting for a ready link; the link task sends it, in order."""

    build: _Build
    sent: trio.Event = attrs.Factory(trio.Event)
    link: _Link | None = None
    ref: int = 0
    waiter: _Waiter | None = None
    error: BaseException | None = None


@attrs.define(eq=False)
class Client:
    """One logical connection to a hub (see the module docstring); get it from `connect`."""

    _dial: Dial
    options: ClientOptions = ClientOptions()
    #: The token each (re)connection sends (docs/auth.md); `refresh` replaces it.
    token: str | None = None
    _nursery: trio.Nursery | None = None
    _link: _Link | None = None
    _channels: dict[str, Channel] = attrs.Factory(dict)
    _buffer: deque[_Buffered] = attrs.Factory(deque)
    _closed: ClientClosedError | None = None
    _done: trio.Event = attrs.Factory(trio.Event)
    _connected: trio.Event = attrs.Factory(trio.Event)
    #: How many links this client has opened (1 until the first reconnect).
    connections: int = 0
    #: Dials that failed since the last link came up.
    failed_attempts: int = 0

    # --- what the application sees -------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a link is up and every channel joined again (requests go out at once)."""
        return self._link is not None and self._link.ready

    @property
    def closed(self) -> ClientClosedError | None:
        """Why the client is closed (None while it is not)."""
        return self._closed

    @property
    def subprotocol(self) -> str | None:
        link = self._link
        return None if link is None else link.machine.codec.subprotocol

    @property
    def channels(self) -> Mapping[str, Channel]:
        """The channels joined, joining or to be rejoined, by topic."""
        return self._channels

    async def wait_connected(self) -> None:
        """Wait until a link is up and the channels are joined again."""
        while not self.connected:
            self._check_open()
            await self._connected.wait()

    async def wait_closed(self) -> None:
        """Wait until the client is closed (by `aclose`, or it gave up reconnecting)."""
        await self._done.wait()

    def channel(self, topic: str) -> Channel:
        """A channel for `topic`, not joined yet: attach handlers, then `await channel.join()`.

        The channel of a topic this client has joined (or is joining) is
        returned as it is.
        """
        channel = self._channels.get(topic)
        if channel is not None:
            return channel
        nursery = self._nursery
        if nursery is None:
            raise ClientError("the client is not running; use it inside `connect`", code="closed")
        channel = Channel(self, topic)
        nursery.start_soon(channel._serve)
        return channel

    async def join(
        self,
        topic: str,
        params: Mapping[str, Payload] | None = None,
        *,
        timeout: float | None = None,
    ) -> Channel:
        """Join `topic`; return its Channel. Pushes before your first `on` are held for it.

        Raises ReplyError if refused, RequestTimeoutError without an answer in time.
        """
        return await self.channel(topic).join(params, timeout=timeout)

    async def inbox(self, user: str, *, timeout: float | None = None) -> Channel:
        """Join `user`'s personal topic (`user:<id>`): its notifications (docs/notifications.md).

        Each notification comes as a Push of its own event with its offset
        (iterate the Channel to see offsets); what is not acknowledged comes
        again on every join, rejoins included. Raises ReplyError `forbidden`
        for another user's.
        """
        return await self.join(f"user:{user}", timeout=timeout)

    async def ack(self, user: str, offset: int, *, timeout: float | None = None) -> Payload:
        """Acknowledge `user`'s notifications up to `offset`, for all its devices.

        Returns the inbox's status (`unread`, `dropped`, `acked`, ...); each
        joined device is pushed it as `$unread`.
        """
        return await self.call(f"user:{user}", "ack", {"offset": offset}, timeout=timeout)

    async def publish(
        self,
        topic: str,
        event: str,
        payload: Payload = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish `event` to a joined `topic`.

        Returns once sent; with `ack`, once the server said ok (ReplyError
        if it refused). While disconnected it waits in the buffer, within
        `timeout` (RequestTimeoutError past it).
        """
        await self._request(
            lambda machine: machine.publish(topic, event, payload, ack=ack),
            timeout=self._timeout(timeout),
            answered=ack,
        )

    async def call(
        self,
        topic: str,
        event: str,
        payload: Payload = None,
        *,
        timeout: float | None = None,
    ) -> Payload:
        """Call the service of a joined `topic` and return its answer.

        The server cuts the call at `timeout` and answers `call_timeout`,
        raised as ReplyError like any error answer; with no answer at all
        within `timeout` + CALL_REPLY_GRACE, RequestTimeoutError.
        """
        seconds = self._timeout(timeout)
        reply = await self._request(
            lambda machine: machine.call(topic, event, payload, timeout=seconds),
            timeout=seconds + CALL_REPLY_GRACE,
        )
        assert reply is not None
        return reply.payload

    async def leave(self, topic: str, *, timeout: float | None = None) -> None:
        """Leave `topic`; no push of it is delivered after this returns."""
        channel = self._channels.get(topic)
        if channel is None:
            raise ClientError(f"topic {topic!r} is not joined", code="not_joined")
        await self._leave(channel, timeout=timeout)

    async def heartbeat(self, *, timeout: float | None = None) -> None:
        """Send a Heartbeat and wait for its answer."""
        await self._request(lambda machine: machine.heartbeat(), timeout=self._timeout(timeout))

    async def refresh(self, token: str, *, timeout: float | None = None) -> float:
        """Hand the hub a new token for this connection's user; return its seconds left.

        The token is also the one later reconnections send. Raises ReplyError
        `invalid_token` (expired, forged) or `forbidden` (another user's
        token: that takes a new connection). With a `refresh` source the
        client does this by itself when the hub says the token expires.
        """
        reply = await self._request(
            lambda machine: machine.refresh(token), timeout=self._timeout(timeout)
        )
        assert reply is not None
        self.token = token
        payload = reply.payload
        expires_in = payload.get("expires_in") if isinstance(payload, Mapping) else None
        if not isinstance(expires_in, float | int):
            raise ReplyError("bad_field", f"a refresh answered {payload!r}, not its expires_in")
        return float(expires_in)

    async def aclose(self) -> None:
        """Close the client: the link (1000), the channels, and every waiting request."""
        self._finish(ClientClosedError("the client is closed"))
        link = self._link
        if link is not None:
            with trio.move_on_after(DEFAULT_TIMEOUT, shield=True):
                await link.link.aclose(1000, "")

    # --- requests ------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self.options.request_timeout if timeout is None else timeout

    def _is_closed(self) -> bool:
        return self._closed is not None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ClientClosedError(self._closed.message)

    async def _request(
        self, build: _Build, *, timeout: float, answered: bool = True
    ) -> Reply | None:
        """Send a request (now, or from the buffer once a link is ready) and wait for its answer.

        A request whose send fails because the link just closed was not
        sent: it waits for the next link like any buffered one.
        """
        self._check_open()
        link: _Link | None = None
        ref = 0
        waiter: _Waiter | None = None
        with trio.move_on_after(timeout) as scope:
            while link is None:
                current = self._link
                if current is not None and current.ready:
                    sent = await self._try_send(current, build)
                    if sent is not None:
                        link, (ref, waiter) = current, sent
                    continue
                buffered = self._buffered(build)
                try:
                    await buffered.sent.wait()
                finally:
                    if not buffered.sent.is_set():
                        self._buffer.remove(buffered)
                if buffered.error is not None:
                    raise buffered.error
                link, ref, waiter = buffered.link, buffered.ref, buffered.waiter
            if not answered or waiter is None:
                return None
            await waiter.done.wait()
        if scope.cancelled_caught:
            if link is not None:
                self._abandon(link, ref)
            where = "sent" if link is not None else "waiting for a connection"
            raise RequestTimeoutError(f"no answer within {timeout} s ({where})")
        assert link is not None and waiter is not None
        link.waiters.pop(ref, None)
        return _outcome(waiter)

    def _buffered(self, build: _Build) -> _Buffered:
        """Queue a request for the next ready link (BufferFullError past `max_buffered`)."""
        if len(self._buffer) >= self.options.max_buffered:
            raise BufferFullError(
                f"{len(self._buffer)} requests already wait for the connection (max_buffered)"
            )
        buffered = _Buffered(build)
        self._buffer.append(buffered)
        return buffered

    async def _try_send(self, link: _Link, build: _Build) -> tuple[int, _Waiter | None] | None:
        """Build the request with `link`'s machine and send it; None if the link closed first."""
        ref, message = build(link.machine)
        waiter = None
        if ref:
            waiter = link.waiters[ref] = _Waiter()
        try:
            await link.link.send(message)
        except LinkClosed:
            self._abandon(link, ref)
            link.ready = False  # what comes next waits for the next link
            return None
        except BaseException:
            self._abandon(link, ref)  # cancelled while sending: nobody waits for it
            raise
        return ref, waiter

    @staticmethod
    def _abandon(link: _Link, ref: int) -> None:
        if ref:
            link.waiters.pop(ref, None)
            link.machine.forget(ref)

    async def _send(self, link: _Link, message: Message) -> None:
        """Send a message of the client's own (joins, leaves, heartbeats); dropped if closed.

        The reader sees the close too, and fails what waits on the link.
        """
        with contextlib.suppress(LinkClosed):
            await link.link.send(message)

    # --- joining and leaving -----------------------------------------------------------

    async def _join(self, channel: Channel, *, timeout: float | None) -> None:
        other = self._channels.get(channel.topic)
        if other is not None and other is not channel:
            raise ClientError(f"topic {channel.topic!r} is joined already", code="already_joined")
        self._channels[channel.topic] = channel
        channel.state = ChannelState.JOINING
        topic, params = channel.topic, channel.params
        deadline = trio.current_time() + self._timeout(timeout)
        try:
            while True:
                try:
                    await self._request(
                        lambda machine: machine.join(topic, params, channel.offset, channel.epoch),
                        timeout=max(0.0, deadline - trio.current_time()),
                    )
                    break
                except ClientClosedError:
                    raise
                except ConnectionLostError:
                    # The link died with the Join on it; its session, and any
                    # membership it made, died with it: a Join is safe to resend.
                    continue
        except RequestTimeoutError:
            self._forget_join(channel)
            # A join that was sent may still succeed: leave, so that the
            # server does not keep a membership nobody knows of.
            await self._leave_quietly(topic)
            raise
        except BaseException:
            self._forget_join(channel)
            raise
        channel.state = ChannelState.JOINED

    async def _leave_quietly(self, topic: str, link: _Link | None = None) -> None:
        """Send a Leave nobody waits for, on `link` (or the current one, if ready)."""
        if link is None:
            link = self._link
            if link is None or not link.ready:
                return
        ref, message = link.machine.leave(topic)
        link.machine.forget(ref)
        await self._send(link, message)

    def _forget_join(self, channel: Channel) -> None:
        """A join that failed: the channel is idle again, and not the client's."""
        if channel.state is ChannelState.JOINING:
            channel.state = ChannelState.IDLE
        if self._channels.get(channel.topic) is channel:
            del self._channels[channel.topic]

    async def _leave(self, channel: Channel, *, timeout: float | None) -> None:
        topic = channel.topic
        if channel.state is ChannelState.JOINED:
            await self._request(
                lambda machine: machine.leave(topic), timeout=self._timeout(timeout)
            )
        elif channel.state is ChannelState.JOINING:
            raise ClientError(
                f"the join of {topic!r} is not answered yet: wait for it, then leave",
                code="not_joined",
            )
        elif channel.state is not ChannelState.REJOINING:
            raise ClientError(f"topic {topic!r} is {channel.state}", code="not_joined")
        channel.state = ChannelState.LEFT
        if self._channels.get(topic) is channel:
            del self._channels[topic]
        channel._close()

    # --- the link task -------------------------------------------------------------------

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Dial, serve each link, and reconnect with backoff (see the module docstring)."""
        options = self.options
        backoff = Backoff(options.backoff_base, options.backoff_cap)
        if options.random is not None:
            backoff.random = options.random
        first = True
        try:
            while not self._is_closed():
                try:
                    async with self._dial(self.token) as raw:
                        self.failed_attempts = 0
                        opened_at = trio.current_time()
                        close = await self._serve_link(raw, task_status if first else None)
                        first = False
                        if trio.current_time() - opened_at >= options.stable_seconds:
                            backoff.reset()
                except ConnectError as error:
                    if first:
                        raise
                    self.failed_attempts += 1
                    if not error.retry or (
                        options.max_attempts is not None
                        and self.failed_attempts >= options.max_attempts
                    ):
                        self._finish(ClientClosedError(f"gave up reconnecting: {error}"))
                        return
                    close = None
                if self._is_closed():
                    return
                final = close is not None and close.code in _FINAL_CLOSE_CODES
                if final and not await self._renewable(close):
                    self._finish(
                        ClientClosedError(f"the hub closed the connection for good: {close}")
                    )
                    return
                if not options.reconnect:
                    self._finish(ClientClosedError(f"the connection is closed: {close}"))
                    return
                await trio.sleep(backoff.next_delay())
        finally:
            self._finish(ClientClosedError("the client is closed"))

    async def _serve_link(
        self, raw: Link, task_status: trio.TaskStatus[None] | None
    ) -> LinkClosed | None:
        """Serve one link until it closes; return how it closed."""
        link = _Link(raw, ClientMachine(codec_for(raw.subprotocol)))
        self._link = link
        self.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_reader, link)
                if self.options.heartbeat_seconds:
                    nursery.start_soon(self._serve_heartbeats, link, self.options.heartbeat_seconds)
                if task_status is not None:
                    task_status.started()
                await self._rejoin(link)
                await self._flush(link)
                await link.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._link = None
            self._connected = trio.Event()
            lost = link.close or LinkClosed(None, "the link ended")
            for waiter in link.waiters.values():
                waiter.lost = lost
                waiter.done.set()
            for channel in self._channels.values():
                if channel.state is ChannelState.JOINED:
                    channel.state = ChannelState.REJOINING
        return link.close

    async def _rejoin(self, link: _Link) -> None:
        """Join every channel that was joined again, from its position; wait for all answers."""
        rejoining = [
            channel
            for channel in self._channels.values()
            if channel.state is ChannelState.REJOINING
        ]
        if not rejoining:
            return
        async with trio.open_nursery() as nursery:
            for channel in rejoining:
                nursery.start_soon(self._rejoin_one, link, channel)

    async def _rejoin_one(self, link: _Link, channel: Channel) -> None:
        topic = channel.topic
        ref, message = link.machine.join(topic, channel.params, channel.offset, channel.epoch)
        waiter = link.waiters[ref] = _Waiter()
        with trio.move_on_after(self.options.request_timeout) as scope:
            await self._send(link, message)
            await waiter.done.wait()
        link.waiters.pop(ref, None)
        if scope.cancelled_caught:
            # A link that cannot rejoin in time is no good: drop it, try another.
            link.machine.forget(ref)
            await link.link.aclose(_CLOSE_NO_HEARTBEAT, "no answer to a rejoin")
            return
        try:
            _outcome(waiter)
        except ReplyError as error:
            channel.state = ChannelState.ENDED
            channel.error = error
            if self._channels.get(topic) is channel:
                del self._channels[topic]
            channel._close()
            return
        except ConnectionLostError:
            return  # the link is gone: the next one rejoins
        if channel.state is ChannelState.REJOINING:
            channel.state = ChannelState.JOINED
        else:
            await self._leave_quietly(topic, link)  # left while the rejoin was on its way

    async def _flush(self, link: _Link) -> None:
        """Send what waits in the buffer, in order; then new requests go straight out."""
        buffer = self._buffer
        while buffer:
            buffered = buffer[0]
            sent = await self._try_send(link, buffered.build)
            if sent is None:
                return  # the link closed: the rest waits for the next one
            if buffer and buffer[0] is buffered:
                buffer.popleft()
            # (Otherwise its caller gave up while it was being sent: its
            # answer, if any, is dropped as a late one.)
            buffered.link = link
            buffered.ref, buffered.waiter = sent
            buffered.sent.set()
        link.ready = True
        self.failed_attempts = 0
        self._connected.set()

    async def _serve_reader(self, link: _Link) -> None:
        try:
            while True:
                data = await link.link.receive()
                try:
                    events = link.machine.receive(data)
                except DecodeError as error:
                    link.close = LinkClosed(_CLOSE_BAD_FRAME, f"bad frame from the hub: {error}")
                    await link.link.aclose(_CLOSE_BAD_FRAME, "bad frame")
                    return
                for event in events:
                    await self._take(link, event)
        except LinkClosed as closed:
            if link.close is None:
                link.close = closed
        finally:
            link.closed.set()

    async def _take(self, link: _Link, event: object) -> None:
        match event:
            case ReplyReceived(request=request, reply=reply):
                if type(request) is Join and reply.ok:
                    channel = self._channels.get(reply.topic or "")
                    if channel is not None:
                        channel._take_join_reply(reply.payload)
                        if channel.state is ChannelState.REJOINING:
                            channel.recovered = _recovered(reply.payload)
                            await channel._receive(_Rejoined(reply.payload))
                waiter = link.waiters.get(reply.ref)
                if waiter is not None:
                    waiter.reply = reply
                    waiter.done.set()
            case ErrorReceived(error=error):
                waiter = link.waiters.get(error.ref or 0)
                if waiter is not None:
                    waiter.error = error
                    waiter.done.set()
            case Push(topic=topic):
                channel = self._channels.get(topic)
                if channel is not None:
                    await channel._receive(event)
            case Ended(topic=topic):
                channel = self._channels.pop(topic, None)
                if channel is not None:
                    channel.state = ChannelState.ENDED
                    channel.ended = event
                    channel._close()
            case Expiring():
                # In a task of its own: this reader must go on, to read the answer.
                if self.options.refresh is not None and self._nursery is not None:
                    self._nursery.start_soon(self._refresh_from_source)

    async def _serve_heartbeats(self, link: _Link, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            ref, message = link.machine.heartbeat()
            waiter = link.waiters[ref] = _Waiter()
            with trio.move_on_after(interval) as scope:
                await self._send(link, message)
                await waiter.done.wait()
            link.waiters.pop(ref, None)
            if scope.cancelled_caught:
                link.machine.forget(ref)
                link.close = LinkClosed(_CLOSE_NO_HEARTBEAT, "no heartbeat reply")
                await link.link.aclose(_CLOSE_NO_HEARTBEAT, "no heartbeat reply")
                return
            if waiter.lost is not None:
                return

    async def _renewable(self, close: LinkClosed | None) -> bool:
        """Whether a 1008 close was for an expired token, and a new token is at hand."""
        return (
            close is not None and close.reason == _TOKEN_EXPIRED and bool(await self._fresh_token())
        )

    async def _fresh_token(self) -> str | None:
        """A new token from the `refresh` source (None without one, or if it fails)."""
        source = self.options.refresh
        if source is None:
            return None
        try:
            token = source()
            if inspect.isawaitable(token):
                token = await token
        except Exception:
            logger.warning("the client's token source failed", exc_info=True)
            return None
        self.token = token
        return token

    async def _refresh_from_source(self) -> None:
        token = await self._fresh_token()
        if token is None:
            return
        try:
            await self.refresh(token)
        except ClientError as error:
            # The hub closes the connection (1008) when the old token runs
            # out; the client then reconnects with the new one.
            logger.warning("refreshing the connection's token failed: %s", error)

    def _finish(self, closed: ClientClosedError) -> None:
        """Close the client for good: fail what waits, end the channels."""
        if self._closed is not None:
            return
        self._closed = closed
        while self._buffer:
            buffered = self._buffer.popleft()
            buffered.error = ClientClosedError(closed.message)
            buffered.sent.set()
        for channel in list(self._channels.values()):
            if channel.state is not ChannelState.LEFT:
                channel.state = ChannelState.ENDED
            channel._close()
        self._channels.clear()
        self._connected.set()
        self._done.set()


def _recovered(payload: Payload) -> bool | None:
    if isinstance(payload, Mapping):
        recovered = payload.get("recovered")
        if isinstance(recovered, bool):
            return recovered
    return None


def _outcome(waiter: _Waiter) -> Reply:
    """The Reply a waiter got; raise what it means otherwise."""
    if waiter.error is not None:
        raise ReplyError(waiter.error.code, waiter.error.message)
    reply = waiter.reply
    if reply is None:
        lost = waiter.lost
        raise ConnectionLostError(
            f"the connection dropped before the answer came ({lost})"
            if lost is not None
            else "the connection dropped before the answer came"
        )
    if not reply.ok:
        raise ReplyError(reply.error_code or "", reply.error_message or "")
    return reply


@contextlib.asynccontextmanager
async def open_client(
    dial: Dial, options: ClientOptions | None = None, *, token: str | None = None
) -> AsyncIterator[Client]:
    """A client over links from `dial`, for the body of the block (see `hub.client.connect`).

    The first dial happens before the body starts: its failure raises
    ConnectError. Leaving the block closes the client.
    """
    client = Client(dial, options or ClientOptions(), token)
    started = False
    try:
        async with trio.open_nursery() as nursery:
            client._nursery = nursery
            await nursery.start(client._serve)
            started = True
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A first connection that fails is for the caller to see as it is,
        # not wrapped in the group of a nursery it never entered.
        if not started and len(group.exceptions) == 1:
            [error] = group.exceptions
            if isinstance(error, ConnectError):
                raise error from None
        raise
