"""The scenarios, as the load generator plays them against one server.

Each takes a LoadSpec and a Reporter and returns its figures as a flat dict
of numbers (plus a latency histogram or a list per wave where it has one).
The same code drives the hub (the hub protocol, msgpack) and the baselines
(plain messages), with the same message sizes and counts:

- idle: a hub client joins `echo:bench-<i>` (with --topics K, `<i mod K>`); a
  baseline client echoes one
  message the size of that Join. Both then hold, and answer one heartbeat
  (an echo for a baseline) at the end to show they are alive.
- echo: a hub client Calls its echo topic; a baseline client sends a message
  the size of that Call to /echo. One request in flight per connection.
- fanout: a publisher's chat message reaches every subscriber; a baseline
  publisher sends a message the size of the hub's Push to /fanout. With
  `transport="longpoll"` the hub's subscribers long-poll (the publisher
  stays on a WebSocket).
- churn: waves of clients join the room (connect to /fanout) and close their
  TCP connections without a Leave or a WebSocket close.
- presence (the hub only): members of a room watch clients join it and
  leave it again; server CPU per presence change, pushes per member per second.
- soak (hub only, in `hub.bench.soak`): thousands of clients chatting in
  rooms, leaving and coming back, for minutes; losses, errors, and the
  server's memory and tasks over time.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import attrs
import picows

from hub.bench import wire
from hub.bench.clients import (
    HubLink,
    Link,
    PlainLink,
    RefusedError,
    hub_connection_count,
    open_hub_link,
    open_longpoll_link,
    open_plain_link,
    plain_connection_count,
)
from hub.bench.procstat import connections, cpu_seconds, cpu_seconds_each, family, rss_bytes
from hub.bench.soak import run_soak
from hub.bench.spec import LoadSpec
from hub.bench.stats import latency_summary

# Progress is reported at most this often, in seconds.
PROGRESS_INTERVAL_SECONDS: Final = 0.25

# churn: how often the server's connection count is read while a wave's
# closes are still being noticed, in seconds.
SETTLE_POLL_SECONDS: Final = 0.05

# presence: how long the members' own arrivals, and the churn's last
# coalesced diff, are given to arrive (the demo's interval is 0.5 s).
PRESENCE_SETTLE_SECONDS: Final = 1.5

Figures = dict[str, Any]
Reporter = Callable[[str, int, int], None]

_LinkT = TypeVar("_LinkT", bound=Link)


class ScenarioError(Exception):
    """The run could not be measured (the server refused or lost the setup)."""


@attrs.define
class _Meter:
    """Wall time, this process's CPU time and the server's, over one window.

    The server's CPU is summed over its process and every descendant (the
    workers of `hub serve --workers N`, and their parent); a process that
    ends inside the window makes the figure wrong, so `stop` raises
    ScenarioError then. `redis_pid`: a Redis server whose CPU is reported
    apart (`redis_cpu_seconds`).
    """

    server_pid: int | None
    redis_pid: int | None = None
    started: float = 0.0
    own_cpu: float = 0.0
    server_cpu: dict[int, float] = attrs.Factory(dict)
    redis_cpu: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.own_cpu = time.process_time()
        if self.server_pid is not None:
            self.server_cpu = cpu_seconds_each(family(self.server_pid))
        if self.redis_pid is not None:
            self.redis_cpu = cpu_seconds(self.redis_pid)

    def stop(self, figures: Figures, prefix: str = "") -> float:
        """Add `<prefix>seconds`, server and own CPU figures; return the seconds."""
        elapsed = time.monotonic() - self.started
        figures[f"{prefix}seconds"] = elapsed
        own = time.process_time() - self.own_cpu
        figures[f"{prefix}loadgen_cpu"] = own / elapsed
        figures[f"{prefix}loadgen_cpu_seconds"] = own
        if self.server_pid is not None and self.server_cpu:
            now = cpu_seconds_each(family(self.server_pid))
            gone = sorted(set(self.server_cpu) - set(now))
            if gone:
                raise ScenarioError(
                    f"server process(es) {', '.join(map(str, gone))} ended during the "
                    "measurement: its CPU time cannot be counted"
                )
            # A process started inside the window (a worker restarted) counts from 0.
            spent = {pid: cpu - self.server_cpu.get(pid, 0.0) for pid, cpu in now.items()}
            figures[f"{prefix}server_cpu_seconds"] = sum(spent.values())
            if len(spent) > 1:
                figures[f"{prefix}server_processes"] = len(spent)
                figures[f"{prefix}busiest_process_cpu_seconds"] = max(spent.values())
                figures[f"{prefix}busiest_process_busy"] = max(spent.values()) / elapsed
        if self.redis_pid is not None and self.redis_cpu is not None:
            figures[f"{prefix}redis_cpu_seconds"] = cpu_seconds(self.redis_pid) - self.redis_cpu
        return elapsed


def _per(figures: Figures, name: str, source: str, count: int, scale: float = 1e6) -> None:
    """figures[name] = figures[source] * scale / count, when both are there."""
    if source in figures and count:
        figures[name] = figures[source] * scale / count


def _rss(spec: LoadSpec) -> int | None:
    return None if spec.server_pid is None else rss_bytes(spec.server_pid)


async def _connect_all(
    count: int,
    open_one: Callable[[int], Awaitable[_LinkT]],
    *,
    concurrency: int,
    report: Reporter,
    phase: str,
    latencies: array.array[float] | None = None,
) -> list[_LinkT]:
    """Open `count` connections, `concurrency` at a time, in index order.

    Raises ScenarioError naming the first failure (and how many failed) if
    any connection could not be opened; the others are closed then.
    """
    links: list[_LinkT | None] = [None] * count
    failures: list[BaseException] = []
    next_index = 0
    done = 0
    last_report = 0.0

    async def worker() -> None:
        nonlocal next_index, done, last_report
        while next_index < count and not failures:
            index = next_index
            next_index += 1
            started = time.monotonic()
            try:
                links[index] = await open_one(index)
            except (OSError, TimeoutError, picows.WSError, RefusedError) as error:
                failures.append(error)
                return
            if latencies is not None:
                latencies.append(time.monotonic() - started)
            done += 1
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_SECONDS:
                last_report = now
                report(phase, done, count)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    report(phase, done, count)
    opened = [link for link in links if link is not None]
    if failures:
        for link in opened:
            link.close_abruptly()
        raise ScenarioError(
            f"{phase}: {len(failures)} connection(s) failed after {done} opened; "
            f"first: {type(failures[0]).__name__}: {failures[0]}"
        ) from failures[0]
    return opened


# --- idle ------------------------------------------------------------------------------


async def run_idle(spec: LoadSpec, report: Reporter) -> Figures:
    """Hold `connections` joined connections: setup rate and cost, memory per connection."""
    join_size = len(wire.join(1, "echo:bench-0", {}))
    figures: Figures = {"connections": spec.connections}
    setup_latencies: array.array[float] = array.array("d")

    async def open_one(index: int) -> Link:
        if spec.dialect == "hub":
            link = await open_hub_link(spec.url)
            await link.join(spec.echo_topic(index), {})
            return link
        plain = await open_plain_link(f"{spec.url}/echo")
        await plain.request(b"j" * join_size)
        return plain

    rss_before = _rss(spec)
    meter = _Meter(spec.server_pid)
    meter.start()
    links = await _connect_all(
        spec.connections,
        open_one,
        concurrency=spec.concurrency,
        report=report,
        phase="connecting",
        latencies=setup_latencies,
    )
    setup_seconds = meter.stop(figures, "setup_")
    gc.freeze()
    figures["setup_rate"] = spec.connections / setup_seconds
    _per(figures, "server_cpu_per_setup_us", "setup_server_cpu_seconds", spec.connections)
    setup = latency_summary(setup_latencies)
    figures["setup_p50_ms"] = setup["p50"] * 1e3
    figures["setup_p99_ms"] = setup["p99"] * 1e3

    report("holding", 0, 1)
    await asyncio.sleep(spec.hold)
    figures["alive"] = await _check_alive(links, spec.drain_timeout)
    report("holding", 1, 1)
    rss_after = _rss(spec)
    if rss_before is not None and rss_after is not None:
        figures["server_rss_before_mb"] = rss_before / 2**20
        figures["server_rss_after_mb"] = rss_after / 2**20
        figures["server_bytes_per_connection"] = (rss_after - rss_before) / spec.connections
    for link in links:
        link.close_abruptly()
    return figures


async def _check_alive(links: Sequence[Link], timeout: float) -> int:
    """How many of `links` answer a heartbeat (an echo, for a baseline) in time."""

    async def ask(link: Link) -> bool:
        if isinstance(link, HubLink):
            ref = link.next_ref()
            reply = await link.request(ref, wire.heartbeat(ref))
            return reply[0] == wire.REPLY and bool(reply[3])
        assert isinstance(link, PlainLink)
        return await link.request(b"alive") == b"alive"

    async def ask_in_time(link: Link) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return await ask(link)
        except (OSError, TimeoutError):
            return False

    answers = await asyncio.gather(*(ask_in_time(link) for link in links))
    return sum(answers)


# --- echo ------------------------------------------------------------------------------


async def run_echo(spec: LoadSpec, report: Reporter) -> Figures:
    """Round trips per second and their latency, one request in flight per connection."""
    payload = "x" * spec.payload_bytes
    call_size = len(wire.call(1, "echo:bench-0", "echo", payload))
    plain_message = b"x" * call_size
    figures: Figures = {"connections": spec.connections, "message_bytes": call_size}

    async def open_one(index: int) -> Link:
        if spec.dialect == "hub":
            link = await open_hub_link(spec.url)
            await link.join(spec.echo_topic(index), {})
            return link
        return await open_plain_link(f"{spec.url}/echo")

    links = await _connect_all(
        spec.connections, open_one, concurrency=spec.concurrency, report=report, phase="connecting"
    )
    gc.freeze()
    latencies: array.array[float] = array.array("d")
    measuring = False
    errors = 0
    completed = 0
    clock = time.monotonic

    def start_hub(index: int, link: HubLink) -> None:
        topic = spec.echo_topic(index)
        sent_at = 0.0

        def send() -> None:
            nonlocal sent_at
            ref = link.next_ref()
            sent_at = clock()
            link.send(wire.call(ref, topic, "echo", payload))

        def on_reply(frame: wire.Frame) -> None:
            nonlocal errors, completed
            if measuring:
                latencies.append(clock() - sent_at)
                completed += 1
                if frame[0] != wire.REPLY or not frame[3] or frame[4] != payload:
                    errors += 1
            if not link.disconnected.done():
                send()

        link.on_reply = on_reply
        send()

    def start_plain(link: PlainLink) -> None:
        sent_at = 0.0

        def send() -> None:
            nonlocal sent_at
            sent_at = clock()
            link.send(plain_message)

        def on_data(message: bytes) -> None:
            nonlocal errors, completed
            if measuring:
                latencies.append(clock() - sent_at)
                completed += 1
                if message != plain_message:
                    errors += 1
            if not link.disconnected.done():
                send()

        link.on_data = on_data
        send()

    for index, link in enumerate(links):
        if isinstance(link, HubLink):
            start_hub(index, link)
        else:
            assert isinstance(link, PlainLink)
            start_plain(link)

    await _countdown(report, "warming up", spec.warmup)
    meter = _Meter(spec.server_pid)
    measuring = True
    meter.start()
    await _countdown(report, "measuring", spec.duration)
    measuring = False
    elapsed = meter.stop(figures)
    closed = sum(link.disconnected.done() for link in links)
    for link in links:
        link.close_abruptly()
    if closed:
        raise ScenarioError(f"echo: the server closed {closed} of {len(links)} connections")
    figures["round_trips"] = completed
    figures["round_trips_per_s"] = completed / elapsed
    figures["errors"] = errors
    _per(figures, "server_cpu_per_op_us", "server_cpu_seconds", completed)
    summary = latency_summary(latencies)
    figures["p50_us"] = summary["p50"] * 1e6
    figures["p99_us"] = summary["p99"] * 1e6
    figures["latency_histogram"] = summary["histogram"]
    return figures


async def _countdown(report: Reporter, phase: str, seconds: float) -> None:
    """Wait `seconds`, reporting progress in tenths."""
    steps = 10
    for step in range(steps):
        report(phase, step, steps)
        await asyncio.sleep(seconds / steps)
    report(phase, steps, steps)


# --- fanout ----------------------------------------------------------------------------


@attrs.define
class _Tally:
    delivered: int = 0
    #: Messages every subscriber has had.
    completed: int = 0
    duplicates: int = 0
    #: When the latest delivery came (time.monotonic).
    last: float = 0.0


# The text of a chat message: run token, sequence number and send time, each
# of fixed width so that every message of a run has the same size; then 'x's
# up to the payload size.
_SEQ_DIGITS: Final = 9
_TIME_DIGITS: Final = 20


def _message_text(token: str, seq: int, sent_ns: int, size: int) -> str:
    head = f"{token}:{seq:0{_SEQ_DIGITS}d}:{sent_ns:0{_TIME_DIGITS}d}:"
    return head + "x" * max(0, size - len(head))


async def run_fanout(spec: LoadSpec, report: Reporter) -> Figures:
    """Deliveries per second, delivery latency and losses, to `connections` subscribers."""
    subscribers = spec.connections
    messages = spec.messages
    token = uuid.uuid4().hex[:8]
    token_length = len(token)
    seq_start = token_length + 1
    time_start = seq_start + _SEQ_DIGITS + 1
    time_end = time_start + _TIME_DIGITS
    # A baseline's message is as long as the Push the hub delivers, so both
    # write the same bytes to each subscriber.
    sample_text = _message_text(token, 0, 0, spec.payload_bytes)
    push_size = len(
        wire.push(spec.room, "message", {"user": "pub", "text": sample_text, "at": 0.5}, messages)
    )
    figures: Figures = {
        "subscribers": subscribers,
        "messages": messages,
        "message_bytes": push_size,
    }

    received = [bytearray(messages) for _ in range(subscribers)]
    counts = array.array("I", bytes(4 * messages))
    latencies: array.array[float] = array.array("d")
    tally = _Tally()
    total = subscribers * messages
    all_in = asyncio.Event()
    progress = asyncio.Event()
    clock_ns = time.monotonic_ns

    def deliver(index: int, text: str) -> None:
        # Only this run's messages count: a room's history may hold others.
        if text[:token_length] != token:
            return
        now = clock_ns()
        seq = int(text[seq_start : seq_start + _SEQ_DIGITS])
        mine = received[index]
        if mine[seq]:
            tally.duplicates += 1
            return
        mine[seq] = 1
        latencies.append((now - int(text[time_start:time_end])) / 1e9)
        tally.delivered += 1
        tally.last = now / 1e9
        counts[seq] += 1
        if counts[seq] == subscribers:
            tally.completed += 1
            progress.set()
        if tally.delivered == total:
            all_in.set()

    def hub_subscriber(index: int, link: HubLink) -> None:
        def on_push(frame: wire.Frame) -> None:
            if frame[2] == "message":
                deliver(index, frame[3]["text"])

        link.on_push = on_push

    def plain_subscriber(index: int, link: PlainLink) -> None:
        def on_data(message: bytes) -> None:
            deliver(index, message.decode())

        link.on_data = on_data

    async def open_one(index: int) -> Link:
        if spec.dialect == "hub":
            if spec.transport == "longpoll":
                link: HubLink = await open_longpoll_link(spec.url)
            else:
                link = await open_hub_link(spec.url)
            hub_subscriber(index, link)
            await link.join(spec.room, {"user": f"sub-{index}"})
            return link
        plain = await open_plain_link(f"{spec.url}/fanout")
        plain_subscriber(index, plain)
        return plain

    links = await _connect_all(
        subscribers, open_one, concurrency=spec.concurrency, report=report, phase="subscribing"
    )
    publisher = await _open_room_link(spec, "pub")
    if spec.dialect == "plain":
        # A baseline has no join to answer: wait until it counts everyone.
        await _settle(spec, subscribers + 1, spec.drain_timeout)
    gc.freeze()
    _spread(spec, figures)

    def message(seq: int) -> bytes:
        text = _message_text(token, seq, clock_ns(), spec.payload_bytes)
        if spec.dialect == "hub":
            return wire.publish(0, spec.room, "message", {"text": text})
        return text.encode().ljust(push_size, b"x")

    meter = _Meter(spec.server_pid, spec.redis_pid)
    meter.start()
    started = time.monotonic()
    figures["mode"] = "rate" if spec.rate else "window"
    if spec.rate:
        interval = 1.0 / spec.rate
        for seq in range(messages):
            delay = started + seq * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            publisher.send(message(seq))
            if seq % 64 == 0:
                report("publishing", seq, messages)
    else:
        for seq in range(messages):
            while seq - tally.completed >= spec.window:
                progress.clear()
                try:
                    await asyncio.wait_for(progress.wait(), spec.drain_timeout)
                except TimeoutError:
                    break
            publisher.send(message(seq))
            if seq % 64 == 0:
                report("publishing", seq, messages)
    report("publishing", messages, messages)
    # What has not arrived by then is counted lost below.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), spec.drain_timeout)
    report("delivering", tally.delivered, total)
    meter.stop(figures)
    closed = sum(link.disconnected.done() for link in links)
    for link in [*links, publisher]:
        link.close_abruptly()

    delivered = tally.delivered
    lost_per_subscriber = [messages - sum(flags) for flags in received]
    window_seconds = max(tally.last - started, 1e-9)
    figures["deliveries"] = delivered
    figures["deliveries_per_s"] = delivered / window_seconds if delivered else 0.0
    figures["lost"] = sum(lost_per_subscriber)
    figures["subscribers_with_loss"] = sum(1 for lost in lost_per_subscriber if lost)
    figures["max_lost_per_subscriber"] = max(lost_per_subscriber)
    figures["duplicates"] = tally.duplicates
    figures["closed_by_server"] = closed
    _per(figures, "server_cpu_per_op_us", "server_cpu_seconds", delivered)
    _per(figures, "redis_cpu_per_op_us", "redis_cpu_seconds", delivered)
    _per(figures, "busiest_worker_cpu_per_op_us", "busiest_process_cpu_seconds", delivered)
    _per(figures, "loadgen_cpu_per_op_us", "loadgen_cpu_seconds", delivered)
    summary = latency_summary(latencies)
    figures["p50_ms"] = summary["p50"] * 1e3
    figures["p99_ms"] = summary["p99"] * 1e3
    figures["latency_histogram"] = summary["histogram"]
    return figures


def _spread(spec: LoadSpec, figures: Figures) -> None:
    """Add how the server's connections are spread over its workers (several processes only).

    `connections_per_worker`: each worker's established connections to the
    server's port (/proc), fewest first; `busiest_worker_share`: the largest
    fraction of them on one worker (1/N when the kernel spread them evenly).
    """
    if spec.server_pid is None:
        return
    processes = family(spec.server_pid)
    if len(processes) < 2:
        return
    port = urllib.parse.urlsplit(spec.url).port
    if port is None:
        return
    # The parent of `hub serve --workers` serves nothing: its workers are the rest.
    held = connections(processes[1:], port)
    total = sum(held.values())
    figures["connections_per_worker"] = sorted(held.values())
    if total:
        figures["busiest_worker_share"] = max(held.values()) / total


async def _open_room_link(spec: LoadSpec, user: str) -> Link:
    """A hub client joined to the room as `user`, or a baseline client on /fanout."""
    if spec.dialect == "hub":
        link = await open_hub_link(spec.url)
        await link.join(spec.room, {"user": user})
        return link
    return await open_plain_link(f"{spec.url}/fanout")


# --- churn -----------------------------------------------------------------------------


async def _connection_count(spec: LoadSpec) -> int:
    if spec.dialect == "hub":
        return await hub_connection_count(spec.url)
    return await plain_connection_count(spec.url)


async def _settle(spec: LoadSpec, expected: int, timeout: float) -> int:
    """Wait until the server counts `expected` connections; return its last count.

    Raises ScenarioError if it does not within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = await _connection_count(spec)
        if count == expected:
            return count
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"the server still counts {count} connections, not {expected}, {timeout:g} s on"
            )
        await asyncio.sleep(SETTLE_POLL_SECONDS)


async def run_churn(spec: LoadSpec, report: Reporter) -> Figures:
    """Waves of clients that join and vanish: is the server's memory back where it was?"""
    figures: Figures = {"waves": spec.waves, "clients_per_wave": spec.connections}
    # Whatever else is connected (a probe of the baselines' does not count).
    others = await _connection_count(spec)
    holder = await _open_room_link(spec, "holder")
    held = await _settle(spec, others + 1, spec.drain_timeout)
    rss_start = _rss(spec)
    rss_per_wave: list[float] = []
    setup_seconds = 0.0
    meter = _Meter(spec.server_pid)
    meter.start()

    for wave in range(spec.waves):

        async def open_one(index: int, wave: int = wave) -> Link:
            return await _open_room_link(spec, f"churn-{wave}-{index}")

        wave_started = time.monotonic()
        links = await _connect_all(
            spec.connections,
            open_one,
            concurrency=spec.concurrency,
            report=report,
            phase=f"wave {wave + 1}/{spec.waves}",
        )
        setup_seconds += time.monotonic() - wave_started
        for link in links:
            link.close_abruptly()
        del links
        await _settle(spec, held, spec.drain_timeout)
        rss = _rss(spec)
        if rss is not None:
            rss_per_wave.append(rss / 2**20)

    # What the server gives back once left alone (the hub trims after a pause
    # in the closes); the baselines are left alone just as long.
    await asyncio.sleep(spec.settle)
    rss_settled = _rss(spec)
    meter.stop(figures)
    holder.close()
    clients = spec.waves * spec.connections
    figures["clients"] = clients
    figures["setup_rate"] = clients / setup_seconds
    _per(figures, "server_cpu_per_client_us", "server_cpu_seconds", clients)
    if rss_start is not None and rss_per_wave:
        start = rss_start / 2**20
        figures["server_rss_start_mb"] = start
        figures["server_rss_end_mb"] = rss_per_wave[-1]
        figures["server_rss_max_mb"] = max(rss_per_wave)
        figures["server_rss_end_ratio"] = rss_per_wave[-1] / start
        if rss_settled is not None:
            settled = rss_settled / 2**20
            figures["server_rss_settled_mb"] = settled
            figures["server_rss_settled_ratio"] = settled / start
            figures["back_within_10pct"] = int(settled <= start * 1.10)
        if len(rss_per_wave) > 1:
            # Allocators keep much of what the first wave took; growth after
            # it is what a leak looks like.
            later_growth = rss_per_wave[-1] - rss_per_wave[0]
            figures["server_rss_growth_per_wave_mb"] = later_growth / (len(rss_per_wave) - 1)
        figures["rss_per_wave_mb"] = rss_per_wave
    return figures


# --- presence --------------------------------------------------------------------------


async def run_presence(spec: LoadSpec, report: Reporter) -> Figures:
    """Members watch churners join the room and leave it: what each presence change costs.

    `connections` members join the room asking for presence pushes and stay.
    `churners` more clients connect first (not measured); then, measured,
    each joins the room and leaves it again, `concurrency` at a time: two
    presence changes each. The server's CPU over that window per change,
    and the `$presence_diff` pushes each member got per second of it, are
    the figures; a member's copy must come back to the members alone.
    Pushes per second are over the window from the churn's start to the
    last diff any member got (a coalesced diff comes up to an interval late).
    """
    if spec.dialect != "hub":
        raise ScenarioError("presence is the hub's own: no baseline has it")
    members = spec.connections
    figures: Figures = {"members": members, "churners": spec.churners}
    pushes = [0] * members
    # Each member's users present, kept from its state and diffs.
    known: list[dict[str, int]] = [{} for _ in range(members)]
    last_push = 0.0
    # Members whose copy holds the members alone (no churner), and whether
    # the churn is over: then, all of them in sync is the end of the run.
    in_sync: set[int] = set()
    churned = False
    settled = asyncio.Event()

    def note(index: int) -> None:
        if len(known[index]) == members:
            in_sync.add(index)
        else:
            in_sync.discard(index)
        if churned and len(in_sync) == members:
            settled.set()

    def watch(index: int, frame: wire.Frame) -> None:
        nonlocal last_push
        event = frame[2]
        payload: Any = frame[3] if len(frame) > 3 else None
        users = known[index]
        if event == "$presence_state":
            users.clear()
            users.update({user: len(entries) for user, entries in payload.items()})
        elif event == "$presence_diff":
            pushes[index] += 1
            last_push = time.monotonic()
            for user, entries in payload["leaves"].items():
                left = users.get(user, 0) - len(entries)
                if left > 0:
                    users[user] = left
                else:
                    users.pop(user, None)
            for user, entries in payload["joins"].items():
                users[user] = max(users.get(user, 0), len(entries))
        note(index)

    async def open_member(index: int) -> HubLink:
        link = await open_hub_link(spec.url)
        link.on_push = lambda frame: watch(index, frame)
        await link.join(spec.room, {"user": f"member-{index}", "$presence": {}})
        return link

    async def open_churner(index: int) -> HubLink:
        return await open_hub_link(spec.url)

    watching = await _connect_all(
        members, open_member, concurrency=spec.concurrency, report=report, phase="members"
    )
    churners = await _connect_all(
        spec.churners, open_churner, concurrency=spec.concurrency, report=report, phase="churners"
    )
    # The members' own arrivals are pushed (coalesced ones within an interval):
    # not counted.
    await asyncio.sleep(PRESENCE_SETTLE_SECONDS)
    pushes[:] = [0] * members

    next_index = 0
    done = 0

    async def churn() -> None:
        nonlocal next_index, done
        while next_index < len(churners):
            index = next_index
            next_index += 1
            link = churners[index]
            await link.join(spec.room, {"user": f"churner-{index}"})
            ref = link.next_ref()
            reply = await link.request(ref, wire.leave(ref, spec.room))
            if reply[0] != wire.REPLY or not reply[3]:
                raise ScenarioError(f"a churner's leave was refused: {reply!r}")
            done += 1
            if done % 50 == 0:
                report("churning", done, len(churners))

    meter = _Meter(spec.server_pid)
    meter.start()
    started = time.monotonic()
    await asyncio.gather(*(churn() for _ in range(min(spec.concurrency, len(churners)))))
    seconds = meter.stop(figures)
    report("churning", done, len(churners))
    # Every member's copy comes back to the members alone once the pushes
    # still on their way have arrived; then the last coalesced diff, if any,
    # within an interval.
    churned = True
    for index in range(members):
        note(index)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(spec.drain_timeout):
            await settled.wait()
    await asyncio.sleep(PRESENCE_SETTLE_SECONDS)
    for link in (*watching, *churners):
        link.close()
    changes = 2 * len(churners)
    figures["presence_changes"] = changes
    figures["changes_per_s"] = changes / seconds
    _per(figures, "server_cpu_per_change_us", "server_cpu_seconds", changes)
    window = max(seconds, last_push - started)
    figures["pushes_per_member"] = sum(pushes) / members
    figures["pushes_per_member_per_change"] = sum(pushes) / members / changes
    figures["pushes_per_member_per_s"] = sum(pushes) / members / window
    figures["max_pushes_per_member_per_s"] = max(pushes) / window
    expected = {f"member-{index}" for index in range(members)}
    figures["members_in_sync"] = sum(1 for users in known if set(users) == expected)
    return figures


SCENARIO_RUNNERS: Final[dict[str, Callable[[LoadSpec, Reporter], Awaitable[Figures]]]] = {
    "idle": run_idle,
    "echo": run_echo,
    "fanout": run_fanout,
    "churn": run_churn,
    "presence": run_presence,
    "soak": run_soak,
}
