"""Routes: which service serves which topics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs

from hub.permissions import Permissions, pattern_matches

if TYPE_CHECKING:
    from hub.presence import Presence
    from hub.services import Service
    from hub.topics.topic import Topic


@attrs.frozen
class Route:
    """Topics matching `pattern` are served by services made by `factory`.

    A pattern ending in `*` matches every topic that starts with what comes
    before it (`room:*` matches `room:lobby`, not `room:`); any other pattern
    matches only itself. `permissions` say who may join, publish, call and
    read presence and history (`hub.permissions`).

    `presence` is how the topics keep presence (`hub.presence.Presence`):
    None takes the service's own choice (its `presence` class attribute),
    False keeps none.
    """

    pattern: str
    factory: Callable[[Topic], Service]
    permissions: Permissions = attrs.field(factory=Permissions)
    presence: Presence | Literal[False] | None = None

    def matches(self, topic: str) -> bool:
        return pattern_matches(self.pattern, topic)
