"""Personal topics: `user:<id>`, where a user's notifications reach each of the user's devices.

The hub serves `user:*` with this service (unless
`notifications.personal_topics` is off). Only connections of user `<id>`
may join `user:<id>` (`hub.identity.user_of` of their identity); anyone
else is refused with `forbidden`.

- The ok Reply's payload is the inbox's status: `{"epoch", "offset",
  "unread", "dropped", "acked", "recovered"}` (`recovered` is false when
  notifications were dropped since the user last acknowledged). Right
  after it, every unacknowledged notification is pushed, oldest first, as
  a Push of its own event with its data and its offset.
- A notification sent while the device is joined is pushed at once.
- Call `ack` with `{"offset": n}` (and optionally the `epoch` of the Reply):
  every notification up to `n` is cleared for all of the user's devices,
  each of which gets a `$unread` Push with the new status; the call
  answers that status too. Call `unread` for the status alone.
- Whenever the count of dropped notifications or the acknowledged offset
  changes (an ack from the server, a notification dropped by the limits),
  each device gets a `$unread` Push with the status.
- Clients publish nothing here: notifications come from the server
  (`HubRuntime.notify`, `hub notify`).
"""

from __future__ import annotations

from collections.abc import Mapping

import actors
from hub.backplane import Recovery
from hub.errors import (
    ErrorCode,
    InvalidNotificationError,
    JoinRefusedError,
    ServiceError,
    brief_repr,
)
from hub.notifications import PERSONAL_PREFIX, SYNC, InboxStatus, Notifications
from hub.protocol import Payload
from hub.services.base import Service
from hub.topics import Member, Topic

#: The Push each device gets when the inbox's status changes.
UNREAD_EVENT = "$unread"


class PersonalService(Service):
    """The service of one personal topic (see the module docstring)."""

    def __init__(self, topic: Topic, *, notifications: Notifications) -> None:
        super().__init__(topic)
        self.user = topic.name.removeprefix(PERSONAL_PREFIX)
        self.notifications = notifications
        # Per member: the highest offset pushed to it, so that no
        # notification is pushed twice to one membership.
        self._sent: dict[actors.ActorRef, int] = {}
        # What the devices were last told of the acknowledged offset and drops.
        self._told: tuple[int, int] | None = None

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        if member.user != self.user:
            raise JoinRefusedError(
                f"{self.topic.name!r} is the personal topic of user {self.user!r}; "
                f"only that user's connections may join it",
                code=ErrorCode.FORBIDDEN,
            )
        status = await self.notifications.inbox.status(self.user)
        self._told = (status.acked, status.dropped)
        return {**status.as_payload(), "recovered": status.dropped == 0}

    async def joined(self, member: Member, recovery: Recovery) -> None:
        # Everything unacknowledged, again: a reconnecting device gets what
        # it did not acknowledge, a new one everything still kept.
        sent = 0
        for notification in await self.notifications.inbox.pending(self.user):
            self.topic.push(
                member, notification.event, notification.data, offset=notification.offset
            )
            sent = notification.offset
        self._sent[member.connection.ref] = sent

    async def leave(self, member: Member) -> None:
        self._sent.pop(member.connection.ref, None)

    async def handle_info(self, message: object) -> None:
        if message is not SYNC:
            raise TypeError(f"a personal topic takes SYNC messages, not {message!r}")
        inbox = self.notifications.inbox
        members = self.topic.members.values()
        # What is new to the member furthest behind, and no more.
        after = min((self._sent.get(member.connection.ref, 0) for member in members), default=0)
        pending = await inbox.pending(self.user, after=after) if members else ()
        for member in members:
            ref = member.connection.ref
            sent = self._sent.get(ref, 0)
            for notification in pending:
                if notification.offset > sent:
                    self.topic.push(
                        member, notification.event, notification.data, offset=notification.offset
                    )
                    sent = notification.offset
            self._sent[ref] = sent
        status = await inbox.status(self.user)
        told_acked, told_dropped = self._told or (0, 0)
        # An acknowledged offset that went down is an inbox forgotten (empty
        # for an age limit): nothing for the devices to learn.
        if status.acked > told_acked or status.dropped != told_dropped:
            self._tell(status)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        inbox = self.notifications.inbox
        match event:
            case "ack":
                offset, epoch = _ack_fields(payload)
                if epoch is not None and epoch != inbox.epoch:
                    raise ServiceError(
                        f"epoch {epoch!r} is not the inbox's ({inbox.epoch!r}): the inbox was "
                        f"reset; join again for what it holds",
                        code=ErrorCode.BAD_FIELD,
                    )
                try:
                    status = await inbox.ack(self.user, offset)
                except InvalidNotificationError as error:
                    raise ServiceError(str(error), code=ErrorCode.BAD_FIELD) from None
                if self.topic.metrics is not None:
                    self.topic.metrics.notifications_acked.inc()
                self._tell(status)
                return status.as_payload()
            case "unread":
                return (await inbox.status(self.user)).as_payload()
        raise ServiceError(
            f"personal topics answer 'ack' and 'unread' calls, not {event!r}",
            code=ErrorCode.UNKNOWN_EVENT,
        )

    def _tell(self, status: InboxStatus) -> None:
        """Push the inbox's status to every device of the user (`$unread`)."""
        self._told = (status.acked, status.dropped)
        payload = status.as_payload()
        for member in self.topic.members.values():
            self.topic.push(member, UNREAD_EVENT, payload)


def _ack_fields(payload: Payload) -> tuple[int, str | None]:
    """The `offset` (and `epoch`, if given) of an `ack` call's payload."""
    offset = payload.get("offset") if isinstance(payload, Mapping) else None
    if type(offset) is not int or offset < 0:
        raise ServiceError(
            f"an ack needs {{'offset': n}} with n an integer >= 0 (the offset of the "
            f"latest notification handled), got {brief_repr(payload)}",
            code=ErrorCode.BAD_FIELD,
        )
    epoch = payload.get("epoch") if isinstance(payload, Mapping) else None
    if epoch is not None and not isinstance(epoch, str):
        message = f"an ack's epoch is a string, got {brief_repr(epoch)}"
        raise ServiceError(message, code=ErrorCode.BAD_FIELD)
    return offset, epoch
