"""The soak scenario: many clients chatting in rooms, leaving and coming back, for a long time.

`connections` clients join `topics` rooms (client i is in room i mod K);
`rate` chat messages a second are published by members chosen at random,
and `churn_rate` members a second leave and come back after a pause, in
three ways in turn: a Leave and a Join again on the same connection; a
Leave, a polite close (1000) and a new connection; a connection dropped
without a Leave or a close (TCP only), then a new one. It runs for
`duration` seconds; the server's memory and task count are read every
`SAMPLE_INTERVAL_SECONDS` and, after `warmup`, must stay flat.

No lost message, counted by sequence number: a member must receive every
message that the room broadcast while it was a member. The load generator
cannot see the room, so it uses two orderings the hub guarantees. A message
sent after the member's join Reply arrived reaches the room after the
join; a message whose publisher got its own copy back (every member, the
sender too, gets the Push) was broadcast then, so it is in the member's
stream ahead of anything the member's session writes later: the Reply to
a Leave sent afterwards, or to the final heartbeat. So when that Reply
arrives, the member must have every message sent after its join and
echoed before its Leave (or heartbeat). A membership that ends by a dropped
connection is not checked (what was in flight went with it); the
publisher's own messages are: each must come back to it. A message seen
twice in one membership, or Pushes whose offsets do not increase, count as
errors too, as does any Error frame, refused request, or connection the
server closed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import attrs

from hub.bench import wire
from hub.bench.clients import (
    HubLink,
    LinkClosedError,
    RefusedError,
    hub_health,
    hub_metrics,
    open_hub_link,
)
from hub.bench.procstat import cpu_seconds, rss_bytes
from hub.bench.spec import LoadSpec

Figures = dict[str, Any]
Reporter = Callable[[str, int, int], None]

#: How often the server's memory, CPU and tasks are read, in seconds.
SAMPLE_INTERVAL_SECONDS: Final = 5.0

#: How long a publisher waits for its own message to come back before
#: counting it lost, in seconds.
ECHO_TIMEOUT_SECONDS: Final = 30.0

#: How long a member that left stays away, in seconds (uniformly drawn).
AWAY_SECONDS: Final = (0.5, 3.0)

#: The ways of leaving, taken in turn.
MODES: Final = ("leave", "reconnect", "drop")

#: Chat messages a second across all rooms when `rate` is not given.
DEFAULT_RATE: Final = 100.0

#: Rooms when `topics` is not given.
DEFAULT_ROOMS: Final = 100

#: How long the hub keeps an empty room (its `topics.empty_grace_seconds`),
#: in seconds, and a little more.
EMPTY_GRACE_SECONDS: Final = 15.0

#: How long the idle server is left alone before its tasks are read, in seconds.
IDLE_SETTLE_SECONDS: Final = 1.0

#: Final heartbeats (and closes) under way at once.
FINAL_CONCURRENCY: Final = 500

# A chat message's text: run token and sequence number, then 'x's up to the
# payload size.
_SEQ_DIGITS: Final = 9


@attrs.define(eq=False)
class _Message:
    seq: int
    #: When it was sent and when its publisher got it back (time.monotonic).
    sent: float
    echoed: float | None = None


@attrs.define(eq=False)
class _Member:
    """One client: its room, its connection, and what it received in this membership."""

    index: int
    room: str
    user: str
    link: HubLink | None = None
    #: When the Reply to its Join arrived; None while not a member.
    joined_at: float | None = None
    #: Leaving or coming back: not chosen to publish or to leave again.
    busy: bool = False
    #: Its link is being closed on purpose (a close then is no error).
    closing: bool = False
    received: set[int] = attrs.Factory(set)
    last_offset: int = -1
    #: Its messages that have not come back to it yet.
    pending: set[int] = attrs.Factory(set)
    drained: asyncio.Event = attrs.Factory(asyncio.Event)


@attrs.define
class _Tally:
    sent: int = 0
    echoed: int = 0
    deliveries: int = 0
    expected: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    checked: int = 0
    unchecked: int = 0
    comebacks: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(MODES, 0))
    errors: dict[str, int] = attrs.Factory(dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Soak:
    def __init__(self, spec: LoadSpec, report: Reporter) -> None:
        self.spec = spec
        self.report = report
        self.token = uuid.uuid4().hex[:8]
        rooms = spec.topics or DEFAULT_ROOMS
        self.rooms = [f"room:soak-{self.token}-{k}" for k in range(rooms)]
        self.members = [
            _Member(index, self.rooms[index % rooms], f"s{index}")
            for index in range(spec.connections)
        ]
        # Per room, its messages in the order they were sent.
        self.messages: dict[str, list[_Message]] = {room: [] for room in self.rooms}
        self.by_seq: dict[int, _Message] = {}
        self.tally = _Tally()
        self.samples: list[dict[str, float]] = []
        self.started = 0.0
        self.cycles: set[asyncio.Task[None]] = set()
        # The server read with no client of ours connected, before and after.
        self.idle: dict[str, float] = {}

    # --- one member's connection -----------------------------------------------------

    async def connect(self, member: _Member) -> None:
        link = await open_hub_link(self.spec.url)
        member.link, member.closing = link, False
        link.on_push = lambda frame: self.on_push(member, frame)
        link.on_reply = lambda frame: self.on_reply(member, frame)
        link.disconnected.add_done_callback(lambda _: self.on_disconnected(member, link))
        await self.join(member)

    async def join(self, member: _Member) -> None:
        assert member.link is not None
        member.received = set()
        member.last_offset = -1
        await member.link.join(member.room, {"user": member.user})
        member.joined_at = time.monotonic()

    def on_push(self, member: _Member, frame: wire.Frame) -> None:
        if frame[2] != "message" or frame[1] != member.room:
            return  # `members` announcements
        text: str = frame[3]["text"]
        start = len(self.token) + 1
        seq = int(text[start : start + _SEQ_DIGITS])
        if seq in member.received:
            self.tally.duplicates += 1
            self.tally.error("message twice in one membership")
            return
        member.received.add(seq)
        self.tally.deliveries += 1
        offset = frame[4]
        if offset is not None:
            if offset <= member.last_offset:
                self.tally.out_of_order += 1
                self.tally.error("offsets not increasing")
            member.last_offset = offset
        if seq in member.pending:
            member.pending.discard(seq)
            self.by_seq[seq].echoed = time.monotonic()
            self.tally.echoed += 1
            if not member.pending:
                member.drained.set()

    def on_reply(self, member: _Member, frame: wire.Frame) -> None:
        # Nothing is sent that wants a Reply no one waits for: an Error
        # frame (a refused Publish) or a late answer is an error.
        kind = "error frame" if frame[0] == wire.ERROR else "unexpected reply"
        self.tally.error(f"{kind}: {frame[2:4]!r}"[:120])

    def on_disconnected(self, member: _Member, link: HubLink) -> None:
        if member.link is link and not member.closing:
            self.tally.error(f"closed by the server ({link.close_code})")
            member.joined_at = None

    def check(self, member: _Member, until: float) -> None:
        """Count what `member` should have had: sent after its join, echoed before `until`."""
        assert member.joined_at is not None
        messages = self.messages[member.room]
        start = bisect.bisect_right(messages, member.joined_at, key=lambda message: message.sent)
        for message in messages[start:]:
            if message.echoed is not None and message.echoed < until:
                self.tally.expected += 1
                if message.seq not in member.received:
                    self.tally.lost += 1
        self.tally.checked += 1

    # --- publishing ------------------------------------------------------------------

    def publish(self, member: _Member) -> None:
        assert member.link is not None
        seq = self.tally.sent
        self.tally.sent += 1
        head = f"{self.token}:{seq:0{_SEQ_DIGITS}d}:"
        text = head + "x" * max(0, self.spec.payload_bytes - len(head))
        message = _Message(seq, time.monotonic())
        self.messages[member.room].append(message)
        self.by_seq[seq] = message
        member.pending.add(seq)
        member.drained.clear()
        member.link.send(wire.publish(0, member.room, "message", {"text": text}))

    def pick(self) -> _Member | None:
        """A member at random that is in its room and not coming or going."""
        for _ in range(20):
            member = random.choice(self.members)
            if member.joined_at is not None and not member.busy:
                return member
        return None

    async def publish_until(self, end: float) -> None:
        assert self.spec.rate is not None
        interval = 1.0 / self.spec.rate
        next_at = time.monotonic()
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            member = self.pick()
            if member is not None:
                self.publish(member)

    # --- leaving and coming back -----------------------------------------------------

    async def churn_until(self, end: float) -> None:
        interval = 1.0 / self.spec.churn_rate
        next_at = time.monotonic() + interval
        turn = 0
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            member = self.pick()
            if member is None:
                continue
            member.busy = True
            task = asyncio.create_task(self.cycle(member, MODES[turn % len(MODES)]))
            turn += 1
            self.cycles.add(task)
            task.add_done_callback(self.cycles.discard)

    async def cycle(self, member: _Member, mode: str) -> None:
        try:
            await self.leave(member, mode)
            await asyncio.sleep(random.uniform(*AWAY_SECONDS))
            if mode == "leave":
                await self.join(member)
            else:
                await self.connect(member)
            self.tally.comebacks[mode] += 1
        except (OSError, TimeoutError, RefusedError, LinkClosedError) as error:
            self.tally.error(f"{mode}: {type(error).__name__}: {error}"[:120])
        finally:
            member.busy = False

    async def leave(self, member: _Member, mode: str) -> None:
        link = member.link
        assert link is not None
        await self.wait_drained(member)
        if mode == "drop":
            member.closing = True
            member.joined_at = None
            self.tally.unchecked += 1
            link.close_abruptly()
            return
        ref = link.next_ref()
        until = time.monotonic()
        reply = await link.request(ref, wire.leave(ref, member.room))
        if reply[0] != wire.REPLY or not reply[3]:
            raise RefusedError(f"leave refused: {reply!r}")
        self.check(member, until)
        member.joined_at = None
        if mode == "reconnect":
            member.closing = True
            link.close()

    async def wait_drained(self, member: _Member) -> None:
        """Wait until the member's own messages are back (they count lost past the timeout)."""
        if member.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ECHO_TIMEOUT_SECONDS):
                    await member.drained.wait()
        for seq in member.pending:
            self.tally.lost += 1
            self.tally.error("own message never came back")
            self.by_seq[seq].echoed = None
        member.pending.clear()

    # --- watching the server ---------------------------------------------------------

    async def sample(self) -> None:
        pid = self.spec.server_pid
        metrics = await hub_metrics(self.spec.url)
        entry = {
            "t": time.monotonic() - self.started,
            "tasks": metrics.get("triohub_tasks", -1.0),
            "connections": metrics.get("triohub_connections", -1.0),
            "sent": float(self.tally.sent),
            "deliveries": float(self.tally.deliveries),
        }
        if pid is not None:
            entry["rss_mb"] = rss_bytes(pid) / 2**20
            entry["cpu_s"] = cpu_seconds(pid)
        self.samples.append(entry)

    async def sample_until(self, end: float) -> None:
        while True:
            await self.sample()
            now = time.monotonic()
            self.report("soaking", int(now - self.started), int(self.spec.duration))
            if now >= end:
                return
            await asyncio.sleep(min(SAMPLE_INTERVAL_SECONDS, end - now))

    # --- the run ---------------------------------------------------------------------

    async def run(self) -> Figures:
        spec = self.spec
        await self.sample_idle("start")
        await self.connect_all()
        gc.freeze()
        own_cpu = time.process_time()
        self.started = time.monotonic()
        end = self.started + spec.duration
        await asyncio.gather(self.publish_until(end), self.churn_until(end), self.sample_until(end))
        if self.cycles:
            await asyncio.wait(self.cycles)
        await self.finish()
        loadgen_cpu = (time.process_time() - own_cpu) / (time.monotonic() - self.started)
        for member in self.members:
            if member.link is not None:
                member.closing = True
                member.link.close_abruptly()
        await self.sample_idle("after")
        return self.figures(loadgen_cpu)

    async def connect_all(self) -> None:
        """Connect and join everyone, `concurrency` at a time (a failure ends the run)."""
        queue = list(reversed(self.members))
        done = 0

        async def worker() -> None:
            nonlocal done
            while queue:
                await self.connect(queue.pop())
                done += 1
                if done % 200 == 0:
                    self.report("connecting", done, len(self.members))

        await asyncio.gather(*(worker() for _ in range(self.spec.concurrency)))
        self.report("connecting", done, len(self.members))

    async def finish(self) -> None:
        """Wait for every message to come back, then check every member with a heartbeat."""
        await asyncio.gather(*(self.wait_drained(member) for member in self.members))
        queue = [member for member in self.members if member.joined_at is not None]

        async def worker() -> None:
            while queue:
                member = queue.pop()
                assert member.link is not None
                ref = member.link.next_ref()
                until = time.monotonic()
                try:
                    await member.link.request(ref, wire.heartbeat(ref))
                except (OSError, TimeoutError, LinkClosedError) as error:
                    self.tally.error(f"final heartbeat: {type(error).__name__}")
                    continue
                self.check(member, until)

        await asyncio.gather(*(worker() for _ in range(FINAL_CONCURRENCY)))

    async def sample_idle(self, when: str) -> None:
        """Read the server with no client of ours connected (`start` or `after`)."""
        if when == "after":
            # Until the server has seen every close and its rooms have
            # stopped (after the empty-topic grace): then its tasks should
            # be back where they started.
            deadline = time.monotonic() + self.spec.drain_timeout + EMPTY_GRACE_SECONDS
            while True:
                try:
                    health = await hub_health(self.spec.url)
                except (OSError, RefusedError) as error:
                    # Counted, and asked again: the reading after the run
                    # must not be lost to one unanswered request.
                    self.tally.error(f"GET /healthz after the run: {error}"[:120])
                    health = {}
                if health.get("connections") == 0 and health.get("topics") == 0:
                    break
                if time.monotonic() > deadline:
                    self.tally.error(f"still open after the run: {health}")
                    break
                await asyncio.sleep(0.5)
        # The server's end of our last request may still be closing: a task.
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        metrics = await hub_metrics(self.spec.url)
        self.idle[f"tasks_{when}"] = metrics.get("triohub_tasks", -1.0)
        if self.spec.server_pid is not None:
            self.idle[f"rss_{when}_mb"] = rss_bytes(self.spec.server_pid) / 2**20

    def figures(self, loadgen_cpu: float) -> Figures:
        spec = self.spec
        tally = self.tally
        warm = [s for s in self.samples if s["t"] >= spec.warmup] or self.samples[-1:]
        figures: Figures = {
            "connections": spec.connections,
            "rooms": len(self.rooms),
            "seconds": self.samples[-1]["t"] if self.samples else 0.0,
            "messages_sent": tally.sent,
            "messages_echoed": tally.echoed,
            "deliveries": tally.deliveries,
            "deliveries_expected": tally.expected,
            "lost": tally.lost,
            "duplicates": tally.duplicates,
            "out_of_order": tally.out_of_order,
            "memberships_checked": tally.checked,
            "memberships_dropped_unchecked": tally.unchecked,
            "comebacks": sum(tally.comebacks.values()),
            **{f"comebacks_{mode}": count for mode, count in tally.comebacks.items()},
            "errors": sum(tally.errors.values()),
            "error_kinds": dict(sorted(tally.errors.items(), key=lambda item: -item[1])[:20]),
            "loadgen_cpu": loadgen_cpu,
            "samples": self.samples,
            **self.idle,
        }
        if self.samples and figures["seconds"]:
            figures["deliveries_per_s"] = tally.deliveries / figures["seconds"]
        for key in ("tasks", "rss_mb"):
            series = [(s["t"], s[key]) for s in warm if key in s]
            if not series:
                continue
            name = key.removesuffix("_mb")
            unit = "_mb" if key == "rss_mb" else ""
            figures[f"{name}_warm{unit}"] = series[0][1]
            figures[f"{name}_end{unit}"] = series[-1][1]
            figures[f"{name}_max{unit}"] = max(value for _, value in series)
            figures[f"{name}_slope{unit}_per_min"] = _slope(series) * 60
        cpu = [s["cpu_s"] for s in self.samples if "cpu_s" in s]
        if len(cpu) > 1:
            figures["server_cpu_seconds"] = cpu[-1] - cpu[0]
        return figures


def _slope(series: list[tuple[float, float]]) -> float:
    """The least-squares slope of (t, value) points, per second; 0 for fewer than two."""
    if len(series) < 2:
        return 0.0
    count = len(series)
    mean_t = sum(t for t, _ in series) / count
    mean_v = sum(v for _, v in series) / count
    spread = sum((t - mean_t) ** 2 for t, _ in series)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in series) / spread


async def run_soak(spec: LoadSpec, report: Reporter) -> Figures:
    """The soak (see the module docstring); its figures and the server samples."""
    if spec.rate is None:
        spec = attrs.evolve(spec, rate=DEFAULT_RATE)
    return await _Soak(spec, report).run()
