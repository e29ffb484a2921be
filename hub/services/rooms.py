"""Rooms: chat-like broadcast with a bounded history replayed on join."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from hub.backplane import Recovery
from hub.errors import ErrorCode, JoinRefusedError, ServiceError
from hub.presence import Presence
from hub.protocol import Payload
from hub.services.base import Service
from hub.topics import Member, Topic

# Longest chat message, in characters.
MAX_TEXT: Final = 2000

# Longest user name, in characters.
MAX_USER: Final = 40


class RoomService(Service):
    """A chat room, with presence.

    - The member's user: its authenticated identity's, or else the join
      param `{"user": name}` (1 to 40 characters), which the room's presence
      refuses (`name_taken`) while a live connection of another identity is
      present under that name. The ok Reply's payload is `{"members": users
      present}`, with the hub's `epoch` and `offset` (the room's history
      position, and `recovered` for a rejoin). Right after it, the room's
      recent history arrives as `message` Pushes with their offsets (a
      client rejoining with the epoch and offset it last saw gets only what
      came after it, the hub replays it, when that is still kept, and the
      recent history otherwise), then the presence state for a join that
      asked for it (`$presence_state`, docs/presence.md).
    - Publish `message` with `{"text": str}` (at most 2,000 characters): every
      member, the sender too, gets a `message` Push with
      `{"user", "text", "at"}`. The user is the member's, never the client's
      payload, so nobody can speak as someone else.
    - Presence: full by default (`presence` below); a route may choose
      another mode (`app.route("room:*", RoomService, presence=...)`). With
      presence off (`presence=False`) names come from the join param
      unchecked.
    - With `announce_members=True`, whenever someone joins or leaves, every
      member present gets a `members` Push: `{"members": count, "joined":
      name}` or `{"members": count, "left": name}` (count: connections).
    - Call `members`: the users present (each once), in arrival order.
    """

    presence = Presence(user_param="user")

    def __init__(self, topic: Topic, *, announce_members: bool = False) -> None:
        super().__init__(topic)
        self.announce_members = announce_members

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        user = self._user(member)
        if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER:
            raise JoinRefusedError(
                f"join params need a 'user' name of 1 to {MAX_USER} characters, got {user!r}",
                code=ErrorCode.BAD_FIELD,
            )
        presence = self.topic.presence
        if presence is None:
            members = len(self.topic.members) + 1
        else:
            members = presence.count() + (0 if user in presence else 1)
        return {"members": members}

    async def joined(self, member: Member, recovery: Recovery) -> None:
        # A recovered member has had exactly what it missed from the hub;
        # anyone else gets the recent history (the backplane keeps it, and
        # it outlives the room's idle stop), which is a room's whole state.
        if not recovery.recovered:
            for record in recovery.missed:
                self.topic.push(member, record.event, record.payload, offset=record.offset)
        self._announce("joined", member)

    async def leave(self, member: Member) -> None:
        self._announce("left", member)

    def _announce(self, change: str, member: Member) -> None:
        """Tell everyone present who came or went, and how many are here now.

        A change, not the whole list: a join costs one small push per member,
        however large the room. The `members` call gives the whole list.
        """
        if self.announce_members:
            count = len(self.topic.members)
            self.topic.broadcast("members", {"members": count, change: self._user(member)})

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event != "message":
            raise ServiceError(
                f"rooms take 'message' events, not {event!r}", code=ErrorCode.UNKNOWN_EVENT
            )
        text = payload.get("text") if isinstance(payload, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(
                "a message needs a non-empty 'text' string", code=ErrorCode.BAD_FIELD
            )
        if len(text) > MAX_TEXT:
            raise ServiceError(
                f"text is {len(text)} characters, over the limit of {MAX_TEXT}",
                code=ErrorCode.BAD_FIELD,
            )
        message: Payload = {"user": self._user(member), "text": text, "at": time.time()}
        self.topic.broadcast("message", message, keep=True)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        if event == "members":
            if self.topic.presence is not None:
                return list(self.topic.presence.list())
            return [self._user(other) for other in self.topic.members.values()]
        raise ServiceError(
            f"rooms answer 'members' calls, not {event!r}", code=ErrorCode.UNKNOWN_EVENT
        )

    def _user(self, member: Member) -> Payload:
        """Who `member` speaks as: its user, or (presence off) its join param, unchecked."""
        if member.user is not None or self.topic.presence is not None:
            return member.user
        return member.params.get("user")
