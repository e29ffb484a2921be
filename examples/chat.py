"""The chat demo as an application, with a service of its own.

    .venv/bin/hub serve examples.chat:app   # then open http://127.0.0.1:8000/

Rooms (`room:*`) keep 100 messages of history and presence (the page shows
who is here, their status and who is typing); `help:*` topics are a
moderated room that refuses messages with banned words, written in a few
lines on top of RoomService; `hall:*` rooms are for crowds: their presence
diffs are coalesced, at most four a second to each member.
"""

from __future__ import annotations

from hub import Hub, Member, Payload, Presence, RoomService, ServiceError

BANNED = {"spam", "scam"}


class ModeratedRoom(RoomService):
    """A room that refuses messages with banned words (error code `moderated`)."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        text = payload.get("text", "") if isinstance(payload, dict) else ""
        if isinstance(text, str) and BANNED & set(text.lower().split()):
            raise ServiceError("that message has a banned word", code="moderated")
        await super().handle_event(member, event, payload)


app = Hub("chat example")
app.route("room:*", RoomService)
app.route("help:*", ModeratedRoom)
crowds = Presence(mode="coalesced", interval=0.25, user_param="user")
app.route("hall:*", RoomService, presence=crowds)
