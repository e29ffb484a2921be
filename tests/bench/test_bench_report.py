"""Summaries, ratios per repeat, and the printed table."""

from __future__ import annotations

from hub.bench.report import Ratio, Run, summarise, table, warnings
from hub.bench.stats import histogram_edges, latency_summary, percentile


def test_percentiles_take_the_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0


def test_latency_histogram_counts_every_sample_in_its_decade():
    summary = latency_summary([2e-6, 5e-4, 5e-4, 0.02, 500.0])
    assert sum(summary["histogram"]) == 5
    assert len(summary["histogram"]) == len(histogram_edges()) - 1
    assert summary["p50"] == 5e-4
    assert summary["histogram"][-1] == 1  # beyond the last edge: the last bucket


def _runs() -> list[Run]:
    return [
        Run("hub", 0, {"round_trips_per_s": 100.0, "loadgen_cpu": 0.95, "errors": 0}),
        Run("tw", 0, {"round_trips_per_s": 200.0, "loadgen_cpu": 0.2, "errors": 0}),
        Run("hub", 1, {"round_trips_per_s": 150.0, "loadgen_cpu": 0.3, "errors": 0}),
        Run("tw", 1, {"round_trips_per_s": 150.0, "loadgen_cpu": 0.2, "errors": 0}),
        Run("hub", 2, error="the server exited"),
        Run("tw", 2, {"round_trips_per_s": 400.0, "loadgen_cpu": 0.2, "errors": 0}),
    ]


def test_ratios_pair_the_runs_of_one_repeat():
    summaries = summarise("echo", ["hub", "tw"], _runs())
    rate = summaries["round_trips_per_s"]
    assert rate["servers"]["hub"] == {"median": 125.0, "min": 100.0, "max": 150.0}
    assert rate["servers"]["tw"]["median"] == 200.0
    # Repeat 2 failed for the hub, so only repeats 0 and 1 are paired.
    assert rate["ratios"]["tw"] == {"median": 0.75, "min": 0.5, "max": 1.0}
    assert "ratios" not in summaries["errors"]


def test_table_and_warnings_say_what_happened():
    runs = _runs()
    text = table("echo", ["hub", "tw"], summarise("echo", ["hub", "tw"], runs))
    row = "| round trips/s | 125 (100 .. 150) | 200 (150 .. 400) | 0.75x (0.50x .. 1.00x) |"
    assert row in text
    found = warnings("echo", runs)
    assert any("hub run 1" in line and "saturation" in line for line in found)
    assert any("hub run 3 failed: the server exited" in line for line in found)


def test_ratios_may_pair_any_two_servers_and_name_their_columns():
    runs = [
        Run("one", 0, {"deliveries_per_s": 100.0}),
        Run("redis", 0, {"deliveries_per_s": 80.0}),
        Run("two", 0, {"deliveries_per_s": 170.0}),
        Run("one", 1, {"deliveries_per_s": 100.0}),
        Run("redis", 1, {"deliveries_per_s": 100.0}),
        Run("two", 1, {"deliveries_per_s": 150.0}),
    ]
    servers = ["one", "redis", "two"]
    columns = [Ratio("two / one", "two", "one"), Ratio("redis / one", "redis", "one")]
    summaries = summarise("fanout", servers, runs, columns)
    rate = summaries["deliveries_per_s"]
    assert rate["ratios"]["two / one"] == {"median": 1.6, "min": 1.5, "max": 1.7}
    assert rate["ratios"]["redis / one"] == {"median": 0.9, "min": 0.8, "max": 1.0}
    text = table("fanout", servers, summaries, columns)
    assert "| figure | one | redis | two | two / one | redis / one | better |" in text
    row = "| deliveries/s | 100 | 90 (80 .. 100) | 160 (150 .. 170) | 1.60x (1.50x .. 1.70x) |"
    assert row in text
