"""`hub serve` of an application that routes `user:*`, which the hub serves as personal topics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

APP = "from hub import Hub, RoomService\napp = Hub('mine')\napp.route('user:*', RoomService)\n"


def test_routing_user_topics_is_one_line_naming_the_setting_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(APP)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}
    serve = [sys.executable, "-m", "hub", "serve", "mine:app", "--port", "0"]
    result = subprocess.run(
        serve, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "routes 'user:*'" in line and "notifications.personal_topics = false" in line
    # With the setting off, the application's route serves them (it starts; SIGTERM stops it).
    process = subprocess.Popen(
        [*serve, "--set", "notifications.personal_topics=false"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "serving 'mine'" in process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
