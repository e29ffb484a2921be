"""How a route's topics keep presence: `Presence`, declared per route, and its settings."""

from __future__ import annotations

import enum
import math
from typing import Final

import attrs

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_MAX_META_BYTES",
    "DEFAULT_MAX_SUBSCRIBERS",
    "MAX_KEY_CHARS",
    "MAX_USER_CHARS",
    "Presence",
    "PresenceMode",
    "PresenceSettings",
]

# An ended connection's entries stay this long: a client back within it
# (a reload, a network blip) shows no leave and no join.
DEFAULT_GRACE_SECONDS: Final = 5.0

# Coalesced and counts modes push at most once per interval to each member.
DEFAULT_INTERVAL_SECONDS: Final = 0.5

# The most a connection's meta may take, as msgpack.
DEFAULT_MAX_META_BYTES: Final = 1024

# Backend actors subscribed to one topic's presence at most.
DEFAULT_MAX_SUBSCRIBERS: Final = 16

# The longest user name a join param may claim, and the longest device key.
MAX_USER_CHARS: Final = 64
MAX_KEY_CHARS: Final = 64


class PresenceMode(enum.StrEnum):
    """What members are pushed about who is here."""

    FULL = "full"
    """The whole state on join, then a diff after every change."""
    COALESCED = "coalesced"
    """The whole state on join, then at most one diff per interval (changes netted)."""
    COUNTS = "counts"
    """Only the counts (users, connections), at most once per interval, when they change."""


def _check_seconds(
    instance: object, attribute: attrs.Attribute[float | None], value: object
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Presence({attribute.name}=...) takes seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (attribute.name == "interval" and value == 0):
        rule = "> 0" if attribute.name == "interval" else ">= 0"
        raise ValueError(f"Presence({attribute.name}=...) must be a number {rule}, got {value!r}")


@attrs.frozen
class Presence:
    """Presence for a route's topics: `app.route("room:*", RoomService, presence=Presence())`.

    - `mode`: "full", "coalesced" or "counts" (`PresenceMode`);
    - `interval`: seconds between pushes in coalesced and counts modes;
    - `grace`: seconds an ended connection's entry stays (0: it leaves at once);
    - `user_param`: the join param that names the user of a connection
      without an authenticated identity (say "user"); None (the default)
      tracks only authenticated users. A name so claimed is refused
      (`name_taken`) while a live connection of another identity holds it.

    None takes the hub's setting (`[presence]` in the configuration).
    """

    mode: PresenceMode = attrs.field(default=PresenceMode.FULL, converter=PresenceMode)
    interval: float | None = attrs.field(default=None, validator=_check_seconds)
    grace: float | None = attrs.field(default=None, validator=_check_seconds)
    user_param: str | None = None

    def settings(self, defaults: PresenceSettings) -> PresenceSettings:
        """These choices over the hub's `defaults`."""
        return attrs.evolve(
            defaults,
            mode=self.mode,
            interval=defaults.interval if self.interval is None else self.interval,
            grace=defaults.grace if self.grace is None else self.grace,
            user_param=self.user_param,
        )


@attrs.frozen
class PresenceSettings:
    """One topic's presence, resolved: its route's choices over the hub's settings."""

    mode: PresenceMode = PresenceMode.FULL
    interval: float = DEFAULT_INTERVAL_SECONDS
    grace: float = DEFAULT_GRACE_SECONDS
    user_param: str | None = None
    max_meta_bytes: int = DEFAULT_MAX_META_BYTES
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
