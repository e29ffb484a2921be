"""Micro-benchmarks of the actor runtime (a script, not a test).

Reports, each as the median and range of several runs:
- messages/s through one mailbox, read one at a time and in batches;
- deliveries/s of a broadcast into 1,000 mailboxes drained in batches;
- the memory of 100,000 idle actors (task + mailbox + ref), per actor.

    python benchmarks/actors_bench.py [--repeat 5] [--idle 100000]

The figures quoted in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

import actors


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def _consume_one_at_a_time(ctx: actors.Context, count: int, done: trio.Event) -> None:
    for _ in range(count):
        await ctx.receive()
    done.set()


async def _consume_batched(ctx: actors.Context, count: int, done: trio.Event) -> None:
    seen = 0
    while seen < count:
        seen += len(await ctx.receive_batch(256))
    done.set()


async def mailbox_throughput(consumer: Callable[..., Any], count: int) -> float:
    """Messages/s from one sender to one actor.

    The sender queues without waiting and yields every 64 messages, as a
    broadcaster does; when the mailbox (1,024) is full it waits for room.
    """
    async with actors.open_system(handle_signals=False) as system:
        done = trio.Event()
        ref = await system.spawn(consumer, count, done, mailbox_capacity=1024)
        started = time.perf_counter()
        for index in range(count):
            try:
                ref.send_nowait(index)
            except actors.MailboxFullError:
                await ref.send(index)
            if index % 64 == 63:
                await trio.lowlevel.checkpoint()
        await done.wait()
        return count / (time.perf_counter() - started)


async def broadcast_throughput(subscribers: int, messages: int) -> float:
    """Deliveries/s of `messages` broadcasts, each into `subscribers` mailboxes."""
    async with actors.open_system(handle_signals=False) as system:
        finished = 0
        all_done = trio.Event()

        async def subscriber(ctx: actors.Context) -> None:
            nonlocal finished
            seen = 0
            while seen < messages:
                seen += len(await ctx.receive_batch(256))
            finished += 1
            if finished == subscribers:
                all_done.set()

        refs = [
            await system.spawn(subscriber, mailbox_capacity=messages + 1)
            for _ in range(subscribers)
        ]
        started = time.perf_counter()
        for index in range(messages):
            for ref in refs:
                ref.send_nowait(index)
            # Let the subscribers drain between rounds, as a real broadcaster
            # would between events; the batch drain takes whatever piled up.
            if index % 16 == 15:
                await trio.lowlevel.checkpoint()
        await all_done.wait()
        return subscribers * messages / (time.perf_counter() - started)


async def idle_actor_bytes(count: int) -> float:
    """Bytes of memory per idle actor: RSS growth over `count` function actors."""

    async def idle(ctx: actors.Context) -> None:
        async for _ in ctx:
            pass

    async with actors.open_system(handle_signals=False) as system:
        supervisor = await system.start_supervisor()
        gc.collect()
        before = _rss_bytes()
        for _ in range(count):
            await supervisor.start_child(
                actors.ChildSpec(id=None, start=idle, restart=actors.Restart.TEMPORARY)
            )
        gc.collect()
        after = _rss_bytes()
        assert supervisor.count_children() == count
        return (after - before) / count


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--idle", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    results: dict[str, list[float]] = {
        "mailbox_single_msgs_per_s": [],
        "mailbox_batched_msgs_per_s": [],
        "broadcast_1000_deliveries_per_s": [],
    }
    for _ in range(args.repeat):
        results["mailbox_single_msgs_per_s"].append(
            trio.run(mailbox_throughput, _consume_one_at_a_time, args.messages)
        )
        results["mailbox_batched_msgs_per_s"].append(
            trio.run(mailbox_throughput, _consume_batched, args.messages)
        )
        results["broadcast_1000_deliveries_per_s"].append(
            trio.run(broadcast_throughput, args.subscribers, args.broadcasts)
        )
    # Memory is measured once per process run on a fresh heap: repeating it
    # in one process would measure the allocator's reuse, not the actors.
    results["idle_actor_bytes"] = [trio.run(idle_actor_bytes, args.idle)]

    summary = {name: _summary(values) for name, values in results.items()}
    if args.json:
        json.dump(summary, sys.stdout)
        print()
    else:
        for name, stats in summary.items():
            print(
                f"{name:36s} median {stats['median']:>12,.0f}   "
                f"range {stats['min']:,.0f} .. {stats['max']:,.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
