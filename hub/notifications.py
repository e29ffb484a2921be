"""Notifications: a bounded inbox per user, delivered to every device of the user.

    await runtime.notify("ada", "invite", {"room": "chess:7"})

A notification is an event for one user. It is kept in the user's inbox
(`Inbox`) until acknowledged, and pushed at once to every connection of the
user that has joined its personal topic `user:<id>`
(`hub.services.PersonalService`, which only the user's own connections may
join). A connection that joins gets every unacknowledged notification, so
what a user missed while offline, or did not acknowledge before a
reconnect, comes again. The client acknowledges by offset: everything up
to it is cleared, for all the user's devices, each of which is pushed the
new unread count (`$unread`).

Each notification gets an offset when it is added: offsets rise for each
user (they are not contiguous), within the inbox's `epoch`, which changes
when the inbox's memory does (a restart of an in-process inbox).

An inbox is bounded: at most `max_per_user` notifications, each kept at
most `max_age` seconds. A notification pushed out by a newer one, or
expired, is dropped and counted: in `triohub_notifications_dropped`
(by reason), and in the user's `dropped` count, which the user's
devices see in the join Reply and in `$unread` until the user next
acknowledges. docs/notifications.md states the guarantees.

Backend actors in the hub's process notify through the hub's notifier
actor, registered as `NOTIFIER`: `await notify_via(self.ctx.system, user,
event, data)`, or a `Notify` message of their own (`send` to go on at once,
`call` to learn the offset).

`Inbox` is the seam where inboxes live: `LocalInbox` keeps them in this
process; `hub.redis_inbox.RedisInbox` keeps them in Redis, shared by
every node of a hub on the Redis backplane, so a user's inbox is the same
whichever worker the user connects to. With a shared inbox, the news that
a user's inbox changed goes to every node through the backplane (a record
on `WAKE_TOPIC`, which no client can join), and each node tells its own
live personal topic of the user, which reads the inbox and pushes what is
new to its members.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import trio

import actors
from hub.backplane import Backplane, Record
from hub.backplane.local import new_epoch
from hub.errors import EncodeError, InvalidFieldError, InvalidNotificationError
from hub.identity import user_of
from hub.protocol import JSON, Payload, Push
from hub.topics import ServiceMessage

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.topics import Topics

__all__ = [
    "INBOX_MAX_AGE_SECONDS",
    "INBOX_MAX_PER_USER",
    "NOTIFIER",
    "PERSONAL_PREFIX",
    "SYNC",
    "WAKE_TOPIC",
    "DropReason",
    "Inbox",
    "InboxStatus",
    "LocalInbox",
    "Notification",
    "Notifications",
    "Notifier",
    "Notify",
    "check_notification",
    "notify_via",
    "personal_topic",
]

logger = logging.getLogger(__name__)

#: The registered name of the hub's notifier actor (for backend actors).
NOTIFIER: Final = "$notifications"

# Notify messages queued for the notifier; a sender waits for room beyond.
NOTIFIER_MAILBOX_CAPACITY: Final = 1024

#: Personal topics are `user:<id>`.
PERSONAL_PREFIX: Final = "user:"

# Unacknowledged notifications kept per user (`notifications.max_per_user`).
INBOX_MAX_PER_USER: Final = 100

# How long an unacknowledged notification is kept (`notifications.max_age_seconds`).
INBOX_MAX_AGE_SECONDS: Final = 86_400.0

# How long `notify` waits for a busy personal topic to take the news; past
# it the notification waits in the inbox for the next one, or the next join.
WAKE_TIMEOUT_SECONDS: Final = 5.0

#: Where the news that a user's inbox changed crosses nodes (a shared inbox):
#: a backplane record whose payload is the user id. Not a topic any client
#: can name (topics hold no spaces).
WAKE_TOPIC: Final = "$notifications wake"

# Users whose personal topics are still to be told of news from another
# node; past this, news is dropped (logged): the next news, or the next
# join, pushes what the inbox holds.
MAX_WAKES_WAITING: Final = 10_000

# Expired notifications are looked for at most this often, and at least
# this often (a tenth of the age limit in between).
_SWEEP_MIN_SECONDS: Final = 1.0
_SWEEP_MAX_SECONDS: Final = 60.0


def personal_topic(user: str) -> str:
    """The personal topic of `user`: `user:<id>`."""
    return PERSONAL_PREFIX + user


class DropReason(enum.StrEnum):
    """Why a notification left an inbox unacknowledged (the metric's `reason`)."""

    FULL = "full"
    """A newer one came while the inbox held `max_per_user`."""
    EXPIRED = "expired"
    """It was older than `max_age`."""


@attrs.frozen
class Notification:
    """One notification in a user's inbox."""

    #: Rises for each user within the inbox's epoch; acknowledged by it.
    offset: int
    event: str
    data: Payload
    #: When it was added, by trio's clock.
    at: float

    def as_json(self) -> dict[str, Payload]:
        return {"offset": self.offset, "event": self.event, "data": self.data}


@attrs.frozen
class InboxStatus:
    """Where a user's inbox stands: what the join Reply and `$unread` say."""

    epoch: str
    #: The offset of the user's latest notification (0: none kept).
    offset: int
    #: Notifications not acknowledged yet.
    unread: int
    #: Notifications dropped by the limits since the user last acknowledged.
    dropped: int
    #: The highest offset the user has acknowledged (0: none).
    acked: int

    def as_payload(self) -> dict[str, Payload]:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "unread": self.unread,
            "dropped": self.dropped,
            "acked": self.acked,
        }


#: Told of every notification an inbox drops: (user, how many, why).
DropObserver = Callable[[str, int, DropReason], None]


class Inbox(abc.ABC):
    """Where users' notifications wait until they are acknowledged (the module docstring)."""

    #: The inbox's epoch: offsets from another epoch mean nothing here.
    epoch: str

    @abc.abstractmethod
    async def add(self, user: str, event: str, data: Payload) -> Notification:
        """Keep a new notification for `user`; return it with its offset."""

    @abc.abstractmethod
    async def pending(self, user: str, *, after: int = 0) -> Sequence[Notification]:
        """`user`'s unacknowledged notifications with an offset above `after`, oldest first."""

    @abc.abstractmethod
    async def status(self, user: str) -> InboxStatus:
        """Where `user`'s inbox stands."""

    @abc.abstractmethod
    async def ack(self, user: str, offset: int) -> InboxStatus:
        """Clear `user`'s notifications up to `offset` (and the dropped count); the new status.

        Raises InvalidNotificationError for an offset this inbox never gave.
        """

    @abc.abstractmethod
    async def expire(self) -> Sequence[str]:
        """Drop what is older than the age limit; return the users who lost some."""


@attrs.define(eq=False, slots=True)
class _Box:
    """One user's inbox in this process."""

    entries: deque[Notification] = attrs.Factory(deque)
    last: int = 0
    acked: int = 0
    dropped: int = 0
    #: After a drop, kept (even empty) until then, by trio's clock, for the user to learn of it.
    keep_until: float = 0.0


class LocalInbox(Inbox):
    """Inboxes in this process's memory: lost when it stops (a new epoch then).

    Offsets come from one counter for all users, so that they keep rising
    for a user whose emptied inbox was forgotten. An inbox is forgotten
    once it holds nothing (and, after a drop, once the drop is `max_age`
    old): the memory it takes is bounded by what was notified over the age
    limit, and by `max_per_user` per user.
    """

    def __init__(
        self,
        *,
        max_per_user: int = INBOX_MAX_PER_USER,
        max_age: float = INBOX_MAX_AGE_SECONDS,
        on_dropped: DropObserver | None = None,
    ) -> None:
        self.epoch = new_epoch()
        self.max_per_user = max_per_user
        self.max_age = max_age
        self.on_dropped = on_dropped
        self._boxes: dict[str, _Box] = {}
        self._offsets = itertools.count(1)
        self._last_offset = 0
        # (when to look, user), in the order they were added, which is the
        # order they come due in (one age limit for all): what `expire`
        # looks at, oldest first.
        self._due: deque[tuple[float, str]] = deque()
        self._count = 0

    def __len__(self) -> int:
        """Notifications kept, for every user."""
        return self._count

    async def add(self, user: str, event: str, data: Payload) -> Notification:
        now = trio.current_time()
        box = self._boxes.get(user)
        if box is None:
            box = self._boxes[user] = _Box()
        offset = self._last_offset = next(self._offsets)
        notification = Notification(offset, event, data, now)
        box.entries.append(notification)
        box.last = offset
        self._count += 1
        self._due.append((now + self.max_age, user))
        if len(box.entries) > self.max_per_user:
            box.entries.popleft()
            self._dropped(user, box, 1, DropReason.FULL, now)
        return notification

    async def pending(self, user: str, *, after: int = 0) -> Sequence[Notification]:
        box = self._current(user)
        if box is None:
            return ()
        # Newest first, back to `after`: the usual read (what is new since the
        # last push) costs what it returns, not the whole inbox.
        newer: list[Notification] = []
        for entry in reversed(box.entries):
            if entry.offset <= after:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    async def status(self, user: str) -> InboxStatus:
        box = self._current(user)
        if box is None:
            return InboxStatus(self.epoch, 0, 0, 0, 0)
        return InboxStatus(self.epoch, box.last, len(box.entries), box.dropped, box.acked)

    async def ack(self, user: str, offset: int) -> InboxStatus:
        if offset > self._last_offset:
            raise InvalidNotificationError(
                f"offset {offset} was never given to a notification (the latest is "
                f"{self._last_offset}); acknowledge an offset you were sent"
            )
        box = self._current(user)
        if box is not None:
            while box.entries and box.entries[0].offset <= offset:
                box.entries.popleft()
                self._count -= 1
            box.acked = max(box.acked, offset)
            box.dropped = 0
            # An emptied inbox is forgotten by `expire`, when its last
            # notification would have expired.
        return await self.status(user)

    async def expire(self) -> Sequence[str]:
        now = trio.current_time()
        users: list[str] = []
        while self._due and self._due[0][0] <= now:
            _when, user = self._due.popleft()
            box = self._boxes.get(user)
            if box is None:
                continue
            before = box.dropped
            self._expire(user, box, now)
            if box.dropped > before:
                users.append(user)
            self._forget_if_spent(user, box, now)
        return users

    def _current(self, user: str) -> _Box | None:
        """`user`'s inbox with what has expired dropped (None if there is none)."""
        box = self._boxes.get(user)
        if box is not None:
            self._expire(user, box, trio.current_time())
        return box

    def _expire(self, user: str, box: _Box, now: float) -> None:
        expired = 0
        while box.entries and box.entries[0].at + self.max_age <= now:
            box.entries.popleft()
            expired += 1
        if expired:
            self._dropped(user, box, expired, DropReason.EXPIRED, now)

    def _dropped(self, user: str, box: _Box, count: int, reason: DropReason, now: float) -> None:
        box.dropped += count
        self._count -= count
        # The drop is kept for the user to learn of, for an age limit.
        box.keep_until = now + self.max_age
        self._due.append((box.keep_until, user))
        if self.on_dropped is not None:
            self.on_dropped(user, count, reason)

    def _forget_if_spent(self, user: str, box: _Box, now: float) -> None:
        """Forget an empty inbox, unless it holds a drop its user may still learn of."""
        if not box.entries and (not box.dropped or box.keep_until <= now):
            del self._boxes[user]


@attrs.frozen
class _Sync:
    """To a personal topic: the user's inbox changed; push what is new, and the unread count."""


#: The message `Notifications` sends a personal topic's service (`PersonalService`).
SYNC: Final = _Sync()


@attrs.define(eq=False)
class Notifications:
    """The hub's notifications: the inbox, and the way news reaches a user's live topic."""

    inbox: Inbox
    #: The live topics (whose personal topic is running?).
    topics: Topics | None = None
    metrics: HubMetrics | None = None
    wake_timeout: float = WAKE_TIMEOUT_SECONDS
    #: Whether the hub serves `user:*` as personal topics (`PersonalService`):
    #: if not, a live `user:` topic is the application's, and is not woken.
    personal_topics: bool = False
    #: With an inbox shared by several nodes: the backplane that tells every
    #: node of a change (`WAKE_TOPIC`). None: this node alone needs telling.
    backplane: Backplane | None = None
    _waiting: dict[str, None] = attrs.Factory(dict)
    _wakes_came: trio.Event = attrs.Factory(trio.Event)

    async def notify(self, user: str, event: str, data: Payload = None) -> Notification:
        """Send `event` with `data` to `user`: kept until acknowledged, pushed to each device.

        Returns the notification (with its offset) once it is in the inbox.
        Raises InvalidNotificationError for a user id or event name that no
        personal topic or Push can carry, an event starting with `$` (the
        hub's), or data JSON cannot carry (every device must be able to
        receive it).
        """
        check_notification(user, event, data)
        notification = await self.inbox.add(user, event, data)
        if self.metrics is not None:
            self.metrics.notifications.inc()
        await self._wake(user)
        return notification

    async def ack(self, user: str, offset: int) -> InboxStatus:
        """Acknowledge `user`'s notifications up to `offset` from the server (as a device does)."""
        status = await self.inbox.ack(user, offset)
        await self._wake(user)
        return status

    async def unacknowledged(self, user: str) -> tuple[tuple[Notification, ...], int]:
        """`user`'s unacknowledged notifications, and how many were dropped since the last ack."""
        pending = tuple(await self.inbox.pending(user))
        status = await self.inbox.status(user)
        return pending, status.dropped

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drop expired notifications as they come due, until cancelled (with the hub).

        With a shared inbox, also tell this node's personal topics of the
        news from other nodes. A sweep that cannot reach the inbox (Redis
        away) is logged and tried again at the next.
        """
        max_age = getattr(self.inbox, "max_age", math.inf)
        interval = min(_SWEEP_MAX_SECONDS, max(_SWEEP_MIN_SECONDS, max_age / 10))
        backplane = self.backplane
        if backplane is not None:
            backplane.subscribe(WAKE_TOPIC, self._woken)
        try:
            async with trio.open_nursery() as nursery:
                if backplane is not None:
                    nursery.start_soon(self._wake_here_as_told)
                task_status.started()
                while True:
                    try:
                        users = await self.inbox.expire()
                    except ConnectionError as error:  # a shared inbox is away
                        logger.warning("notification inboxes not swept: %s", error)
                        users = ()
                    for user in users:
                        await self._wake(user)
                    await trio.sleep(interval)
        finally:
            if backplane is not None:
                backplane.unsubscribe(WAKE_TOPIC)

    def _woken(self, record: Record) -> None:
        """A node said a user's inbox changed: tell the user's personal topic here (soon)."""
        user = record.payload
        if not isinstance(user, str):
            logger.warning("a wake on %r named no user: %r", WAKE_TOPIC, user)
            return
        if len(self._waiting) >= MAX_WAKES_WAITING and user not in self._waiting:
            logger.warning("%d users' news waiting already: %r's dropped", len(self._waiting), user)
            return
        self._waiting[user] = None  # news for one user comes together
        self._wakes_came.set()

    async def _wake_here_as_told(self) -> None:
        while True:
            await self._wakes_came.wait()
            self._wakes_came = trio.Event()
            users, self._waiting = self._waiting, {}
            for user in users:
                await self._wake_here(user)

    async def _wake(self, user: str) -> None:
        """Tell `user`'s personal topics that the inbox changed: on every node, if it is shared."""
        if self.backplane is None:
            await self._wake_here(user)
        elif self.personal_topics:
            self.backplane.publish(Record(WAKE_TOPIC, "changed", user, ""))

    async def _wake_here(self, user: str) -> None:
        """Tell `user`'s personal topic on this node, if it runs, that the inbox changed.

        Waits (at most `wake_timeout`) for room in its mailbox: a backend
        that notifies faster than the topic pushes is slowed, not queued
        for without bound. If it runs out, the inbox still holds the news:
        the next wake, or the next join, pushes it.
        """
        if self.topics is None or not self.personal_topics:
            return
        ref = self.topics.whereis(personal_topic(user))
        if ref is None:
            return
        # A topic stopped meanwhile reads the inbox afresh when it starts again.
        with trio.move_on_after(self.wake_timeout), contextlib.suppress(actors.ActorExitedError):
            await ref.send(ServiceMessage(SYNC))


def check_notification(user: str, event: str, data: Payload) -> None:
    """Raise InvalidNotificationError unless `user` may be sent `event` with `data`."""
    if user_of(user) is None:
        raise InvalidNotificationError(f"a notification needs a user id, got {user!r}")
    if event.startswith("$"):
        raise InvalidNotificationError(
            f"event names starting with '$' are the hub's; got {event!r}"
        )
    try:
        JSON.encode(Push(personal_topic(user), event, data, 1))
    except InvalidFieldError as error:
        raise InvalidNotificationError(f"cannot notify {user!r} of {event!r}: {error}") from None
    except (EncodeError, ValueError) as error:
        raise InvalidNotificationError(
            f"a notification's data must be JSON (every device must be able to receive it): {error}"
        ) from None


@attrs.frozen
class Notify:
    """To the hub's notifier actor (`NOTIFIER`): send `user` the notification `event`.

    As a call, answered with the Notification, or failed with
    InvalidNotificationError; as a send, an invalid one is logged.
    """

    user: str
    event: str
    data: Payload = None


class Notifier(actors.Actor):
    """The hub's notifier: `Notify` messages from backend actors, one at a time."""

    mailbox_capacity = NOTIFIER_MAILBOX_CAPACITY

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    async def handle(self, message: object) -> None:
        match message:
            case Notify(user=user, event=event, data=data):
                try:
                    await self.notifications.notify(user, event, data)
                except InvalidNotificationError as error:
                    # The sender's mistake, not the notifier's: said, not crashed on.
                    logger.warning("a Notify sent to %s was refused: %s", NOTIFIER, error)
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, message)

    async def handle_call(self, request: object, call: actors.Call) -> object:
        match request:
            case Notify(user=user, event=event, data=data):
                try:
                    return await self.notifications.notify(user, event, data)
                except InvalidNotificationError as error:
                    call.fail(error)
                    return actors.NO_REPLY
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, request)


async def notify_via(
    system: actors.System,
    user: str,
    event: str,
    data: Payload = None,
    *,
    timeout: float = WAKE_TIMEOUT_SECONDS,
) -> Notification:
    """Send `user` a notification from any actor of the hub's `system` (`ctx.system`).

    Returns the notification once it is in the inbox. Raises
    InvalidNotificationError (as `HubRuntime.notify` does), LookupError if
    the hub's notifier is not running (the hub is stopping), and
    actors.CallTimeoutError after `timeout`.
    """
    ref = system.registry.whereis(NOTIFIER)
    if ref is None:
        raise LookupError(f"the hub's notifier ({NOTIFIER!r}) is not running")
    notification: Notification = await ref.call(Notify(user, event, data), timeout=timeout)
    return notification
