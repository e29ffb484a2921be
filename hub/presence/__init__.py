"""Presence: per topic, who is here, kept by the topic's actor and pushed to its members.

Declared per route (`app.route("room:*", RoomService, presence=Presence())`,
or a service's `presence` class attribute); see docs/presence.md.

- `policy`: `Presence` (a route's choices: mode, interval, grace, the join
  param that may name a user) and `PresenceSettings` (resolved);
- `state`: `PresenceState`, the pure core: entries, generations, ghosts in
  their grace, netted diffs;
- `topic`: `TopicPresence`, one topic's presence as its service sees it
  (`topic.presence`) and its actor drives (pushes, timers, subscribers);
- `messages`: what backend actors receive (`PresenceChanged`,
  `PresenceSnapshot`) and the calls that ask a topic's actor for them;
- `view`: `PresenceView`, a client's copy kept from `$presence_state` and
  `$presence_diff` pushes.
"""

from hub.presence.messages import (
    ListPresence,
    PresenceChanged,
    PresenceSnapshot,
    ResendPresence,
    SubscribePresence,
    UnsubscribePresence,
)
from hub.presence.policy import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MAX_META_BYTES,
    DEFAULT_MAX_SUBSCRIBERS,
    MAX_KEY_CHARS,
    MAX_USER_CHARS,
    Presence,
    PresenceMode,
    PresenceSettings,
)
from hub.presence.state import Claim, Diff, Entry, NameTakenError, PresenceState
from hub.presence.topic import (
    COUNT_EVENT,
    DIFF_EVENT,
    META_EVENT,
    PARAM,
    STATE_EVENT,
    PresenceDue,
    PresenceLimitError,
    TopicPresence,
)
from hub.presence.view import PresenceView

__all__ = [
    "COUNT_EVENT",
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_MAX_META_BYTES",
    "DEFAULT_MAX_SUBSCRIBERS",
    "DIFF_EVENT",
    "MAX_KEY_CHARS",
    "MAX_USER_CHARS",
    "META_EVENT",
    "PARAM",
    "STATE_EVENT",
    "Claim",
    "Diff",
    "Entry",
    "ListPresence",
    "NameTakenError",
    "Presence",
    "PresenceChanged",
    "PresenceDue",
    "PresenceLimitError",
    "PresenceMode",
    "PresenceSettings",
    "PresenceSnapshot",
    "PresenceState",
    "PresenceView",
    "ResendPresence",
    "SubscribePresence",
    "TopicPresence",
    "UnsubscribePresence",
]
