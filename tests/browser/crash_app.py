"""A hub with a topic a client can crash on purpose: for testing recovery for real.

hub serve tests.browser.crash_app:app
"""

from __future__ import annotations

from hub import Hub, Member, Payload, RoomService


class CrashOnRequest(RoomService):
    """A room whose actor crashes when a member publishes `crash`."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "crash":
            raise RuntimeError("crashed on request, for the test")
        await super().handle_event(member, event, payload)


app = Hub("crash test")
app.route("crash:*", CrashOnRequest)
