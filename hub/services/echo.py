"""Echo: calls answer with their payload; events come back to their sender."""

from __future__ import annotations

from hub.protocol import Payload
from hub.services.base import Service
from hub.topics import Member


class EchoService(Service):
    """For testing clients: nothing is shared between members."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.push(member, event, payload)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return payload
