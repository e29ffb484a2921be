"""The Service base class: the hooks a topic's service may override."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from hub.backplane import Recovery
from hub.errors import ErrorCode, ServiceError
from hub.permissions import Action
from hub.presence import Presence
from hub.protocol import EndCode, Payload
from hub.topics import Member, Topic


class Service:
    """What one topic does: who may join, and what events and calls mean.

    Subclass it and override what you need. Every hook runs in the topic's
    actor, one at a time. Raise `JoinRefusedError` from `join` to refuse a
    member, and `ServiceError(message, code=...)` from `join`, `handle_event` or
    `handle_call` to answer the client with an error. Any other exception,
    and a ServiceError from the other hooks, is a bug that crashes the topic
    (it is logged, its members are told, and their next join starts it afresh).

    `presence` is how its topics keep presence unless their route says
    otherwise (`app.route(..., presence=...)`; docs/presence.md): None keeps
    none. Then `self.topic.presence` lists who is here.
    """

    presence: ClassVar[Presence | None] = None
    #: The Ended code and reason the members of a crashed topic get.
    crash_code: ClassVar[str] = EndCode.TOPIC_CRASHED
    crash_reason: ClassVar[str] = "the topic ended unexpectedly; join again"

    def __init__(self, topic: Topic) -> None:
        self.topic = topic

    async def started(self) -> None:
        """Prepare state; runs once when the topic's actor starts."""

    async def authorize(self, member: Member, action: Action) -> bool:
        """Whether `member` may do `action`, for the actions the route leaves to the service.

        Asked only for actions whose permission is `Allow.SERVICE`
        (`hub.permissions`), before the hook that does the action (`join`,
        `handle_event`, `handle_call`); False answers the client `forbidden`.
        Refuses by default: a route that leaves a decision to its service
        must have the service make it.
        """
        return False

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        """Decide whether `member` may join; return the payload of the ok Reply.

        Accepts everyone by default.
        """
        return None

    async def joined(self, member: Member, recovery: Recovery) -> None:
        """Runs right after the ok Reply is queued: greet, announce, send the state.

        `recovery` says what a rejoining client missed. With
        `recovery.recovered`, the hub has already pushed it exactly what it
        missed (`recovery.missed`, in order, after the Reply): there is
        nothing to resend. Otherwise (a first join, or what the client saw
        is gone: another epoch, or older than what is kept) the client was
        told `recovered: false` and must refetch its state; `missed` is the
        recent history, which the service may push (rooms do) or not.
        """

    async def handle_timer(self, event: str, payload: Payload) -> None:
        """A timer set with `topic.send_after` or `topic.every` is due."""
        raise TypeError(
            f"{type(self).__name__} set a timer ({event!r}) but does not override handle_timer"
        )

    async def handle_info(self, message: object) -> None:
        """A `hub.topics.ServiceMessage` sent to the topic's actor arrived with `message`."""
        raise TypeError(
            f"{type(self).__name__} was sent {message!r} but does not override handle_info"
        )

    async def leave(self, member: Member) -> None:
        """`member` left, was kicked, or its connection ended."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        """A member published `event`. Refuses every event by default."""
        raise ServiceError(
            f"topic {self.topic.name!r} takes no events", code=ErrorCode.UNKNOWN_EVENT
        )

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        """A member called `event`; return the reply's payload. Refuses by default."""
        raise ServiceError(
            f"topic {self.topic.name!r} takes no calls", code=ErrorCode.UNKNOWN_EVENT
        )

    async def stopped(self) -> None:
        """Tidy up; runs once when the topic's actor ends, whatever the reason."""
