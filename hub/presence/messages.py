"""What backend actors receive of a topic's presence, and the calls that ask a topic for it."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

import actors
from hub.presence.state import Diff, Entry

__all__ = [
    "ListPresence",
    "PresenceChanged",
    "PresenceSnapshot",
    "ResendPresence",
    "SubscribePresence",
    "UnsubscribePresence",
]


@attrs.frozen
class PresenceSnapshot:
    """Who is present in `topic`: every user with its entries.

    A subscriber receives one (as a message) in place of the diffs it
    missed when its mailbox was full: it replaces what it knew.
    """

    topic: str
    users: Mapping[str, tuple[Entry, ...]]

    @property
    def count(self) -> int:
        """How many users are present."""
        return len(self.users)


@attrs.frozen
class PresenceChanged:
    """A subscriber's message: `topic`'s presence changed by `diff` (entries keyed by user)."""

    topic: str
    diff: Diff


# --- calls to a topic's actor (HubRuntime sends them) ------------------------


@attrs.frozen(eq=False)
class ListPresence:
    """Answered with the topic's PresenceSnapshot."""


@attrs.frozen(eq=False)
class SubscribePresence:
    """Send `subscriber` PresenceChanged messages from now on; answered with a PresenceSnapshot."""

    subscriber: actors.ActorRef


@attrs.frozen(eq=False)
class UnsubscribePresence:
    """Answered with None; sent as a message (not a call), the same without an answer."""

    subscriber: actors.ActorRef


@attrs.frozen(eq=False)
class ResendPresence:
    """A message: `subscriber` lost changes on their way (to another node): send it a
    PresenceSnapshot at the next change, in place of them."""

    subscriber: actors.ActorRef
