"""`hub bench` end to end, briefly: each scenario against a spawned demo hub and both
baselines (--compare), and against a hub given by --url.

Small sizes, about a second of load each. The figures are checked for sense
(present, above zero, nothing lost), never for speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.bench.servers import hub_kind, spawned

BENCH = [sys.executable, "-m", "hub", "bench"]
SERVERS = ["hub", "trio-websocket", "websockets"]

# One `hub bench` process may take this long, in seconds, before the test fails.
BENCH_TIMEOUT = 150


def _bench(*arguments: str, cwd: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [*BENCH, *arguments, "--repeats", "1", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        cwd=cwd,
    )
    assert completed.returncode == 0, completed.stderr
    document: dict[str, Any] = json.loads(completed.stdout)
    assert document["warnings"] == [] or all(
        "saturation" in warning for warning in document["warnings"]
    ), document["warnings"]
    # The table goes to stderr when the JSON takes stdout.
    assert f"## hub bench {document['scenario']}" in completed.stderr
    return document


def _figures(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_server = {}
    for run in document["runs"]:
        assert run["error"] is None, run
        by_server[run["server"]] = run["figures"]
    return by_server


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_idle_holds_every_connection_and_measures_memory(tmp_path):
    document = _bench("idle", "--compare", "-n", "20", "--hold", "0", cwd=tmp_path)
    figures = _figures(document)
    assert list(figures) == SERVERS
    for name, run in figures.items():
        assert run["alive"] == 20, name
        assert run["setup_rate"] > 0, name
        assert run["server_rss_after_mb"] > 0, name
        assert "server_bytes_per_connection" in run, name
        assert "server_cpu_per_setup_us" in run, name
    ratios = document["summary"]["setup_rate"]["ratios"]
    assert set(ratios) == {"trio-websocket", "websockets"}


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_echo_counts_round_trips_and_their_latency(tmp_path):
    document = _bench(
        "echo", "--compare", "-n", "5", "--duration", "1", "--warmup", "0.2", cwd=tmp_path
    )
    for name, run in _figures(document).items():
        assert run["round_trips"] > 0, name
        assert run["round_trips_per_s"] > 0, name
        assert run["errors"] == 0, name
        assert 0 < run["p50_us"] <= run["p99_us"], name
        assert run["server_cpu_per_op_us"] > 0, name
        assert sum(run["latency_histogram"]) == run["round_trips"], name


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_fanout_delivers_everything_to_everyone_and_plots(tmp_path):
    plot = tmp_path / "fanout.png"
    document = _bench(
        "fanout", "--compare", "-n", "20", "--messages", "50", "--plot", str(plot), cwd=tmp_path
    )
    for name, run in _figures(document).items():
        assert run["deliveries"] == 20 * 50, name
        assert run["lost"] == 0, name
        assert run["duplicates"] == 0, name
        assert run["closed_by_server"] == 0, name
        assert run["deliveries_per_s"] > 0, name
        assert 0 < run["p50_ms"] <= run["p99_ms"], name
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_fanout_with_long_polling_subscribers_beside_websocket_ones(tmp_path):
    # Enough deliveries (3,000) that the server's CPU time spans several of
    # the clock's 10 ms ticks: a run of 300 could read as 0.
    document = _bench("fanout", "--longpoll", "-n", "10", "--messages", "300", cwd=tmp_path)
    figures = _figures(document)
    assert list(figures) == ["hub", "hub-longpoll"]
    for name, run in figures.items():
        assert (run["deliveries"], run["lost"], run["duplicates"]) == (3000, 0, 0), name
        assert run["closed_by_server"] == 0, name
        assert run["server_cpu_per_op_us"] > 0, name
    ratios = document["summary"]["server_cpu_per_op_us"]["ratios"]
    assert "hub-longpoll" in ratios


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_fanout_at_a_fixed_rate_loses_nothing(tmp_path):
    document = _bench("fanout", "-n", "20", "--messages", "40", "--rate", "200", cwd=tmp_path)
    run = _figures(document)["hub"]
    assert run["mode"] == "rate"
    assert (run["deliveries"], run["lost"]) == (20 * 40, 0)


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_churn_reads_the_servers_memory_after_each_wave(tmp_path):
    document = _bench(
        "churn", "--compare", "-n", "20", "--waves", "2", "--settle", "0", cwd=tmp_path
    )
    for name, run in _figures(document).items():
        assert run["clients"] == 40, name
        assert len(run["rss_per_wave_mb"]) == 2, name
        assert run["server_rss_start_mb"] > 0, name
        assert run["server_rss_settled_mb"] > 0, name
        assert run["back_within_10pct"] in (0, 1), name


@pytest.mark.timeout(2 * BENCH_TIMEOUT + 30)
def test_presence_counts_pushes_per_change_full_and_coalesced(tmp_path):
    runs = {}
    for room in ("room:bench-presence", "crowd:bench-presence"):
        document = _bench("presence", "-n", "5", "--churners", "30", "--room", room, cwd=tmp_path)
        [figures] = _figures(document).values()
        assert figures["presence_changes"] == 60, room
        assert figures["members_in_sync"] == 5, room
        # Present (its value may round to 0 at the clock's 10 ms ticks on a run this small).
        assert figures["server_cpu_per_change_us"] >= 0, room
        runs[room] = figures["pushes_per_member_per_change"]
    # Full presence pushes every change; the demo's crowds coalesce them.
    assert runs["room:bench-presence"] == pytest.approx(1.0)
    assert runs["crowd:bench-presence"] < 0.5


def test_presence_has_no_baseline_to_compare_with(tmp_path):
    completed = subprocess.run(
        [*BENCH, "presence", "--compare"], capture_output=True, text=True, cwd=tmp_path
    )
    assert completed.returncode == 2
    assert "no baseline has it" in completed.stderr


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_a_running_hub_is_measured_by_url_and_pid(tmp_path):
    with spawned(hub_kind("hub.demo:app"), log_dir=tmp_path) as server:
        document = _bench(
            "idle",
            "--url",
            server.url,
            "--server-pid",
            str(server.pid),
            "-n",
            "20",
            "--topics",
            "3",
            "--hold",
            "0",
            cwd=tmp_path,
        )
    run = _figures(document)["hub"]
    assert run["alive"] == 20
    assert run["server_rss_after_mb"] > 0
    assert "sharing 3 echo topics" in document["settings_line"]


def test_compare_refuses_a_url(tmp_path):
    completed = subprocess.run(
        [*BENCH, "echo", "--compare", "--url", "ws://127.0.0.1:1/ws"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert "--compare starts every server itself" in completed.stderr


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_the_soak_loses_nothing_and_reads_memory_and_tasks(tmp_path, monkeypatch):
    # Rooms stop one second after their last member leaves (the hub inherits
    # this), so the soak's reading after every client left comes soon.
    monkeypatch.setenv("TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS", "1")
    plot = tmp_path / "soak.png"
    document = _bench(
        "soak",
        *("-n", "40", "--topics", "4", "--duration", "4", "--warmup", "1"),
        *("--rate", "40", "--churn-rate", "10", "--plot", str(plot)),
        cwd=tmp_path,
    )
    run = _figures(document)["hub"]
    assert run["messages_sent"] > 0
    assert run["messages_echoed"] == run["messages_sent"]
    assert run["deliveries_expected"] > 0
    assert (run["lost"], run["duplicates"], run["out_of_order"]) == (0, 0, 0)
    assert run["errors"] == 0, run["error_kinds"]
    assert min(run[f"comebacks_{mode}"] for mode in ("leave", "reconnect", "drop")) > 0
    assert run["memberships_checked"] >= 40
    assert run["rss_end_mb"] > 0
    assert run["samples"] and "tasks" in run["samples"][0]
    # Every client gone and the rooms stopped: the tasks they had are gone too.
    assert run["tasks_warm"] > run["tasks_start"] + 40
    assert run["tasks_after"] == run["tasks_start"]
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_soak_has_no_baselines_to_compare(tmp_path):
    completed = subprocess.run(
        [*BENCH, "soak", "--compare"], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert completed.returncode == 2
    assert "no --compare" in completed.stderr


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
@pytest.mark.parametrize("inputs", ["spread", "together"])
def test_lobby_plays_ticking_matches_and_reports_their_lateness(inputs):
    # From the source tree, where the lobby example lives.
    arguments = ("-n", "8", "--match-size", "4", "--duration", "1", "--inputs", inputs)
    document = _bench("lobby", *arguments, cwd=REPO)
    assert document["settings"]["inputs"] == inputs
    assert f"one input per tick each ({inputs})" in document["settings_line"]
    [run] = _figures(document).values()
    assert (run["players"], run["matches"], run["tick_hz"]) == (8, 2, 20)
    assert run["state_deliveries_per_s"] > 0
    assert run["ticks_per_s_per_match"] > 0
    assert run["tick_late_p99_ms"] >= run["tick_late_p50_ms"] >= 0
    assert run["closed_by_server"] == 0
    assert "server_cpu_per_delivery_us" in run


def test_lobby_has_no_baselines_to_compare():
    completed = subprocess.run(
        [*BENCH, "lobby", "--compare"], capture_output=True, text=True, timeout=30, check=False
    )
    assert completed.returncode == 2
    assert "the baselines have no lobbies" in completed.stderr
