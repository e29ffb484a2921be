"""./scripts/demo: installed once, then it starts without installing, and says where `hub` is."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAMPS = REPO / ".venv" / ".triohub-installed"

pytestmark = pytest.mark.timeout(120)


def environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}


def test_an_unchanged_checkout_starts_the_demo_at_once_without_installing() -> None:
    # Whatever the state of .venv, this leaves triohub installed and stamped.
    first = subprocess.run(
        ["./scripts/demo", "--print-config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=100,
        check=False,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    stamped = STAMPS.stat().st_mtime_ns

    process = subprocess.Popen(
        ["./scripts/demo", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert process.stdout is not None
        said = process.stdout.readline()
        serving = process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors
    assert said == (
        "demo: the hub command is .venv/bin/hub (or run '. .venv/bin/activate' once, then 'hub')\n"
    )
    assert serving.startswith("triohub: serving 'triohub demo' at http://127.0.0.1:"), serving
    # Started at once: nothing was installed (no new stamp, no pip output below).
    # How fast is not asserted: a test measures no speed on a shared machine.
    assert STAMPS.stat().st_mtime_ns == stamped
    output = said + serving + rest + errors
    for alarming in ("installing", "Editable", "!!", "WARNING", "Traceback"):
        assert alarming not in output, output
