"""The lobby scenario: bots queue, are matched, and play matches that tick.

`hub bench lobby -n 200 --match-size 4` against `examples.lobby.app:bench`
(the lobby example with matches nobody wins): N bots connect as players,
queue for `<M>p` matches, join the match each is sent to, and send one
input per tick while the matches broadcast their state (latest-value) at
the server's tick rate. Each bot sends on a clock of its own, the bots'
phases spread evenly over the period, as independent players' clients do
(`--inputs together`: every bot in the same instant, a burst of N inputs
once a period, the worst case). Over the measured window it reports how late the
matches' ticks ran (the lateness each state carries, one sample per match
and tick), the ticks missed, the state deliveries per second, and the
server's CPU per delivery.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import attrs

from hub.bench import wire
from hub.bench.clients import HubLink, open_hub_link
from hub.bench.scenarios import Figures, Reporter, ScenarioError, _connect_all, _countdown, _Meter
from hub.bench.spec import LoadSpec
from hub.bench.stats import percentile


@attrs.define
class _Match:
    """What the bots saw of one match over the window."""

    first_tick: int | None = None
    last_tick: int = 0
    first_missed: int = 0
    last_missed: int = 0


@attrs.define
class _LobbyTally:
    measuring: bool = False
    deliveries: int = 0
    # (match, tick) -> how late that tick ran, in ms: each tick counted once.
    lateness: dict[tuple[str, int], float] = attrs.Factory(dict)
    matches: dict[str, _Match] = attrs.Factory(dict)

    def state(self, topic: str, state: dict[str, Any]) -> None:
        if not self.measuring:
            return
        self.deliveries += 1
        tick = int(state["tick"])
        self.lateness.setdefault((topic, tick), float(state.get("late_ms", 0.0)))
        match = self.matches.setdefault(topic, _Match())
        missed = int(state.get("missed", 0))
        if match.first_tick is None:
            match.first_tick, match.first_missed = tick, missed
        match.last_tick = max(match.last_tick, tick)
        match.last_missed = max(match.last_missed, missed)


async def run_lobby(spec: LoadSpec, report: Reporter) -> Figures:
    size = spec.match_size
    if spec.connections % size:
        raise ScenarioError(f"{spec.connections} bots do not fill matches of {size}")
    mode = f"{size}p"
    run = uuid.uuid4().hex[:6]
    tally = _LobbyTally()
    topics: list[asyncio.Future[str]] = [
        asyncio.get_running_loop().create_future() for _ in range(spec.connections)
    ]

    def bot(index: int, link: HubLink) -> None:
        def on_push(frame: wire.Frame) -> None:
            _, topic, event, payload = frame[:4]
            if event == "state":
                tally.state(topic, payload)
            elif event == "match_found" and not topics[index].done():
                topics[index].set_result(payload["topic"])

        link.on_push = on_push

    async def open_one(index: int) -> HubLink:
        link = await open_hub_link(f"{spec.url}?name=bench-{run}-{index}")
        bot(index, link)
        await link.join(f"queue:{mode}", {"rating": 1500})
        return link

    links = await _connect_all(
        spec.connections, open_one, concurrency=spec.concurrency, report=report, phase="queue"
    )
    try:
        try:
            async with asyncio.timeout(spec.drain_timeout):
                matched = await asyncio.gather(*topics)
        except TimeoutError:
            waiting = sum(not topic.done() for topic in topics)
            message = f"{waiting} bots were not matched in {spec.drain_timeout:g} s"
            raise ScenarioError(message) from None
        replies = await asyncio.gather(
            *(link.join(topic, {}) for link, topic in zip(links, matched, strict=True))
        )
        tick_hz = float(replies[0][4]["tick_hz"])
        sender = asyncio.create_task(
            _send_inputs(links, matched, tick_hz, together=spec.inputs == "together")
        )
        try:
            await _countdown(report, "warm-up", spec.warmup)
            meter = _Meter(spec.server_pid)
            meter.start()
            tally.measuring = True
            await _countdown(report, "play", spec.duration)
            tally.measuring = False
            figures: Figures = {}
            seconds = meter.stop(figures)
        finally:
            sender.cancel()
        closed = sum(1 for link in links if link.close_code is not None)
    finally:
        for link in links:
            link.close()
    late = sorted(tally.lateness.values())
    matches = tally.matches.values()
    ticks = sum(m.last_tick - (m.first_tick or 0) for m in matches)
    figures.update(
        players=spec.connections,
        matches=len(set(matched)),
        tick_hz=tick_hz,
        ticks_per_s_per_match=ticks / seconds / max(1, len(tally.matches)),
        tick_late_p50_ms=percentile(late, 0.50) if late else float("nan"),
        tick_late_p99_ms=percentile(late, 0.99) if late else float("nan"),
        tick_late_max_ms=late[-1] if late else float("nan"),
        ticks_missed=sum(m.last_missed - m.first_missed for m in matches),
        state_deliveries_per_s=tally.deliveries / seconds,
        expected_deliveries_per_s=spec.connections * tick_hz,
        closed_by_server=closed,
    )
    if "server_cpu_seconds" in figures and tally.deliveries:
        figures["server_cpu_per_delivery_us"] = (
            figures["server_cpu_seconds"] * 1e6 / tally.deliveries
        )
    return figures


# An input due this close is sent now rather than after a sleep: a sleep
# that short would only cost the loop a wake-up.
_SEND_SLACK_SECONDS = 0.0005


async def _send_inputs(
    links: list[HubLink], topics: list[str], tick_hz: float, *, together: bool
) -> None:
    """One input per bot per tick, at the match's rate, steering in a slow circle.

    Bot i sends at (step + i / N) periods from the start: each on a clock
    of its own, the N clocks' phases spread evenly over the period, as N
    independent players' clients would. With `together`, every bot sends at
    (step) periods: N inputs in the same instant.
    """
    period = 1.0 / tick_hz
    count = len(links)
    start = time.monotonic()
    step = 0
    while True:
        step += 1
        direction = (step // 20) % 4
        dx, dy = ((1, 0), (0, 1), (-1, 0), (0, -1))[direction]
        for index, (link, topic) in enumerate(zip(links, topics, strict=True)):
            phase = 0.0 if together else index / count
            delay = start + (step + phase) * period - time.monotonic()
            if delay > _SEND_SLACK_SECONDS:
                await asyncio.sleep(delay)
            if link.close_code is None:
                link.send(wire.publish(0, topic, "input", {"dx": dx, "dy": dy, "seq": step}))
        # Together, nothing above slept: wait for the next period here.
        await asyncio.sleep(max(0.0, start + (step + 1) * period - time.monotonic()))
