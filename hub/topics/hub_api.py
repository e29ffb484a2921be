"""What a service can reach of the hub beyond its own topic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import actors
from hub.protocol import Payload

if TYPE_CHECKING:
    from hub.notifications import Notification
    from hub.presence import PresenceSnapshot
    from hub.users import Whereabouts


class HubServices(Protocol):
    """The hub as a service sees it (`topic.hub`): other topics and backend actors.

    Implemented by the running hub (`hub.app.HubRuntime`).
    """

    async def publish(
        self, topic: str, event: str, payload: Payload = None, *, keep: bool = True
    ) -> int | None:
        """Push `event` to every member of `topic`, starting the topic if it is not live.

        Returns the event's offset when it is kept. Raises
        UnknownTopicError if no service serves the topic.
        """
        ...

    async def presence(self, topic: str) -> PresenceSnapshot:
        """Who is present in `topic` now (nobody if it is not live; it is not started)."""
        ...

    async def subscribe_presence(self, topic: str, subscriber: actors.ActorRef) -> PresenceSnapshot:
        """Send `subscriber` `topic`'s presence changes from now on; return who is here."""
        ...

    async def unsubscribe_presence(self, topic: str, subscriber: actors.ActorRef) -> None:
        """Stop sending `subscriber` the presence changes of `topic`."""
        ...

    async def start_topic(self, topic: str, init: Payload = None) -> None:
        """Start `topic`'s actor now, from the server, with `init` as its `topic.init`.

        For topics the server makes (a match for the players a matchmaker
        picked): its service reads `init` in `started`, and members join it
        as any topic. Like any topic it is temporary: it stops once empty
        for the empty-topic grace, and a crash ends it for its members (with
        its service's `crash_code`) and touches no other topic. Raises
        TopicExistsError if it is live already, UnknownTopicError if no
        service serves it, and TopicUnavailableError / TopicLimitError /
        actors.StartError if it cannot start.
        """
        ...

    async def notify(self, user: str, event: str, data: Payload = None) -> Notification:
        """Send `user` a notification, kept until acknowledged (docs/notifications.md).

        Raises InvalidNotificationError for what cannot be sent.
        """
        ...

    def where(self, user: str) -> tuple[Whereabouts, ...]:
        """Where `user` is connected now: each connection, oldest first (none: offline)."""
        ...

    def actor(self, name: str) -> actors.ActorRef:
        """The backend actor the application declared as `name` (see `Hub.actor`).

        Raises NoSuchActorError if there is none, or it is restarting.
        """
        ...
