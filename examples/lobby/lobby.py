"""`lobby:<id>` topics: a host's room of players with a capacity, settings, and a ready check.

The first player to join is the host; its join params set the lobby up
(`{"capacity": 4, "settings": {"target": 10}}`). Who is in is the hub's
presence (`$presence_state` and `$presence_diff` for a join that asks with
`$presence`; docs/presence.md); who is ready, who hosts and the settings
are the `lobby` state, pushed (latest-value) on every change. A full lobby
refuses a join with code `lobby_full`.

Events: `ready` `{"ready": true}`; and the host's `kick` `{"player": name}`,
`settings` `{"capacity": n, "settings": {...}}` and `start`, which opens a
ready check: every player must be ready within `ready_timeout` seconds.
When all are, a match is started for them (`topic.hub.start_topic`) and
everyone is pushed `match_found` with its topic; when the time is up, the
players who were not ready are removed (Ended, code `not_ready`) and the
lobby waits again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import actors
from hub import HubError, JoinRefusedError, Member, Payload, Presence, Service, ServiceError, Topic
from hub.backplane import Recovery

from .players import player_of

DEFAULT_CAPACITY: Final = 4
MAX_CAPACITY: Final = 8
# How long the players have to be ready once the host starts a ready check.
READY_TIMEOUT_SECONDS: Final = 15.0
# The match settings a host may choose, and their bounds.
SETTINGS: Final[Mapping[str, tuple[int, int]]] = {"target": (1, 50)}


def _capacity(value: Payload) -> int:
    if type(value) is not int or not 2 <= value <= MAX_CAPACITY:
        raise ServiceError(f"capacity is 2 to {MAX_CAPACITY} players", code="bad_settings")
    return value


def _settings(value: Payload) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ServiceError("settings are a map", code="bad_settings")
    settings: dict[str, int] = {}
    for name, setting in value.items():
        bounds = SETTINGS.get(name)
        if bounds is None:
            known = ", ".join(SETTINGS)
            raise ServiceError(f"unknown setting {name!r}; known: {known}", code="bad_settings")
        low, high = bounds
        if type(setting) is not int or not low <= setting <= high:
            raise ServiceError(f"{name} is {low} to {high}", code="bad_settings")
        settings[name] = setting
    return settings


class LobbyService(Service):
    """One lobby: its players (in join order), their ready states, its host and settings."""

    # Who is in: every player, by user (a reload within the grace is no leave).
    presence = Presence()

    def __init__(
        self,
        topic: Topic,
        *,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        match_init: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(topic)
        self.ready_timeout = ready_timeout
        self.match_init = dict(match_init or {})
        self.capacity = DEFAULT_CAPACITY
        self.settings: dict[str, int] = {}
        self.host: str | None = None
        # The players in, in join order, with whether each is ready.
        self.ready: dict[str, bool] = {}
        self.members: dict[str, Member] = {}
        self.check: actors.Timer | None = None
        self.matches_started = 0

    # --- membership ------------------------------------------------------------

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        name = player_of(member)
        if name in self.members:
            raise JoinRefusedError("you are in this lobby already", code="already_in_lobby")
        if not self.members:
            # The first one in hosts, and sets the lobby up.
            try:
                self.capacity = _capacity(params.get("capacity", DEFAULT_CAPACITY))
                self.settings = _settings(params.get("settings", {}))
            except ServiceError as error:
                raise JoinRefusedError(error.message, code=error.code) from None
        elif len(self.members) >= self.capacity:
            raise JoinRefusedError(
                f"the lobby is full ({self.capacity} players)", code="lobby_full"
            )
        return {"player": name, "host": self.host or name}

    async def joined(self, member: Member, recovery: Recovery) -> None:
        name = player_of(member)
        if self.host is None:
            self.host = name
        self.members[name] = member
        self.ready[name] = False
        self._publish()

    async def leave(self, member: Member) -> None:
        name = member.user
        if name is None or self.members.get(name) is not member:
            return
        del self.members[name]
        del self.ready[name]
        if self.host == name:
            self.host = next(iter(self.members), None)  # the longest there hosts next
        if self.check is not None and not self.members:
            self._cancel_check()
        self._publish()

    # --- events ------------------------------------------------------------------

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        name = player_of(member)
        args = payload if isinstance(payload, dict) else {}
        match event:
            case "ready":
                self.ready[name] = bool(args.get("ready", True))
                self._publish()
                if self.check is not None and all(self.ready.values()):
                    await self._start_match()
            case "kick":
                self._host_only(name, event)
                player = self.members.get(str(args.get("player")))
                if player is None or player is member:
                    raise ServiceError("kick whom? name another player", code="no_such_player")
                self.topic.kick(player, f"{name} removed you from the lobby", code="kicked")
            case "settings":
                self._host_only(name, event)
                if self.check is not None:
                    raise ServiceError("not during a ready check", code="ready_check")
                capacity = _capacity(args.get("capacity", self.capacity))
                if capacity < len(self.members):
                    raise ServiceError(
                        f"{len(self.members)} players are in already", code="bad_settings"
                    )
                self.settings = _settings(args.get("settings", self.settings))
                self.capacity = capacity
                self._publish()
            case "start":
                self._host_only(name, event)
                if self.check is not None:
                    raise ServiceError("a ready check is on already", code="ready_check")
                if len(self.members) < 2:
                    raise ServiceError("a match needs two players", code="not_enough_players")
                if all(self.ready.values()):
                    await self._start_match()
                    return
                self.check = self.topic.send_after(self.ready_timeout, "ready_timeout")
                self.topic.broadcast("ready_check", {"seconds": self.ready_timeout})
                self._publish()
            case _:
                raise ServiceError(f"lobbies take no {event!r} events", code="unknown_event")

    async def handle_timer(self, event: str, payload: Payload) -> None:
        if event != "ready_timeout" or self.check is None:
            return
        self.check = None
        late = [name for name, ready in self.ready.items() if not ready]
        self.topic.broadcast("ready_check_failed", {"not_ready": late})
        for name in late:
            self.topic.kick(self.members[name], "you were not ready in time", code="not_ready")
        self._publish()

    # --- inside ----------------------------------------------------------------------

    def _host_only(self, name: str, event: str) -> None:
        if name != self.host:
            raise ServiceError(f"only the host ({self.host}) may {event}", code="not_host")

    def _cancel_check(self) -> None:
        if self.check is not None:
            self.check.cancel()
            self.check = None

    async def _start_match(self) -> None:
        self._cancel_check()
        topic = f"match:{uuid.uuid4().hex[:12]}"
        players = list(self.members)
        assert self.topic.hub is not None
        try:
            await self.topic.hub.start_topic(
                topic, {**self.match_init, **self.settings, "players": players, "mode": "lobby"}
            )
        except (HubError, actors.StartError) as error:
            self._publish()
            raise ServiceError(
                f"the match cannot start now ({error}); try again", code="match_unavailable"
            ) from error
        self.matches_started += 1
        for name in players:
            self.ready[name] = False
        self.topic.broadcast("match_found", {"topic": topic, "players": players})
        self._publish()

    def _publish(self) -> None:
        """Push the lobby's state: who is in, who is ready, who hosts (latest-value)."""
        self.topic.broadcast("lobby", self.state(), key="lobby")

    def state(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "capacity": self.capacity,
            "settings": self.settings,
            "players": [{"name": name, "ready": ready} for name, ready in self.ready.items()],
            "ready_check": self.check is not None,
        }
