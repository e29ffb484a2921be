"""Publishing from outside the hub, through Redis: no WebSocket, no hub process of your own.

    from hub.publisher import open_publisher

    async with open_publisher("redis://127.0.0.1:6379/0") as publisher:
        offset = await publisher.publish("room:lobby", "news", {"text": "hi"})
        await publisher.notify("ada", "invite", {"room": "chess:7"})

Any backend process (a web app, a cron job, `hub publish` and `hub notify
--redis`) reaches the clients of a hub on the Redis backplane this way;
the `prefix` must be the hub's `backplane.prefix`.

- `publish` sends a request on the topic's own Redis channel. Only a node
  that runs the topic's actor or its relay acts on it, and only one (it
  claims the request in Redis first): the topic's actor, on the node that
  owns the topic, gives the event the topic's next
  offset and broadcasts it, as `HubRuntime.publish` does in the hub
  (a server-side publish: members get it as they get their own
  broadcasts, the topic's history keeps it). The answer is the offset.
  When no node serves the topic (none has a member of it), nothing is
  delivered or kept, and `publish` raises NoNodeServesError at once:
  there is no owner to give the event an offset, and nobody to hear it.
- `notify` adds the notification to the user's inbox in Redis directly
  (`hub.redis_inbox`, with the limits the hub's nodes wrote there) and
  tells every node, whose personal topics of the user push it at once to
  the user's devices. It needs no node to be running: the inbox keeps it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Final

import attrs
import msgpack
import trio

from hub.backplane import Record
from hub.backplane.redis import RedisBackplane, RedisUnavailableError
from hub.errors import EncodeError, HubError, InvalidFieldError
from hub.notifications import WAKE_TOPIC, Notification, check_notification
from hub.protocol import JSON, Payload, Push
from hub.redis_inbox import RedisInbox, read_limits

__all__ = [
    "NoNodeServesError",
    "PublishFailedError",
    "PublishRequest",
    "Publisher",
    "open_publisher",
]

# How long `publish` waits for the node serving the topic to answer, in seconds.
PUBLISH_TIMEOUT_SECONDS: Final = 5.0

# How long `open_publisher` waits for Redis to answer, in seconds.
CONNECT_TIMEOUT_SECONDS: Final = 5.0

# Where a publisher hears its answers: a name no client topic can take (a
# space), then its own random id, `_REPLY_ID_BYTES` bytes in hex.
_REPLY_PREFIX: Final = "$publisher "
_REPLY_ID_BYTES: Final = 8

# The only topics a node answers a request in. A request comes from anything
# that can write to Redis, and the node publishes its answer (on its own
# backplane, so under its own prefix) to the topic the request names: naming
# any other (a room, `$notifications`) would push the node's answer to that
# topic's members.
_REPLY_TOPIC: Final = re.compile(re.escape(_REPLY_PREFIX) + f"[0-9a-f]{{{2 * _REPLY_ID_BYTES}}}")


class NoNodeServesError(HubError):
    """No hub node serves the topic published to: nothing was delivered or kept."""


class PublishFailedError(HubError):
    """The topic's node refused the event, or did not answer in time."""


@attrs.frozen
class PublishRequest:
    """A request to a topic's node: broadcast `event` from the server (`hub publish`)."""

    #: Unique: the node that acts on it claims it by this id, and answers by it.
    id: str
    event: str
    payload: Payload
    keep: bool
    #: The backplane topic the answer goes to: the publisher's reply topic,
    #: `$publisher ` and its id (a request naming another is refused).
    reply_to: str

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(
            [self.id, self.event, self.payload, self.keep, self.reply_to], use_bin_type=True
        )
        return data

    @classmethod
    def decode(cls, data: bytes) -> PublishRequest:
        """The request in `data`; ValueError if it is not one, or names no publisher to answer."""
        try:
            request_id, event, payload, keep, reply_to = msgpack.unpackb(data, raw=False)
        except Exception as error:  # msgpack raises several types for malformed input
            raise ValueError(f"not a publish request: {error}") from None
        if not all(isinstance(field, str) for field in (request_id, event, reply_to)):
            raise ValueError("not a publish request: id, event and reply_to must be strings")
        if not _REPLY_TOPIC.fullmatch(reply_to):
            raise ValueError(
                f"reply_to {reply_to!r:.100} is not a publisher's reply topic "
                f"({_REPLY_PREFIX!r} and {2 * _REPLY_ID_BYTES} hex digits)"
            )
        return cls(request_id, event, payload, bool(keep), reply_to)


def check_event(topic: str, event: str, payload: Payload) -> None:
    """Raise PublishFailedError unless every client could receive `event` on `topic`."""
    if event.startswith("$"):
        raise PublishFailedError(f"event names starting with '$' are the hub's; got {event!r}")
    try:
        JSON.encode(Push(topic, event, payload, 1))
    except InvalidFieldError as error:
        raise PublishFailedError(f"cannot publish {event!r} to {topic!r}: {error}") from None
    except (EncodeError, ValueError) as error:
        raise PublishFailedError(
            f"the data must be JSON (every client must be able to receive it): {error}"
        ) from None


@attrs.define(eq=False)
class _Answer:
    done: trio.Event = attrs.Factory(trio.Event)
    record: Record | None = None


@attrs.define(eq=False)
class Publisher:
    """Publishes and notifies through Redis (see the module docstring); from `open_publisher`."""

    backplane: RedisBackplane
    inbox: RedisInbox
    reply_topic: str
    _answers: dict[str, _Answer] = attrs.Factory(dict)

    async def publish(
        self,
        topic: str,
        event: str,
        payload: Payload = None,
        *,
        keep: bool = True,
        timeout: float = PUBLISH_TIMEOUT_SECONDS,
    ) -> int | None:
        """Broadcast `event` to `topic`'s members on every node, from the server.

        Returns the event's offset in the topic's history (None without
        `keep`). Raises NoNodeServesError when no node serves the topic,
        PublishFailedError when the event cannot be sent (a `$` name, data
        JSON cannot carry) or the topic's node refused it or did not answer
        within `timeout`, and RedisUnavailableError when Redis is away.
        """
        check_event(topic, event, payload)
        request = PublishRequest(secrets.token_hex(8), event, payload, keep, self.reply_topic)
        answer = self._answers[request.id] = _Answer()
        try:
            nodes = await self.backplane.request(topic, request.encode())
            if nodes == 0:
                raise NoNodeServesError(
                    f"no node serves topic {topic!r} (none has a member of it); nothing delivered"
                )
            with trio.move_on_after(timeout):
                await answer.done.wait()
        finally:
            del self._answers[request.id]
        record = answer.record
        if record is None:
            raise PublishFailedError(
                f"{nodes} node{'' if nodes == 1 else 's'} subscribe to topic {topic!r} but "
                f"none published the event within {timeout} s (its topic stopping?); "
                f"it may or may not have been delivered"
            )
        result = record.payload if isinstance(record.payload, dict) else {}
        if record.event != "published":
            raise PublishFailedError(f"topic {topic!r} refused the event: {result.get('error')}")
        offset = result.get("offset")
        return offset if isinstance(offset, int) else None

    async def notify(self, user: str, event: str, data: Payload = None) -> Notification:
        """Send `user` a notification: kept until acknowledged, pushed to each of their devices.

        Returns it with its offset once it is in the inbox. Raises
        InvalidNotificationError (as `HubRuntime.notify` does) and
        RedisUnavailableError when Redis is away.
        """
        check_notification(user, event, data)
        notification = await self.inbox.add(user, event, data)
        self.backplane.publish(Record(WAKE_TOPIC, "changed", user, ""))
        return notification

    def _answered(self, record: Record) -> None:
        payload = record.payload
        request_id = payload.get("id") if isinstance(payload, dict) else None
        answer = self._answers.get(request_id) if isinstance(request_id, str) else None
        if answer is not None and answer.record is None:
            answer.record = record
            answer.done.set()


@contextlib.asynccontextmanager
async def open_publisher(
    redis_url: str, *, prefix: str = "triohub", connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> AsyncIterator[Publisher]:
    """A Publisher on the hub whose Redis is `redis_url` and `backplane.prefix` is `prefix`.

    Raises RedisUnavailableError if Redis does not answer within
    `connect_timeout`. Leaving the block waits for what was published to be
    written to Redis.
    """
    # Its node id is its reply topic's id (`_REPLY_TOPIC`).
    node = secrets.token_hex(_REPLY_ID_BYTES)
    backplane = RedisBackplane(redis_url, prefix=prefix, node=node)
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        try:
            with trio.move_on_after(connect_timeout):
                await backplane.wait_healthy()
            if not backplane.healthy:
                raise RedisUnavailableError(
                    f"Redis at {redis_url} did not answer within {connect_timeout} s"
                )
            max_per_user, max_age = await read_limits(backplane.run_script, prefix)
            inbox = RedisInbox(
                backplane.run_script, prefix=prefix, max_per_user=max_per_user, max_age=max_age
            )
            publisher = Publisher(backplane, inbox, _REPLY_PREFIX + node)
            backplane.subscribe(publisher.reply_topic, publisher._answered)
            with trio.fail_after(connect_timeout):
                await backplane.wait_subscribed(publisher.reply_topic)
            yield publisher
            await backplane.flush()
        finally:
            with trio.move_on_after(connect_timeout, shield=True):
                await backplane.aclose()
            nursery.cancel_scope.cancel()
