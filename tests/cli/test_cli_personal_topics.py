"""`hub serve` of an application that routes `user:*` itself: the hub says it serves none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

APP = "from hub import Hub, RoomService\napp = Hub('mine')\napp.route('user:*', RoomService)\n"


def serve(tmp_path: Path, *flags: str) -> tuple[str, str]:
    """Start `hub serve mine:app`, read its first line, stop it; its first line and stderr."""
    (tmp_path / "mine.py").write_text(APP)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "mine:app", "--port", "0", *flags],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.terminate()
        _out, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    return line, errors


def test_an_application_routing_user_topics_keeps_them_and_is_warned(tmp_path: Path) -> None:
    line, errors = serve(tmp_path)
    assert "serving 'mine'" in line
    assert "routes 'user:*' itself" in errors and "notifications.personal_topics" in errors


def test_with_personal_topics_off_nothing_is_said(tmp_path: Path) -> None:
    line, errors = serve(tmp_path, "--set", "notifications.personal_topics=false")
    assert "serving 'mine'" in line
    assert "personal" not in errors
