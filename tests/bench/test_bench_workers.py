"""`hub bench fanout --workers N`: the hub in-process, on Redis, and as N workers on Redis.

Small sizes, about a second of load each; the figures are checked for
sense (present, above zero, nothing lost, connections on every worker),
never for speed. Each hub on Redis gets a Valkey of its own (hub.devredis).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from test_bench_smoke import BENCH, BENCH_TIMEOUT, _bench, _figures

from hub.bench.cli import render
from hub.bench.procstat import LISTENING, connections, family
from hub.bench.servers import _read_url, hub_kind, spawned

SERVERS = ["1 in-process", "1 on Redis", "2 on Redis"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.timeout(BENCH_TIMEOUT + 30)
def test_workers_runs_three_hubs_and_counts_every_delivery(tmp_path):
    # 10,000 deliveries: the CPU time (10 ms ticks) of each run spans several.
    subscribers, messages = 50, 200
    document = _bench(
        "fanout",
        "--workers",
        "2",
        "-n",
        str(subscribers),
        "--messages",
        str(messages),
        cwd=tmp_path,
    )
    figures = _figures(document)
    assert list(figures) == SERVERS
    for name, run in figures.items():
        assert run["deliveries"] == subscribers * messages, name
        assert run["lost"] == 0, name
        assert run["duplicates"] == 0, name
        assert run["closed_by_server"] == 0, name
        assert run["deliveries_per_s"] > 0, name
        assert run["server_cpu_per_op_us"] > 0, name
        assert run["load_1m"] >= 0, name
    assert "redis_cpu_per_op_us" not in figures["1 in-process"]
    assert figures["1 on Redis"]["redis_cpu_per_op_us"] >= 0
    several = figures["2 on Redis"]
    # The parent and its two workers, their CPU summed; the subscribers and
    # the publisher spread over both workers by the kernel.
    assert several["server_processes"] == 3
    assert len(several["connections_per_worker"]) == 2
    assert sum(several["connections_per_worker"]) == subscribers + 1
    assert min(several["connections_per_worker"]) > 0
    assert 0.5 <= several["busiest_worker_share"] < 1
    assert 0 < several["busiest_worker_cpu_per_op_us"] <= several["server_cpu_per_op_us"]
    findings = document["workers"]
    assert set(findings["hop_share"]) == {"1 on Redis", "2 on Redis"}
    assert findings["cpu_bound_gain"]["median"] > 0
    ratios = document["summary"]["deliveries_per_s"]["ratios"]
    assert set(ratios) == {
        "2 on Redis / 1 in-process",
        "2 on Redis / 1 on Redis",
        "1 on Redis / 1 in-process",
    }
    assert document["machine"]["load_average_at_end"]
    assert "Redis hop's share of a delivery's server CPU" in render(document)


@pytest.mark.timeout(60)
def test_a_hub_of_workers_is_ready_once_every_worker_listens(tmp_path):
    kind = hub_kind("hub.demo:app", name="two", workers=2, redis=True)
    with spawned(kind, log_dir=tmp_path) as server:
        assert server.redis is not None and server.redis.pid is not None
        redis_pid = server.redis.pid
        port = urllib.parse.urlsplit(server.url).port
        assert port is not None and port != 0
        processes = family(server.pid)
        assert len(processes) == 3
        # Not only the first worker: each one has its listening socket already.
        assert connections(processes[1:], port, LISTENING) == {pid: 1 for pid in processes[1:]}
    assert not any(_alive(pid) for pid in [*processes, redis_pid])


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["echo", "--workers", "2"], "--workers goes with the fanout scenario"),
        (["fanout", "--workers", "1"], "at least 2"),
        (["fanout", "--workers", "2", "--compare"], "no --compare"),
    ],
)
def test_workers_refuses_what_it_cannot_run(tmp_path, arguments, expected):
    completed = subprocess.run(
        [*BENCH, *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert expected in completed.stderr


def test_two_workers_lines_run_together_still_count_as_two():
    # Two workers share the pipe: one's line can come inside the other's,
    # before its newline (seen once in the suite: "no URL within 30 s").
    line = "triohub: serving at http://127.0.0.1:1/ (WebSocket ws://127.0.0.1:1/ws); Ctrl+C to stop"
    script = f"import sys; sys.stdout.write({line!r} + {line!r} + '\\n\\n')"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert _read_url(process, 30, count=2) == "ws://127.0.0.1:1/ws"
    finally:
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
