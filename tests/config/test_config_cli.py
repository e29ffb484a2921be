"""`hub serve` as a real subprocess: its settings from every source, and refusals with status 2."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

SERVE = [sys.executable, "-m", "hub", "serve"]


def serve(
    tmp_path: Path, *arguments: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `hub serve ARGUMENTS` to its end, with no TRIOHUB_* variables but `environ`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}
    return subprocess.run(
        [*SERVE, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, **(environ or {})},
        timeout=30,
        check=False,
    )


def test_print_config_shows_every_source_in_its_order(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text(
        "[server]\nport = 9001\n"
        "[topics]\nmax_live = 10\nhistory_size = 7\nempty_grace_seconds = 1\n"
        "[websocket]\nwrite_timeout = 3\n"
    )
    result = serve(
        tmp_path,
        "--config",
        "hub.toml",
        "--set",
        "server.port=9003",
        "--set",
        "topics.empty_grace_seconds=2.5",
        "--port",
        "9004",
        "--origin",
        "https://a.example",
        "--origin",
        "https://b.example",
        "--log-level",
        "WARNING",
        "--print-config",
        environ={
            "TRIOHUB_SERVER__PORT": "9002",
            "TRIOHUB_TOPICS__MAX_LIVE": "20",
            "TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS": "2",
        },
    )
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["server"]["port"] == 9004  # a flag beats --set, variables and the file
    assert printed["topics"]["empty_grace_seconds"] == 2.5  # --set beats a variable
    assert printed["topics"]["max_live"] == 20  # a variable beats the file
    assert printed["topics"]["history_size"] == 7  # the file beats the default
    assert printed["websocket"]["write_timeout"] == 3.0
    assert printed["websocket"]["close_timeout"] == 5.0  # the default
    assert printed["server"]["origins"] == ["https://a.example", "https://b.example"]
    assert printed["logging"]["level"] == "warning"
    assert "certfile" not in printed["server"]  # not set


@pytest.mark.parametrize(
    ("arguments", "environ", "error"),
    [
        (
            (),
            {"TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS": "x"},
            "hub: setting topics.empty_grace_seconds must be a number > 0, got 'x' "
            "(from TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS)",
        ),
        (
            ("--config", "bad.toml"),
            {},
            "hub: unknown setting websocket.max_mesage_size (in bad.toml); "
            "did you mean websocket.max_message_size?",
        ),
        (
            ("--port", "many"),
            {},
            "hub: setting server.port must be an integer in 0..65535, got 'many' "
            "(from the command line)",
        ),
        (
            ("--set", "session.max_topics=0"),
            {},
            "hub: setting session.max_topics must be an integer >= 1, got '0' "
            "(from the command line)",
        ),
        (
            ("--set", "topics.max_live"),
            {},
            "hub: --set takes SETTING=VALUE, such as topics.empty_grace_seconds=5; "
            "got 'topics.max_live'",
        ),
        (
            ("--set", "topics.max_lives=5"),
            {},
            "hub: unknown setting topics.max_lives (from the command line); "
            "did you mean topics.max_live?",
        ),
        (
            (),
            {"TRIOHUB_PORT": "9000"},
            "hub: unknown variable TRIOHUB_PORT; did you mean TRIOHUB_SERVER__PORT?",
        ),
        (
            ("--certfile", "missing.pem"),
            {},
            "hub: setting server.certfile: cannot load a certificate and key from 'missing.pem'",
        ),
    ],
)
def test_a_bad_setting_exits_2_naming_it(
    tmp_path: Path, arguments: tuple[str, ...], environ: dict[str, str], error: str
) -> None:
    (tmp_path / "bad.toml").write_text("[websocket]\nmax_mesage_size = 10\n")
    result = serve(tmp_path, "--port", "0", *arguments, environ=environ)
    assert result.returncode == 2, result
    assert result.stderr.startswith(error), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_every_bad_setting_is_told(tmp_path: Path) -> None:
    result = serve(
        tmp_path,
        environ={"TRIOHUB_SERVER__PORT": "-1", "TRIOHUB_TOPICS__MAX_LIVE": "lots"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hub: setting server.port must be an integer in 0..65535, got '-1' "
        "(from TRIOHUB_SERVER__PORT)",
        "hub: setting topics.max_live must be an integer >= 1, got 'lots' "
        "(from TRIOHUB_TOPICS__MAX_LIVE)",
    ]
