"""Where a match's tick lateness comes from: `hub bench lobby` against an instrumented hub.

    .venv/bin/python benchmarks/tick_lateness.py                      # 200 bots, inputs spread
    .venv/bin/python benchmarks/tick_lateness.py --inputs together    # the burst
    .venv/bin/python benchmarks/tick_lateness.py -n 100 --duration 20

Starts `hub serve examples.lobby.app:bench` in a process of its own with
trio instruments and a few wrappers around the runtime's private timer
and tick-accounting methods (a diagnostic, so it may reach inside; it
changes nothing they do), runs `hub bench lobby --url` against it, and
prints, over the bench's measured window, each tick's lateness split in
its parts:

- fire delay: from when the tick was due to when the runtime's timer task
  put it in the match's mailbox (the timer task waits for the scheduler
  batch under way, then for its turn in the next);
- wait to run: from then until the match's actor task next ran (another
  scheduler batch);
- in the step: from the start of that task step to the tick's handling
  (the messages the actor took before it in the same step: queued inputs);
- and the messages queued ahead of the tick when it was delivered;

then the scheduler's batches (wall and CPU time: a batch much longer in
wall time than in CPU time is the hub not given the CPU), the task steps
over 2 ms, and the garbage collector's pauses. The figures of the lobby
section of docs/benchmarks.md were read this way.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

# The settings `hub bench` serves the hub with (hub.bench.servers._NO_LIMITS).
_SETTINGS = (
    "session.messages_per_second=1e9",
    "session.bytes_per_second=1e12",
    "session.max_calls_in_flight=1000000",
    "limits.max_connections=0",
    "limits.max_handshakes_per_second=0",
)
_URL = re.compile(rb"ws://[0-9.]+:[0-9]+/ws")
# Task steps longer than this are listed.
_LONG_STEP_SECONDS = 0.002


def _serve(out: str, argv: list[str]) -> int:
    """The hub's process: serve with the instruments; write what they saw to `out` at exit."""
    import trio

    from actors import timers
    from hub.cli import main
    from hub.topics import actor as topic_actor

    clock = time.monotonic
    seen: dict[str, list[Any]] = collections.defaultdict(list)
    step_started: dict[object, float] = {}
    batch: dict[str, Any] = {}
    fired: dict[object, tuple[float, float, int]] = {}

    class Instrument(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            step_started[task] = clock()

        def after_task_step(self, task: Any) -> None:
            seconds = clock() - step_started.get(task, clock())
            if seconds > _LONG_STEP_SECONDS:
                seen["long_steps"].append((clock(), seconds * 1000, task.name))

        def after_io_wait(self, timeout: float) -> None:
            batch["wall"], batch["cpu"] = clock(), time.thread_time()

        def before_io_wait(self, timeout: float) -> None:
            if batch:
                now, cpu = clock(), time.thread_time()
                wall, used = now - batch["wall"], cpu - batch["cpu"]
                seen["batches"].append((now, wall * 1000, used * 1000))

    collecting: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting["at"] = clock()
        else:
            seen["gc"].append((clock(), info["generation"], (clock() - collecting["at"]) * 1000))

    gc.callbacks.append(on_gc)

    fire = timers.Timer._fire

    def fire_and_note(timer: Any, now: float) -> None:
        if timer.interval is not None and not timer._queued:
            late = trio.current_time() - timer.deadline
            by_timer_task = "TimerService" in trio.lowlevel.current_task().name
            fired[timer] = (clock(), late, len(timer.owner._mailbox), by_timer_task)
        fire(timer, now)

    count_tick = topic_actor.TopicActor._count_tick

    def count_and_note(actor: Any, message: Any, timer: Any) -> None:
        note = fired.get(timer)
        if note is not None:
            at, fire_delay, ahead, by_timer_task = note
            now = clock()
            step = step_started.get(trio.lowlevel.current_task(), now)
            late = trio.current_time() - timer.due
            seen["ticks"].append(
                (
                    now,
                    late * 1000,
                    fire_delay * 1000,
                    max(0.0, step - at) * 1000,
                    (now - max(step, at)) * 1000,
                    ahead,
                    by_timer_task,
                )
            )
        count_tick(actor, message, timer)

    timers.Timer._fire = fire_and_note  # type: ignore[method-assign,assignment]
    topic_actor.TopicActor._count_tick = count_and_note  # type: ignore[method-assign,assignment]

    run = trio.run

    def run_instrumented(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("instruments", []).append(Instrument())
        return run(*args, **kwargs)

    trio.run = run_instrumented  # type: ignore[assignment]
    try:
        return main(argv)
    finally:
        with open(out, "w") as file:
            json.dump(seen, file)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    points = (0.5, 0.9, 0.99)
    figures = " ".join(f"p{round(p * 100)} {_percentile(values, p):7.2f}" for p in points)
    return f"{figures} max {max(values):7.2f}"


def _report(seen: dict[str, list[Any]], start: float, end: float) -> None:
    def window(rows: list[Any]) -> list[Any]:
        return [row for row in rows if start <= row[0] <= end]

    ticks = window(seen["ticks"])
    print(f"{len(ticks)} ticks in the measured window ({end - start:.1f} s)")
    names = ("lateness ms", "fire delay ms", "wait to run ms", "in the step ms", "queued ahead")
    for index, name in enumerate(names, start=1):
        print(f"  {name:14s} {_spread([row[index] for row in ticks])}")
    by_timer_task = sum(1 for row in ticks if row[6])
    print(f"  put in the mailbox by the timer task: {by_timer_task} (the rest by their actor)")
    worst = sorted(ticks, key=lambda row: -row[1])[: max(1, len(ticks) // 100)]
    if worst:
        means = [sum(row[i] for row in worst) / len(worst) for i in range(1, 6)]
        print("  the worst 1%, mean of each part: " + ", ".join(f"{m:.2f}" for m in means))
    batches = window(seen["batches"])
    print(f"scheduler batches: {len(batches)}")
    print(f"  wall ms {_spread([row[1] for row in batches])}")
    print(f"  CPU ms  {_spread([row[2] for row in batches])}")
    steps = window(seen["long_steps"])
    kinds = collections.Counter(re.sub(r"<locals>\.|[^.]*\.", "", row[2])[:40] for row in steps)
    print(f"task steps over {_LONG_STEP_SECONDS * 1000:g} ms: {len(steps)} {dict(kinds)}")
    for generation in (0, 1, 2):
        pauses = [row[2] for row in window(seen["gc"]) if row[1] == generation]
        if pauses:
            print(f"gc generation {generation}: {len(pauses)}, ms {_spread(pauses)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="bots (default 200)")
    parser.add_argument("--inputs", choices=("spread", "together"), default="spread")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--serve", metavar="OUT", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve:
        return _serve(args.serve, rest)
    out = tempfile.mkstemp(prefix="tick-lateness-", suffix=".json")[1]
    settings = [part for setting in _SETTINGS for part in ("--set", setting)]
    command = [sys.executable, __file__, "--serve", out, "serve", "examples.lobby.app:bench"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0", *settings, "--log-level", "warning"],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = _URL.search(line)
        if match is None:
            raise SystemExit(f"the hub printed no URL: {line!r}")
        print(f"load average {os.getloadavg()[0]:.2f} at the start")
        bench = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "bench",
                "lobby",
                "--url",
                match.group(0).decode(),
                "-n",
                str(args.n),
                "--duration",
                str(args.duration),
                "--warmup",
                str(args.warmup),
                "--repeats",
                "1",
                "--inputs",
                args.inputs,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        start = end = 0.0
        assert bench.stderr is not None and bench.stdout is not None
        for progress in bench.stderr:
            if progress.rstrip().endswith(": play"):
                start = time.monotonic()
            elif progress.rstrip().endswith(": done"):
                end = time.monotonic()
        table = bench.stdout.read()
        bench.wait()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("\n".join(line for line in table.splitlines() if "lateness" in line or "missed" in line))
    with open(out) as file:
        seen = json.load(file)
    os.unlink(out)
    _report(seen, start, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
