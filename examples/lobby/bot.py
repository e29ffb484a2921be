"""A headless player of the lobby example, on `hub.client`: to play it, and to load it.

    .venv/bin/hub serve examples.lobby.app:app
    .venv/bin/python -m examples.lobby.bot --bots 8 --mode 4p --matches 2

Each bot connects as its own player (`?name=bot-<n>`), queues, joins the
match it is sent to, and steers its dot to the coin at the match's tick
rate until the match is over; then it queues again, `--matches` times. At
the end it prints one line per bot: matches played, states received, coins
taken, and the tick lateness the match reported (p50 and max).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Sequence
from typing import Any

try:
    import attrs
    import trio

    from hub import client
except ImportError:  # run by a Python without triohub
    sys.exit("run the bot with the project's Python: .venv/bin/python -m examples.lobby.bot")

# How long a bot waits in the queue before it gives up on a match.
QUEUE_SECONDS = 60.0
# The longest a bot plays one match.
MATCH_SECONDS = 300.0


@attrs.define
class BotStats:
    """What one bot saw."""

    name: str
    matches: int = 0
    states: int = 0
    coins: int = 0
    late_ms: list[float] = attrs.Factory(list)
    #: The matches it played, in order.
    topics: list[str] = attrs.Factory(list)
    endings: list[str] = attrs.Factory(list)

    def line(self) -> str:
        late = sorted(self.late_ms) or [math.nan]
        return (
            f"{self.name}: {self.matches} matches, {self.states} states, {self.coins} coins, "
            f"tick lateness p50 {statistics.median(late):.2f} ms, max {late[-1]:.2f} ms, "
            f"endings {', '.join(self.endings) or '-'}"
        )


async def find_match(connection: client.Client, mode: str, rating: int) -> str | None:
    """Queue for a match of `mode`; the match's topic, or None if none came in time."""
    found: dict[str, Any] = {}
    arrived = trio.Event()

    def on_found(payload: Any) -> None:
        found.update(payload)
        arrived.set()

    queue = await connection.join(f"queue:{mode}", {"rating": rating})
    queue.on("match_found", on_found)
    with trio.move_on_after(QUEUE_SECONDS):
        await arrived.wait()
    if not arrived.is_set():
        if queue.ended is None:
            await queue.leave()
        return None
    return str(found["topic"])


async def play_match(connection: client.Client, topic: str, stats: BotStats) -> None:
    """Join `topic` and steer to the coin every tick until the match is over."""
    latest: dict[str, Any] = {}
    over = trio.Event()

    def on_state(state: Any) -> None:
        latest.update(state)
        stats.states += 1
        stats.late_ms.append(float(state.get("late_ms", 0.0)))

    def on_over(result: Any) -> None:
        stats.endings.append(str(result.get("reason")))
        over.set()

    def on_scored(scored: Any) -> None:
        if scored.get("name") == stats.name:
            stats.coins += 1

    match = await connection.join(topic)
    assert isinstance(match.join_reply, dict)
    latest.update(match.join_reply["state"])
    period = 1.0 / float(match.join_reply["tick_hz"])
    match.on("state", on_state)
    match.on("match_over", on_over)
    match.on("scored", on_scored)
    stats.matches += 1
    stats.topics.append(topic)
    seq = 0
    wobble = random.Random(stats.name)
    with trio.move_on_after(MATCH_SECONDS):
        while not over.is_set() and match.ended is None:
            seq += 1
            dx, dy = _towards_coin(latest, stats.name)
            dx += wobble.uniform(-0.3, 0.3)
            dy += wobble.uniform(-0.3, 0.3)
            try:
                await match.publish("input", {"dx": dx, "dy": dy, "seq": seq})
            except client.ClientError:
                break  # the match ended under us (crashed, or the connection went)
            await trio.sleep(period)
    if match.ended is not None and not over.is_set():
        stats.endings.append(match.ended.code)


def _towards_coin(state: dict[str, Any], name: str) -> tuple[float, float]:
    mine = next((p for p in state.get("players", ()) if p["name"] == name), None)
    coin = state.get("coin")
    if mine is None or coin is None:
        return 0.0, 0.0
    dx, dy = coin[0] - mine["x"], coin[1] - mine["y"]
    length = math.hypot(dx, dy) or 1.0
    return dx / length, dy / length


async def run_bot(url: str, name: str, *, mode: str, rating: int, matches: int) -> BotStats:
    """One bot: connect as `name`, then queue and play `matches` matches."""
    stats = BotStats(name)
    async with client.connect(url, query={"name": name}) as connection:
        for _ in range(matches):
            topic = await find_match(connection, mode, rating)
            if topic is None:
                stats.endings.append("no match")
                continue
            await play_match(connection, topic, stats)
    return stats


async def run_bots(
    url: str, count: int, *, mode: str, matches: int, prefix: str = "bot"
) -> list[BotStats]:
    """Run `count` bots at once; their stats, in order."""
    results: list[BotStats | None] = [None] * count

    async def one(index: int) -> None:
        rating = 1500 + random.Random(index).randint(-150, 150)
        results[index] = await run_bot(
            url, f"{prefix}-{index}", mode=mode, rating=rating, matches=matches
        )

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return [result for result in results if result is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.lobby.bot", description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="the hub's WebSocket URL")
    parser.add_argument("--bots", type=int, default=4, help="how many bots (default 4)")
    parser.add_argument("--mode", default="4p", help="the queue: 2p or 4p (default 4p)")
    parser.add_argument("--matches", type=int, default=1, help="matches each bot plays")
    parser.add_argument("--prefix", default="bot", help="bots are named <prefix>-<n>")
    args = parser.parse_args(argv)
    try:
        results = trio.run(
            lambda: run_bots(
                args.url, args.bots, mode=args.mode, matches=args.matches, prefix=args.prefix
            )
        )
    except OSError as error:
        print(f"cannot reach the hub at {args.url}: {error}", file=sys.stderr)
        return 1
    for stats in results:
        print(stats.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
