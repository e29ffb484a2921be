"""Benchmarks of the hub over real WebSockets on loopback (a script, not a test).

The hub runs as its own process (`hub serve`), so it has a core to itself;
the clients run here. Reports, each as the median and range of several runs:

- fan-out: one client publishes to a room of N members; deliveries/s until
  every member has every message (msgpack and JSON);
- memory per idle connection joined to a topic: the server's RSS growth.

    python benchmarks/hub_bench.py [--repeat 3] [--members 200] [--messages 200]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio_websocket

from hub.protocol import JSON, MSGPACK, Codec, Join, Publish, Push, Reply

# The longest one measurement may take before it is taken for a hang.
RUN_TIMEOUT_SECONDS = 300


@contextmanager
def running_hub() -> Iterator[tuple[int, int]]:
    """Start `hub serve --port 0`; yield (port, pid); stop it with SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://[\d.]+:(\d+)/", line)
        if match is None:
            raise RuntimeError(f"hub did not start: {line!r}")
        yield int(match.group(1)), process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def _join(websocket: trio_websocket.WebSocketConnection, codec: Codec, topic: str) -> None:
    await websocket.send_message(codec.encode(Join(1, topic, {"user": "bench"})))
    while True:
        for frame in codec.decode(await websocket.get_message()):
            if isinstance(frame, Reply) and frame.ref == 1:
                assert frame.ok, frame
                return


async def fan_out(port: int, codec: Codec, members: int, messages: int) -> float:
    """Deliveries/s of `messages` chat messages to a room of `members` clients."""
    url = f"ws://127.0.0.1:{port}/ws"
    topic = f"room:bench-{codec.subprotocol}-{time.monotonic_ns()}"
    received = 0
    all_in = trio.Event()
    total = members * messages

    async def member(ready: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        nonlocal received
        async with trio_websocket.open_websocket_url(url, subprotocols=[codec.subprotocol]) as ws:
            await _join(ws, codec, topic)
            task_status.started()
            seen = 0
            while seen < messages:
                for frame in codec.decode(await ws.get_message()):
                    # Only the chat messages: the demo's rooms also announce
                    # who is present as members come and go.
                    if isinstance(frame, Push) and frame.event == "message":
                        seen += 1
            received += seen
            if received == total:
                all_in.set()
            await ready.wait()

    # A run that loses count would otherwise wait forever: fail it loudly.
    with trio.fail_after(RUN_TIMEOUT_SECONDS):
        async with trio.open_nursery() as nursery:
            done = trio.Event()
            for _ in range(members):
                await nursery.start(member, done)
            async with trio_websocket.open_websocket_url(
                url, subprotocols=[codec.subprotocol]
            ) as publisher:
                await _join(publisher, codec, topic)
                started = time.perf_counter()
                for index in range(messages):
                    frame = Publish(0, topic, "message", {"text": f"message {index}"})
                    await publisher.send_message(codec.encode(frame))
                await all_in.wait()
                elapsed = time.perf_counter() - started
            done.set()
    return total / elapsed


async def idle_connection_bytes(port: int, pid: int, count: int) -> float:
    """Server RSS growth per idle connection joined to one (echo) topic."""
    url = f"ws://127.0.0.1:{port}/ws"
    before = _rss_bytes(pid)
    with trio.fail_after(RUN_TIMEOUT_SECONDS):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def idle(task_status: trio.TaskStatus[None]) -> None:
                async with trio_websocket.open_websocket_url(
                    url, subprotocols=[MSGPACK.subprotocol]
                ) as ws:
                    await _join(ws, MSGPACK, "echo:idle")
                    task_status.started()
                    await done.wait()

            for _ in range(count):
                await nursery.start(idle)
            after = _rss_bytes(pid)
            done.set()
    return (after - before) / count


def _summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):>12,.0f}   "
        f"range {min(values):,.0f} .. {max(values):,.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--idle", type=int, default=2000)
    args = parser.parse_args(argv)
    fan_msgpack: list[float] = []
    fan_json: list[float] = []
    idle: list[float] = []
    for _ in range(args.repeat):
        with running_hub() as (port, pid):
            fan_msgpack.append(trio.run(fan_out, port, MSGPACK, args.members, args.messages))
            fan_json.append(trio.run(fan_out, port, JSON, args.members, args.messages))
        with running_hub() as (port, pid):
            idle.append(trio.run(idle_connection_bytes, port, pid, args.idle))
    print(f"fan-out msgpack, {args.members} members   deliveries/s {_summary(fan_msgpack)}")
    print(f"fan-out json,    {args.members} members   deliveries/s {_summary(fan_json)}")
    print(f"server memory per idle joined connection  bytes {_summary(idle)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
