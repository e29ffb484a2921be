"""`match:<id>` topics: one actor per match, ticking at a fixed rate.

A match is started by the server (a queue or a lobby), never by a join:
`topic.hub.start_topic("match:<id>", init={"players": [...], ...})`. Its
actor is a temporary child of the hub's topics supervisor (one_for_one):
it is never restarted, a crash ends that match alone, and its players get
an Ended frame with code `match_crashed`; no other match notices.

Every tick (`topic.every`, 20 Hz unless the route or the init says) the
actor applies the inputs received since the last tick, in the order they
came, advances the game one tick, and broadcasts:

- `state` (latest-value, key "state"): the whole game, every tick; a slow
  player gets the newest, never a backlog, and is not evicted for it;
- `scores` (latest-value, key "scores"): the scoreboard, when it changes;
- `spark` (volatile): an effect where a coin was taken, dropped for a
  player whose connection is behind;
- `scored`, `player_arrived`, `player_away`, `player_back`, `player_left`, `match_over`
  (reliable, kept in the topic's history): the events a player must not
  miss, recovered on reconnect.

A player whose connection ends keeps its slot for `grace` seconds: joining
again as the same user (`member.user`) within it takes the same slot, with
its dot and score; past it the match goes on without them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any, Final

import actors
from hub import JoinRefusedError, Member, Payload, Service, ServiceError, Topic
from hub.backplane import Recovery

from .game import Game
from .players import player_of

DEFAULT_TICK_HZ: Final = 20.0
# How long a disconnected player's slot is held (and how long the players
# a match was made for have to arrive).
DEFAULT_GRACE_SECONDS: Final = 10.0
# Inputs of one player kept for the next tick; past that its oldest is
# dropped (a client sending faster than the match ticks, or a match behind).
MAX_INPUTS_PER_TICK: Final = 8
# The longest a match runs.
DEFAULT_MAX_SECONDS: Final = 300.0


def _number(payload: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ServiceError(f"input {name!r} must be a finite number", code="bad_input")
    return float(value)


class MatchService(Service):
    """One match: its game, its players' slots, and its tick."""

    crash_code = "match_crashed"
    crash_reason = "the match crashed; it is over"

    def __init__(
        self,
        topic: Topic,
        *,
        tick_hz: float = DEFAULT_TICK_HZ,
        grace: float = DEFAULT_GRACE_SECONDS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> None:
        super().__init__(topic)
        self.tick_hz = tick_hz
        self.grace = grace
        self.max_seconds = max_seconds
        self.game: Game | None = None
        self.over = False
        # The connected member of each player, by player.
        self.members: dict[str, Member] = {}
        # Players away (not yet arrived, or disconnected), with the timer
        # that drops their slot when the grace is over.
        self.away: dict[str, actors.Timer] = {}
        # Players dropped past the grace (they may not come back).
        self.dropped: set[str] = set()
        # Players who have joined at least once.
        self.arrived: set[str] = set()
        # Inputs received since the last tick, in arrival order.
        self.inputs: list[tuple[str, float, float, int]] = []
        self.input_counts: dict[str, int] = {}
        #: Inputs dropped, over the budget of a tick.
        self.inputs_dropped = 0
        self.ticker: actors.Timer | None = None
        self._last_scores: dict[str, int] = {}

    async def started(self) -> None:
        init = self.topic.init
        if not isinstance(init, dict) or not init.get("players"):
            return  # not made by the server: every join is refused, and it stops
        self.tick_hz = float(init.get("tick_hz", self.tick_hz))
        self.grace = float(init.get("grace", self.grace))
        players = [str(name) for name in init["players"]]
        self.game = Game.start(players, seed=self.topic.name, target=int(init.get("target", 10)))
        for name in players:
            self.game.players[name].present = False
            self.away[name] = self.topic.send_after(self.grace, "grace_over", name)
        # Each match ticks in a phase of its own within the interval: matches
        # started together must not all come due at once and wait for each other.
        interval = 1.0 / self.tick_hz
        phase = interval * (zlib.crc32(self.topic.name.encode()) % 1024 + 1) / 1025
        self.ticker = self.topic.every(interval, "tick", first=phase)
        self.topic.send_after(self.max_seconds, "time_up")

    # --- membership --------------------------------------------------------------

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        game = self.game
        if game is None:
            raise JoinRefusedError(f"there is no match {self.topic.name!r}", code="no_such_match")
        name = player_of(member)
        if self.over:
            raise JoinRefusedError("the match is over", code="match_over")
        if name in self.dropped:
            raise JoinRefusedError(
                f"you were away longer than {self.grace:g} s; the match went on without you",
                code="slot_lost",
            )
        if name not in game.players:
            raise JoinRefusedError("you are not a player of this match", code="not_in_match")
        previous = self.members.get(name)
        if previous is not None:
            # The same player from a new connection (its old one not yet
            # noticed as gone): the new one takes the slot.
            self.topic.kick(previous, "you joined this match again elsewhere", code="replaced")
        return {
            "slot": game.players[name].slot,
            "tick_hz": self.tick_hz,
            "grace": self.grace,
            "state": game.snapshot(),
        }

    async def joined(self, member: Member, recovery: Recovery) -> None:
        assert self.game is not None
        name = player_of(member)
        self.members[name] = member
        if recovery.recovered:
            # A player back from a dropped connection gets the kept events it missed.
            for record in recovery.missed:
                self.topic.push(member, record.event, record.payload, offset=record.offset)
        timer = self.away.pop(name, None)
        if timer is not None:
            timer.cancel()
            self.game.players[name].present = True
            event = "player_back" if name in self.arrived else "player_arrived"
            self.arrived.add(name)
            self.topic.broadcast(event, {"name": name}, keep=True)

    async def leave(self, member: Member) -> None:
        name = member.user
        if name is None or self.members.get(name) is not member:
            return  # replaced by a newer connection of the same player
        del self.members[name]
        if self.over or self.game is None or name not in self.game.players:
            return
        self.game.players[name].present = False
        self.away[name] = self.topic.send_after(self.grace, "grace_over", name)
        self.topic.broadcast("player_away", {"name": name, "grace": self.grace}, keep=True)

    # --- inputs and ticks --------------------------------------------------------------

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event != "input":
            raise ServiceError(f"matches take 'input' events, not {event!r}", code="unknown_event")
        if not isinstance(payload, dict):
            raise ServiceError("an input is {dx, dy, seq}", code="bad_input")
        name = player_of(member)
        seq = payload.get("seq", 0)
        command = (
            name,
            _number(payload, "dx"),
            _number(payload, "dy"),
            seq if type(seq) is int else 0,
        )
        count = self.input_counts.get(name, 0)
        if count >= MAX_INPUTS_PER_TICK:
            # Over the budget: the newest input wins, the player's oldest goes.
            oldest = next(i for i, pending in enumerate(self.inputs) if pending[0] == name)
            del self.inputs[oldest]
            self.inputs_dropped += 1
        else:
            self.input_counts[name] = count + 1
        self.inputs.append(command)

    async def handle_timer(self, event: str, payload: Payload) -> None:
        match event:
            case "tick":
                self.tick()
            case "grace_over":
                self._grace_over(str(payload))
            case "time_up":
                self.end("time is up")
            case _:
                raise ValueError(f"unknown timer {event!r}")

    def tick(self) -> None:
        """Apply the inputs since the last tick, in order; advance; broadcast the state."""
        game = self.game
        if game is None or self.over:
            return
        for name, dx, dy, seq in self.inputs:
            game.steer(name, dx, dy, seq)
        self.inputs.clear()
        self.input_counts.clear()
        scored = game.step(1.0 / self.tick_hz)
        ticks = self.topic.ticks
        state = game.snapshot()
        state["late_ms"] = round(ticks.late * 1000, 3)
        state["missed"] = ticks.missed
        self.topic.broadcast("state", state, key="state")
        for name in scored:
            player = game.players[name]
            self.topic.broadcast("spark", {"x": player.x, "y": player.y}, volatile=True)
            self.topic.broadcast("scored", {"name": name, "score": player.score}, keep=True)
        scores = game.scores()
        if scores != self._last_scores:
            self._last_scores = scores
            self.topic.broadcast("scores", scores, key="scores")
        if game.winner is not None:
            self.end(f"{game.winner} won")

    def _grace_over(self, name: str) -> None:
        if self.game is None or self.away.pop(name, None) is None:
            return  # came back in time
        self.game.remove(name)
        self.dropped.add(name)
        self.topic.broadcast(
            "player_left", {"name": name, "reason": "away past the grace"}, keep=True
        )
        if not self.game.players:
            self.end("every player left")

    def end(self, reason: str) -> None:
        """End the match: tell everyone, stop ticking, and end every membership."""
        if self.over or self.game is None:
            return
        self.over = True
        if self.ticker is not None:
            self.ticker.cancel()
        for timer in self.away.values():
            timer.cancel()
        self.away.clear()
        result = {"reason": reason, "winner": self.game.winner, "scores": self.game.scores()}
        self.topic.broadcast("match_over", result, keep=True)
        for member in list(self.topic.members.values()):
            self.topic.kick(member, reason, code="match_over")
