"""Coin grab: the tiny game the example's matches play, pure (no hub, no trio).

Each player moves a dot around an arena; whoever touches the coin scores,
and the coin moves elsewhere. The first to `target` wins. A match actor
owns one `Game`, applies the inputs it received since the last tick in
order (`steer`), then advances it by one tick (`step`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any, Final

import attrs

WIDTH: Final = 400.0
HEIGHT: Final = 300.0
# Arena units a player moves per second at full stick.
SPEED: Final = 120.0
# How close a player must come to the coin to take it.
REACH: Final = 14.0


@attrs.define
class Player:
    """One slot of a match: where its dot is, where it heads, its score."""

    name: str
    slot: int
    x: float
    y: float
    dx: float = 0.0
    dy: float = 0.0
    score: int = 0
    #: False while its player is away (disconnected, within the grace).
    present: bool = True
    #: The last input sequence number applied (for the client's prediction).
    seq: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slot": self.slot,
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "score": self.score,
            "present": self.present,
            "seq": self.seq,
        }


@attrs.define
class Game:
    """The state of one match's game."""

    players: dict[str, Player]
    seed: str
    target: int = 10
    tick: int = 0
    coin: tuple[float, float] = (WIDTH / 2, HEIGHT / 2)
    winner: str | None = None
    _random: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed)

    @classmethod
    def start(cls, names: Iterable[str], *, seed: str, target: int = 10) -> Game:
        """A game for `names`, their dots spread around the arena's edge."""
        names = list(names)
        players: dict[str, Player] = {}
        for slot, name in enumerate(names):
            angle = 2 * math.pi * slot / max(1, len(names))
            x = WIDTH / 2 + math.cos(angle) * WIDTH * 0.4
            y = HEIGHT / 2 + math.sin(angle) * HEIGHT * 0.4
            players[name] = Player(name, slot, x, y)
        game = cls(players, seed, target)
        game.coin = game._place_coin()
        return game

    def steer(self, name: str, dx: float, dy: float, seq: int) -> None:
        """Apply one input of `name`: head in direction (dx, dy), clamped to the unit circle."""
        player = self.players.get(name)
        if player is None:
            return
        length = math.hypot(dx, dy)
        if length > 1.0:
            dx, dy = dx / length, dy / length
        player.dx, player.dy, player.seq = dx, dy, seq

    def step(self, seconds: float) -> list[str]:
        """Advance by one tick of `seconds`; return who took the coin this tick."""
        self.tick += 1
        scored: list[str] = []
        if self.winner is not None:
            return scored
        for player in self.players.values():
            if not player.present:
                continue
            player.x = min(WIDTH, max(0.0, player.x + player.dx * SPEED * seconds))
            player.y = min(HEIGHT, max(0.0, player.y + player.dy * SPEED * seconds))
            if self.winner is None and math.dist((player.x, player.y), self.coin) <= REACH:
                player.score += 1
                scored.append(player.name)
                self.coin = self._place_coin()
                if player.score >= self.target:
                    self.winner = player.name
        return scored

    def remove(self, name: str) -> None:
        """Take `name` out of the game for good (gone past the grace)."""
        self.players.pop(name, None)

    def snapshot(self) -> dict[str, Any]:
        """The whole state, as the match broadcasts it each tick."""
        return {
            "tick": self.tick,
            "coin": [round(self.coin[0], 1), round(self.coin[1], 1)],
            "players": [player.snapshot() for player in self.players.values()],
            "winner": self.winner,
        }

    def scores(self) -> dict[str, int]:
        return {name: player.score for name, player in self.players.items()}

    def _place_coin(self) -> tuple[float, float]:
        margin = 20.0
        return (
            self._random.uniform(margin, WIDTH - margin),
            self._random.uniform(margin, HEIGHT - margin),
        )
