"""From runs to a report: summaries over repeats, ratios, the table, JSON and a plot.

A run is one load-generator pass against one freshly started server; its
figures are a flat dict. Repeats are interleaved (hub, baselines, hub, ...),
so the hub's run i and a baseline's run i ran under about the same machine
load: ratios are taken per repeat, then summarised like any figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from hub.bench.stats import histogram_edges, summary

# A load generator busier than this (fraction of one core) may have held the
# figures down itself: the report says so.
SATURATION: Final = 0.9


@attrs.frozen
class Metric:
    key: str
    label: str
    #: "higher" or "lower" is better; "" for counts that are not compared.
    better: str = ""
    #: Shown as a percentage (the value is a fraction).
    percent: bool = False

    @property
    def compared(self) -> bool:
        return bool(self.better)


METRICS: Final[dict[str, tuple[Metric, ...]]] = {
    "idle": (
        Metric("alive", "connections alive at the end"),
        Metric("setup_rate", "setups/s (connect + join)", "higher"),
        Metric("setup_p50_ms", "setup p50 (ms)", "lower"),
        Metric("setup_p99_ms", "setup p99 (ms)", "lower"),
        Metric("server_cpu_per_setup_us", "server CPU per setup (us)", "lower"),
        Metric("server_bytes_per_connection", "server memory per connection (bytes)", "lower"),
        Metric("server_rss_after_mb", "server RSS, all connected (MiB)", "lower"),
        Metric("setup_loadgen_cpu", "load generator CPU, setup (of a core)", percent=True),
    ),
    "echo": (
        Metric("round_trips_per_s", "round trips/s", "higher"),
        Metric("p50_us", "latency p50 (us)", "lower"),
        Metric("p99_us", "latency p99 (us)", "lower"),
        Metric("server_cpu_per_op_us", "server CPU per round trip (us)", "lower"),
        Metric("server_busy", "server CPU (of a core)", percent=True),
        Metric("errors", "wrong answers"),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
    ),
    "fanout": (
        Metric("deliveries_per_s", "deliveries/s", "higher"),
        Metric("p50_ms", "delivery latency p50 (ms)", "lower"),
        Metric("p99_ms", "delivery latency p99 (ms)", "lower"),
        Metric("server_cpu_per_op_us", "server CPU per delivery (us)", "lower"),
        Metric("server_busy", "server CPU (of a core)", percent=True),
        Metric("deliveries", "deliveries"),
        Metric("lost", "lost messages (all subscribers)"),
        Metric("subscribers_with_loss", "subscribers that lost any"),
        Metric("closed_by_server", "subscribers closed by the server"),
        Metric("redis_cpu_per_op_us", "Redis server CPU per delivery (us)", "lower"),
        Metric("busiest_worker_share", "connections on the busiest worker", percent=True),
        Metric("busiest_process_busy", "busiest worker's CPU (of a core)", percent=True),
        Metric(
            "busiest_worker_cpu_per_op_us", "busiest worker's CPU per delivery of the whole (us)"
        ),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
        Metric("loadgen_cpu_per_op_us", "load generator CPU per delivery (us)"),
        Metric("load_1m", "machine load average (1 min) at the run's start"),
    ),
    "churn": (
        Metric("clients", "clients (waves x clients per wave)"),
        Metric("setup_rate", "setups/s (connect + join)", "higher"),
        Metric("server_cpu_per_client_us", "server CPU per client (us)", "lower"),
        Metric("server_rss_start_mb", "server RSS at start (MiB)", "lower"),
        Metric("server_rss_max_mb", "server RSS, highest after a wave (MiB)", "lower"),
        Metric("server_rss_end_mb", "server RSS after the last wave (MiB)", "lower"),
        Metric("server_rss_end_ratio", "server RSS after the last wave / at start", percent=True),
        Metric("server_rss_settled_mb", "server RSS once left alone after it (MiB)", "lower"),
        Metric("server_rss_settled_ratio", "server RSS once left alone / at start", percent=True),
        Metric("back_within_10pct", "runs back within 10% of the start RSS, left alone"),
        Metric("server_rss_growth_per_wave_mb", "server RSS growth per wave after the first (MiB)"),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
    ),
    "presence": (
        Metric("presence_changes", "presence changes (a join and a leave per churner)"),
        Metric("changes_per_s", "presence changes/s", "higher"),
        Metric("server_cpu_per_change_us", "server CPU per presence change (us)", "lower"),
        Metric("pushes_per_member", "presence pushes per member, in all"),
        Metric("pushes_per_member_per_change", "presence pushes per member per change", "lower"),
        Metric("pushes_per_member_per_s", "presence pushes per member per second", "lower"),
        Metric("max_pushes_per_member_per_s", "most presence pushes any member got per second"),
        Metric("members_in_sync", "members whose count of users came back right"),
        Metric("server_busy", "server CPU (of a core)", percent=True),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
    ),
    "lobby": (
        Metric("players", "players (bots)"),
        Metric("matches", "matches"),
        Metric("tick_hz", "tick rate asked (Hz)"),
        Metric("ticks_per_s_per_match", "ticks/s per match, measured", "higher"),
        Metric("tick_late_p50_ms", "tick lateness p50 (ms)", "lower"),
        Metric("tick_late_p99_ms", "tick lateness p99 (ms)", "lower"),
        Metric("tick_late_max_ms", "tick lateness max (ms)", "lower"),
        Metric("ticks_missed", "ticks missed (all matches)", "lower"),
        Metric("state_deliveries_per_s", "state deliveries/s", "higher"),
        Metric("expected_deliveries_per_s", "state deliveries/s at full rate"),
        Metric("server_cpu_per_delivery_us", "server CPU per state delivery (us)", "lower"),
        Metric("server_busy", "server CPU (of a core)", percent=True),
        Metric("closed_by_server", "bots closed by the server"),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
    ),
    "soak": (
        Metric("messages_sent", "chat messages sent"),
        Metric("deliveries", "chat messages delivered"),
        Metric("deliveries_per_s", "chat deliveries/s", "higher"),
        Metric("deliveries_expected", "deliveries checked (members present)"),
        Metric("lost", "lost messages"),
        Metric("duplicates", "messages delivered twice"),
        Metric("errors", "errors (error frames, refusals, server closes)"),
        Metric("comebacks", "members that left and came back"),
        Metric("memberships_dropped_unchecked", "memberships ended by a dropped connection"),
        Metric("rss_start_mb", "server RSS before connecting (MiB)", "lower"),
        Metric("rss_warm_mb", "server RSS after warm-up (MiB)", "lower"),
        Metric("rss_end_mb", "server RSS at the end (MiB)", "lower"),
        Metric("rss_slope_mb_per_min", "server RSS slope after warm-up (MiB/min)", "lower"),
        Metric("rss_after_mb", "server RSS after every client left (MiB)", "lower"),
        Metric("tasks_start", "server tasks before connecting"),
        Metric("tasks_warm", "server tasks after warm-up"),
        Metric("tasks_end", "server tasks at the end"),
        Metric("tasks_slope_per_min", "server tasks slope after warm-up (per min)"),
        Metric("tasks_after", "server tasks after every client left"),
        Metric("server_busy", "server CPU (of a core)", percent=True),
        Metric("loadgen_cpu", "load generator CPU (of a core)", percent=True),
    ),
}

#: The figure each scenario's throughput plot shows.
THROUGHPUT: Final = {
    "idle": "setup_rate",
    "echo": "round_trips_per_s",
    "fanout": "deliveries_per_s",
    "churn": "setup_rate",
    "presence": "changes_per_s",
    "lobby": "state_deliveries_per_s",
    "soak": "deliveries_per_s",
}

_LOADGEN_CPU: Final = {"idle": "setup_loadgen_cpu"}


@attrs.frozen
class Run:
    server: str
    repeat: int
    figures: dict[str, Any] | None = None
    error: str | None = None


def derive(figures: dict[str, Any]) -> dict[str, Any]:
    """Add the figures computed from others (the server's share of a core)."""
    if "server_cpu_seconds" in figures and figures.get("seconds"):
        figures["server_busy"] = figures["server_cpu_seconds"] / figures["seconds"]
    return figures


def _values(runs: Sequence[Run], server: str, key: str) -> dict[int, float]:
    """The repeat -> value map of one figure of one server's runs that have it."""
    found = {}
    for run in runs:
        if run.server == server and run.figures is not None and key in run.figures:
            value = run.figures[key]
            if isinstance(value, int | float) and math.isfinite(value):
                found[run.repeat] = float(value)
    return found


@attrs.frozen
class Ratio:
    """One column of ratios: `numerator`'s figure over `denominator`'s, per repeat."""

    #: Its key in a summary's "ratios".
    key: str
    numerator: str
    denominator: str

    @property
    def label(self) -> str:
        return f"{self.numerator} / {self.denominator}"


def first_against_others(servers: Sequence[str]) -> list[Ratio]:
    """The usual ratios: the first server (the hub) over each other one, keyed by that one."""
    first, *others = servers
    return [Ratio(other, first, other) for other in others]


def summarise(
    scenario: str,
    servers: Sequence[str],
    runs: Sequence[Run],
    ratios: Sequence[Ratio] | None = None,
) -> dict[str, Any]:
    """Per metric: each server's median and range, and its ratios (default: the first's)."""
    result: dict[str, Any] = {}
    columns = first_against_others(servers) if ratios is None else ratios
    for metric in METRICS[scenario]:
        entry: dict[str, Any] = {"label": metric.label, "better": metric.better, "servers": {}}
        for server in servers:
            values = _values(runs, server, metric.key)
            if values:
                entry["servers"][server] = summary(list(values.values()))
        if metric.compared:
            found: dict[str, Any] = {}
            for ratio in columns:
                above = _values(runs, ratio.numerator, metric.key)
                below = _values(runs, ratio.denominator, metric.key)
                paired = [above[repeat] / below[repeat] for repeat in above if below.get(repeat)]
                if paired:
                    found[ratio.key] = summary(paired)
            entry["ratios"] = found
        result[metric.key] = entry
    return result


def cross_ratio(
    runs: Sequence[Run], numerator: tuple[str, str], denominator: tuple[str, str]
) -> dict[str, float] | None:
    """One server's figure over another server's (another) figure, per repeat, summarised.

    `numerator` and `denominator` are (server, figure key) pairs; None when
    no repeat has both.
    """
    above = _values(runs, *numerator)
    below = _values(runs, *denominator)
    paired = [above[repeat] / below[repeat] for repeat in above if below.get(repeat)]
    return summary(paired) if paired else None


def warnings(scenario: str, runs: Sequence[Run]) -> list[str]:
    """What makes figures doubtful: failed runs, a load generator near saturation."""
    found = []
    key = _LOADGEN_CPU.get(scenario, "loadgen_cpu")
    for run in runs:
        name = f"{run.server} run {run.repeat + 1}"
        if run.error is not None:
            found.append(f"{name} failed: {run.error}")
            continue
        assert run.figures is not None
        busy = run.figures.get(key)
        if busy is not None and busy >= SATURATION:
            found.append(
                f"{name}: the load generator used {busy:.0%} of a core, near saturation; "
                "its figures may be the client's limit, not the server's"
            )
        log = run.figures.get("server_log")
        if log:
            found.append(f"{name}: the server wrote to stderr, see {log}")
    return found


def _number(value: float, percent: bool = False) -> str:
    if percent:
        return f"{value:.0%}"
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _cell(entry: dict[str, float] | None, *, percent: bool = False, ratio: bool = False) -> str:
    if entry is None:
        return "-"

    def show(value: float) -> str:
        return _ratio(value) if ratio else _number(value, percent)

    median = show(entry["median"])
    if entry["min"] == entry["max"]:
        return median
    return f"{median} ({show(entry['min'])} .. {show(entry['max'])})"


def table(
    scenario: str,
    servers: Sequence[str],
    summaries: dict[str, Any],
    ratios: Sequence[Ratio] | None = None,
) -> str:
    """The summary as a Markdown table: medians (ranges), then the ratios (default: the first's)."""
    columns = first_against_others(servers) if ratios is None else ratios
    header = ["figure", *servers, *(ratio.label for ratio in columns), "better"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for metric in METRICS[scenario]:
        entry = summaries[metric.key]
        if not entry["servers"]:
            continue
        cells = [metric.label]
        cells += [_cell(entry["servers"].get(s), percent=metric.percent) for s in servers]
        for column in columns:
            ratio = entry.get("ratios", {}).get(column.key)
            cells.append(_cell(ratio, ratio=True) if metric.compared else "")
        cells.append(metric.better)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wave_table(servers: Sequence[str], runs: Sequence[Run]) -> str:
    """churn: each server's RSS after each wave (median over repeats, MiB)."""
    per_server: dict[str, list[list[float]]] = {}
    for run in runs:
        if run.figures is not None and "rss_per_wave_mb" in run.figures:
            per_server.setdefault(run.server, []).append(run.figures["rss_per_wave_mb"])
    waves = max((len(series) for lists in per_server.values() for series in lists), default=0)
    if not waves:
        return ""
    header = ["server RSS (MiB)", "start", *(f"wave {n + 1}" for n in range(waves)), "left alone"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for server in servers:
        starts = [
            run.figures["server_rss_start_mb"]
            for run in runs
            if run.server == server and run.figures and "server_rss_start_mb" in run.figures
        ]
        if not starts:
            continue
        cells = [server, f"{statistics.median(starts):,.1f}"]
        for wave in range(waves):
            values = [series[wave] for series in per_server[server] if len(series) > wave]
            cells.append(f"{statistics.median(values):,.1f}" if values else "-")
        settled = [
            run.figures["server_rss_settled_mb"]
            for run in runs
            if run.server == server and run.figures and "server_rss_settled_mb" in run.figures
        ]
        cells.append(f"{statistics.median(settled):,.1f}" if settled else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(document: dict[str, Any], path: Path) -> None:
    """Write a PNG: latency distribution (or memory) and throughput, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario: str = document["scenario"]
    servers: list[str] = document["servers"]
    runs = [Run(**run) for run in document["runs"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    figure.suptitle(document["title"])

    if scenario in ("echo", "fanout"):
        edges = histogram_edges()
        unit = 1e6 if scenario == "echo" else 1e3
        # The x axis spans the buckets that hold anything, not all eight decades.
        lowest, highest = len(edges), 0
        for server in servers:
            counts = [0] * (len(edges) - 1)
            for run in runs:
                if run.server == server and run.figures and "latency_histogram" in run.figures:
                    for index, count in enumerate(run.figures["latency_histogram"]):
                        counts[index] += count
            total = sum(counts)
            if not total:
                continue
            filled = [index for index, count in enumerate(counts) if count]
            lowest, highest = min(lowest, filled[0]), max(highest, filled[-1] + 1)
            cumulative, xs, ys = 0, [], []
            for index, count in enumerate(counts):
                cumulative += count
                xs.append(edges[index + 1] * unit)
                ys.append(cumulative / total)
            left.step(xs, ys, where="post", label=server)
        left.set_xscale("log")
        if lowest < highest:
            left.set_xlim(edges[lowest] * unit, edges[highest] * unit)
        left.set_xlabel("latency (us)" if scenario == "echo" else "delivery latency (ms)")
        left.set_ylabel("fraction of messages at most this late")
        left.set_title("latency distribution (all repeats)")
        left.grid(True, which="both", alpha=0.3)
        left.legend()
    elif scenario == "churn":
        waves = 0
        for index, server in enumerate(servers):
            colour = f"C{index}"
            for run in runs:
                if run.server == server and run.figures and "rss_per_wave_mb" in run.figures:
                    series = [run.figures["server_rss_start_mb"], *run.figures["rss_per_wave_mb"]]
                    waves = max(waves, len(series) - 1)
                    left.plot(range(len(series)), series, marker="o", alpha=0.7, color=colour)
                    settled = run.figures.get("server_rss_settled_mb")
                    if settled is not None:  # the last wave, then left alone
                        left.plot(
                            [len(series) - 1, len(series)],
                            [series[-1], settled],
                            marker="s",
                            linestyle=":",
                            alpha=0.7,
                            color=colour,
                        )
            left.plot([], [], marker="o", color=colour, label=server)
        left.legend()
        ticks = list(range(0, waves + 1, max(1, waves // 5)))
        left.set_xticks([*ticks, waves + 1], [*map(str, ticks), "left\nalone"])
        left.set_xlabel("after wave (0: start)")
        left.set_ylabel("server RSS (MiB)")
        left.set_title("server memory across waves")
        left.grid(True, alpha=0.3)
    elif scenario == "soak":
        for run in runs:
            samples = (run.figures or {}).get("samples", [])
            points = [(s["t"], s["rss_mb"]) for s in samples if "rss_mb" in s]
            if points:
                left.plot(*zip(*points, strict=True), label=f"{run.server} {run.repeat + 1}")
        left.set_xlabel("seconds")
        left.set_ylabel("server RSS (MiB)")
        left.set_title("server memory over the soak")
        left.grid(True, alpha=0.3)
        left.legend()
    else:
        _bars(left, servers, document["summary"]["server_bytes_per_connection"])
        left.set_ylabel("bytes")
        left.set_title("server memory per idle connection")

    key = THROUGHPUT[scenario]
    _bars(right, servers, document["summary"][key])
    right.set_title(document["summary"][key]["label"] + " (median, range)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _bars(axes: Any, servers: Sequence[str], entry: dict[str, Any]) -> None:
    shown = [server for server in servers if server in entry["servers"]]
    medians = [entry["servers"][server]["median"] for server in shown]
    below = [median - entry["servers"][s]["min"] for s, median in zip(shown, medians, strict=True)]
    above = [entry["servers"][s]["max"] - median for s, median in zip(shown, medians, strict=True)]
    axes.bar(shown, medians, yerr=[below, above], capsize=6, color="#4878a8")
    axes.grid(True, axis="y", alpha=0.3)
