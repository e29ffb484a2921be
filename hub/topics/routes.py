"""Routes: which service serves which topics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from hub.permissions import Permissions, pattern_matches

if TYPE_CHECKING:
    from hub.services import Service
    from hub.topics.topic import Topic


@attrs.frozen
class Route:
    """Topics matching `pattern` are served by services made by `factory`.

    A pattern ending in `*` matches every topic that starts with what comes
    before it (`room:*` matches `room:lobby`, not `room:`); any other pattern
    matches only itself. `permissions` say who may join, publish, call and
    read presence and history (`hub.permissions`).
    """

    pattern: str
    factory: Callable[[Topic], Service]
    permissions: Permissions = attrs.field(factory=Permissions)

    def matches(self, topic: str) -> bool:
        return pattern_matches(self.pattern, topic)
