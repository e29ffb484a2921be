"""A hub node's side of `hub.publisher`: acting on publish requests that came through Redis.

A publisher outside the hub sends a `PublishRequest` on a topic's Redis
channel (`RedisBackplane.request`); every node subscribed to the topic
gets it. A node acts on it only if it runs the topic's actor or its relay
(`hub.cluster`: a relay asks the owner, the one node that gives out the
topic's offsets), and only if it is the first to claim the request in
Redis, so that one request is one event however many nodes could act. It
publishes the event through the actor (or relay), as `HubRuntime.publish`
does, and answers the publisher with the offset, or the error, on the
publisher's reply topic.

Anything that can write to Redis can send a request, so one that does not
decode, or names as its reply topic anything but a publisher's (a room, a
topic of the hub's own), is refused whole: nothing is claimed, published or
answered. Each refusal is counted with the backplane's refused messages
(`triohub_backplane_refused_messages_total`) and logged, the first at once
and then at most one line every `REFUSAL_LOG_SECONDS` saying how many more.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

import attrs
import trio

import actors
from hub.backplane import Record
from hub.protocol import Payload
from hub.publisher import PublishFailedError, PublishRequest, check_event
from hub.topics import ServerPublish

if TYPE_CHECKING:
    from hub.backplane.redis import RedisBackplane
    from hub.topics import Topics

__all__ = ["PublishRequests"]

logger = logging.getLogger(__name__)

# Requests received and not yet acted on. Past this a request is dropped
# (logged): its publisher is told nothing and times out.
REQUESTS_CAPACITY: Final = 1024

# Requests acted on at once (each waits on one topic's actor).
CONCURRENT_REQUESTS: Final = 64

# How long a topic's actor may take to take a requested event, in seconds.
PUBLISH_TIMEOUT_SECONDS: Final = 5.0

# How often a refused request is logged at most, in seconds: whoever writes
# to Redis must not flood the log. The next line says how many were not.
REFUSAL_LOG_SECONDS: Final = 10.0

# How long a claimed request id is remembered in Redis, in milliseconds.
_CLAIM_MS: Final = 60_000

# KEYS: claim; ARGV: node, ms -> 1 if this node is the first to claim it.
_CLAIM = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0"


@attrs.define
class _RefusalLog:
    """Logs a refused request at most once every `interval` seconds, on trio's clock."""

    interval: float = REFUSAL_LOG_SECONDS
    _logged_at: float = -math.inf
    _not_logged: int = 0

    def refused(self, topic: str, why: str) -> None:
        now = trio.current_time()
        if now - self._logged_at < self.interval:
            self._not_logged += 1
            return
        more = (
            f" ({self._not_logged} more refused since the last line, not logged)"
            if self._not_logged
            else ""
        )
        self._logged_at, self._not_logged = now, 0
        logger.warning("refused a publish request on topic %r: %s%s", topic, why, more)


@attrs.define(eq=False)
class PublishRequests:
    """Acts on publish requests from outside the hub (see the module docstring)."""

    backplane: RedisBackplane
    topics: Topics
    _refusals: _RefusalLog = attrs.Factory(_RefusalLog)
    _send: trio.MemorySendChannel[tuple[str, bytes]] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[tuple[str, bytes]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(REQUESTS_CAPACITY)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Act on the requests the backplane hands over, until cancelled (with the hub)."""
        self.backplane.on_request = self._received
        limiter = trio.CapacityLimiter(CONCURRENT_REQUESTS)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for topic, data in self._receive:
                    await limiter.acquire_on_behalf_of(data)
                    nursery.start_soon(self._act, topic, data, limiter)
        finally:
            self.backplane.on_request = None

    def _received(self, topic: str, data: bytes) -> None:
        try:
            self._send.send_nowait((topic, data))
        except trio.WouldBlock:
            logger.warning(
                "%d publish requests waiting: one for %r dropped", REQUESTS_CAPACITY, topic
            )

    async def _act(self, topic: str, data: bytes, limiter: trio.CapacityLimiter) -> None:
        try:
            await self._publish(topic, data)
        finally:
            limiter.release_on_behalf_of(data)

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            request = PublishRequest.decode(data)
        except ValueError as error:
            self.backplane.refused_messages += 1
            self._refusals.refused(topic, str(error))
            return
        ref = self.topics.whereis(topic)
        if ref is None:
            return  # not this node's to act on
        prefix = self.backplane.prefix
        claim = f"{prefix}:request:{request.id}"
        try:
            node = self.backplane.node
            if not await self.backplane.run_script(_CLAIM, [claim], [node, _CLAIM_MS]):
                return  # another node serving the topic took it
            check_event(topic, request.event, request.payload)
            offset = await ref.call(
                ServerPublish(request.event, request.payload, request.keep),
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except (PublishFailedError, actors.ActorExitedError, actors.CallTimeoutError) as error:
            self._answer(request, "failed", {"error": str(error) or type(error).__name__})
        except ConnectionError as error:  # Redis away: the publisher times out
            logger.warning("a publish request for %r was not claimed: %s", topic, error)
        else:
            self._answer(request, "published", {"offset": offset, "node": self.backplane.node})

    def _answer(self, request: PublishRequest, event: str, result: dict[str, Payload]) -> None:
        # To the publisher's reply topic: `decode` refused any other.
        payload = {"id": request.id, **result}
        self.backplane.publish(Record(request.reply_to, event, payload, ""))
