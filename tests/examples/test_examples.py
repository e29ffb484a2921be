"""The examples run as a newcomer runs them, and do what their docstrings say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def _run(script: str) -> tuple[str, str]:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout, completed.stderr


def test_supervised_workers_restarts_the_flaky_one_while_the_others_count_on() -> None:
    output, errors = _run("supervised_workers.py")
    # Each crash is logged once by the supervisor, with its traceback: only flaky's.
    crashed = re.findall(r"^(\w+)#\d+ crashed under", errors, re.MULTILINE)
    assert crashed and set(crashed) == {"flaky"}, errors
    # The tree printed names the supervisor as the example does: workers.
    tree = re.findall(r"^  (\w+)#\d+ +(supervisor|worker) ", output, re.MULTILINE)
    assert tree == [
        ("example", "supervisor"),
        ("workers", "supervisor"),
        ("steady", "worker"),
        ("flaky", "worker"),
        ("slow", "worker"),
        ("clock", "worker"),
    ], output
    restarts = re.search(r"restarts per child: (\{.*\})", output)
    assert restarts is not None, output
    counts = eval(restarts.group(1))  # a dict literal the example printed
    assert counts["flaky"] >= 2
    assert len(crashed) >= counts["flaky"]
    assert counts["steady"] == counts["slow"] == counts["clock"] == 0
    # The steady worker's count never went back to 1: it was never restarted.
    steady = [int(n) for n in re.findall(r"tick +steady +count=(\d+)", output)]
    assert steady == list(range(1, len(steady) + 1))
    assert len(steady) >= 5
    # Shutdown in reverse start order: slow, flaky, steady.
    stops = re.findall(r"stopped +(\w+) +\(shutdown\)", output)
    assert stops == ["slow", "flaky", "steady"]
    assert output.rstrip().endswith("done")


def test_echo_example_calls_and_receives_its_push() -> None:
    output, errors = _run("echo.py")
    assert "Traceback" not in errors, errors
    assert "call -> {'event': 'ping', 'payload': {'n': 1}}" in output
    assert "push -> hello" in output


def test_chat_example_is_an_app_hub_serve_can_load() -> None:
    from hub.cli import load_app

    app = load_app("examples.chat:app")
    assert [route.pattern for route in app.routes] == ["room:*", "help:*", "hall:*"]
    presence = app.routes[2].presence
    assert presence and presence.mode == "coalesced" and presence.user_param == "user"


@pytest.mark.parametrize("attribute", ["app", "quick", "bench"])
def test_the_lobby_example_is_an_app_hub_serve_can_load(attribute: str) -> None:
    from hub.cli import load_app

    app = load_app(f"examples.lobby.app:{attribute}")
    assert [route.pattern for route in app.routes] == ["lobby:*", "queue:*", "match:*"]
    assert app.authenticate is not None
    assert [route.path for route in app.http_routes] == ["/lobby/"]


@pytest.mark.parametrize("script", ["echo.py", "supervised_workers.py"])
def test_run_with_a_python_without_triohub_an_example_says_which_to_use(script: str) -> None:
    # The interpreter the virtualenv was made from, without its site-packages
    # (-S): as `python3 examples/echo.py` is on a machine that never installed triohub.
    completed = subprocess.run(
        [sys._base_executable, "-S", str(ROOT / "examples" / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert completed.returncode == 1
    (line,) = completed.stderr.splitlines()
    assert line.startswith("No module named ")
    hint = ": run this with .venv/bin/python (./scripts/demo creates .venv), or activate .venv "
    hint += "first"
    assert line.endswith(hint), line
