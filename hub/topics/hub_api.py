"""What a service can reach of the hub beyond its own topic."""

from __future__ import annotations

from typing import Protocol

import actors
from hub.protocol import Payload


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

    def actor(self, name: str) -> actors.ActorRef:
        """The backend actor the application declared as `name` (see `Hub.actor`).

        Raises NoSuchActorError if there is none, or it is restarting.
        """
        ...
