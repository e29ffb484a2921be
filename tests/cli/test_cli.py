"""The `hub` command as a newcomer meets it: one-line errors, the version, the log.

Each error a user can cause ends `hub` with exactly one line on stderr,
naming the cause and what to do, no traceback (unless --log-level debug),
and status 2 (usage, settings) or 1 (at run time).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest
import trio
from wire_support import OPCODE_TEXT, client_frame, upgrade_request

from hub import client
from hub.allocator import glibc
from hub.protocol import JSON, Join
from hub.tokens import TokenVerifier

REPO = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub"]

pytestmark = pytest.mark.timeout(60)

# Applications that go wrong in the ways an application can, for `hub serve APP`.
APPS = {
    "broken.py": "raise RuntimeError('the database is down')\n",
    "syntax.py": "def app(:\n",
    "needs.py": "import redis_not_installed_here\n",
    "factory.py": "def make():\n    raise ValueError('no settings for the factory')\n",
    "named.py": "from hub import Hub\nhub = Hub('named')\n",
    "failing.py": (
        "import actors\nfrom hub import Hub\n\n"
        "class Failing(actors.Actor):\n"
        "    async def started(self):\n"
        "        raise ConnectionError('no database')\n\n"
        "app = Hub('failing')\napp.actor('db', Failing)\n"
    ),
}


def environment(**extra: str) -> dict[str, str]:
    """This environment without TRIOHUB_* settings and PYTHONMALLOC, plus `extra`."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRIOHUB_") and name != "PYTHONMALLOC"
    }
    return {**clean, **extra}


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    for name, source in APPS.items():
        (tmp_path / name).write_text(source)
    return tmp_path


def run_hub(cwd: Path, *arguments: str, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUB, *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(**environ),
        timeout=45,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ((), "which command? `hub serve` runs a hub"),
        (("serve", "--prot", "8000"), "unrecognized arguments: --prot; did you mean --port?"),
        (("srve",), "invalid choice: 'srve'"),
        (
            ("serve", "--log-level", "loud"),
            "setting logging.level must be one of debug, info, warning, error, got 'loud' "
            "(from the command line)",
        ),
        (("serve", "--log-format", "xml"), "setting logging.format must be one of text, json"),
        (("serve", "--port", "70000"), "setting server.port must be an integer in 0..65535"),
        (("serve", "--config", "missing.toml"), "cannot read config file 'missing.toml'"),
        (("serve", "--set", "topics"), "--set takes SETTING=VALUE"),
        (("serve", "nosuch:app"), "no such module in"),
        (("serve", "nosuch"), "APP must look like 'module:attribute'"),
        (
            ("serve", "broken:app"),
            "cannot import 'broken' for APP 'broken:app': RuntimeError: the database is down",
        ),
        (("serve", "syntax:app"), "cannot import 'syntax' for APP 'syntax:app': SyntaxError"),
        (("serve", "needs:app"), "No module named 'redis_not_installed_here', which it imports"),
        (("serve", "factory:make"), "calling it raised ValueError: no settings for the factory"),
        (("serve", "named:app"), "has no attribute 'app'; its hub.Hub is named:hub"),
        (("serve", "--host", "192.0.2.1", "--port", "0"), "not an address of this machine"),
        (("top", "ftp://example.com"), "is not a hub's address"),
        (("top", "--tokn", "x"), "did you mean --token?"),
        (
            ("serve", "--set", "auth.required=true"),
            "setting auth.required is true but tokens have no secret to be checked with: "
            "set auth.secret (TRIOHUB_AUTH__SECRET) or auth.secret_file",
        ),
        (
            ("serve", "--set", "auth.secret_file=missing"),
            "setting auth.secret_file: cannot read 'missing'",
        ),
        (("token", "ann"), "no secret to sign with: set auth.secret (TRIOHUB_AUTH__SECRET)"),
    ],
)
def test_a_usage_or_settings_error_is_one_line_and_status_2(
    apps: Path, arguments: Sequence[str], said: str
) -> None:
    result = run_hub(apps, *arguments)
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("hub"), line
    assert said in line, line
    assert result.stdout == ""


def test_hub_token_prints_a_token_of_the_configured_secret(apps: Path) -> None:
    secret = "a-test-secret-that-is-long-enough-0123456789"
    result = run_hub(
        apps,
        "token",
        "ann",
        "--topics",
        "room:*",
        "user:ann=join,history",
        "--ttl",
        "90",
        TRIOHUB_AUTH__SECRET=secret,
    )
    assert result.returncode == 0, result
    identity = TokenVerifier(secret).verify(result.stdout.strip())
    assert identity.user == "ann"
    assert identity.expires_at is not None and identity.expires_at - time.time() <= 90
    assert identity.claims["topics"] == {"room:*": ["*"], "user:ann": ["join", "history"]}
    plain = run_hub(apps, "token", "bob", TRIOHUB_AUTH__SECRET=secret)
    claims = TokenVerifier(secret).verify(plain.stdout.strip()).claims
    assert "topics" not in claims and claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--topics", "room:*=fly"), "unknown action 'fly' for 'room:*'; the actions are join,"),
        (("--ttl", "x"), "argument --ttl: invalid float value: 'x'"),
        (("--ttl", "0"), "a token's ttl must be a number of seconds above 0, got 0.0"),
    ],
)
def test_hub_token_refuses_bad_grants_and_ttls(
    apps: Path, arguments: Sequence[str], said: str
) -> None:
    secret = "a-test-secret-that-is-long-enough-0123456789"
    result = run_hub(apps, "token", "ann", *arguments, TRIOHUB_AUTH__SECRET=secret)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert said in line, line


def test_a_wrong_variable_is_one_line_and_status_2(apps: Path) -> None:
    result = run_hub(apps, "serve", TRIOHUB_PORT="9000")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "hub: unknown variable TRIOHUB_PORT; did you mean TRIOHUB_SERVER__PORT?"
    ]


def test_debug_shows_the_applications_traceback_before_the_line(apps: Path) -> None:
    result = run_hub(apps, "serve", "broken:app", "--log-level", "debug")
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert 'File "' in result.stderr and "broken.py" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hub: cannot import 'broken'")


def test_a_port_in_use_is_one_line_and_status_1(apps: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hub(apps, "serve", "--port", str(port))
        debug = run_hub(apps, "serve", "--port", str(port), "--log-level", "debug")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"hub: cannot listen on 127.0.0.1:{port}: the port is in use (another hub or program "
        "listens there); stop it, or choose another port with --port"
    ]
    assert result.stdout == ""
    assert debug.returncode == 1
    assert "OSError: [Errno 98]" in debug.stderr or "Address already in use" in debug.stderr
    assert debug.stderr.splitlines()[-1] == result.stderr.splitlines()[0]


def test_a_backend_actor_that_cannot_start_is_one_line_and_status_1(apps: Path) -> None:
    result = run_hub(apps, "serve", "failing:app", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "hub: the application's backend actor 'db' failed to start: "
        "ConnectionError('no database'); --log-level debug shows the traceback"
    ]


def test_hub_version_is_the_installed_distributions(tmp_path: Path) -> None:
    result = run_hub(tmp_path, "--version")
    assert result.returncode == 0, result
    version = importlib.metadata.version("triohub")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version == declared
    assert re.fullmatch(
        rf"triohub {re.escape(version)} \(Python \d+\.\d+\.\d+, trio \d+\.\d+\.\d+\)\n",
        result.stdout,
    ), result.stdout


# --- a running `hub serve` ------------------------------------------------------------


class Output(list[str]):
    """A process's output lines as they come, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self._changed = trio.Event()

    def add(self, line: str) -> None:
        self.append(line)
        self._changed.set()
        self._changed = trio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line matching `pattern`, once it has been written."""
        while True:
            for line in self:
                match = re.search(pattern, line)
                if match:
                    return match
            assert not self.closed, f"the process ended without printing {pattern!r}: {self}"
            await self._changed.wait()


@attrs.define
class Serving:
    process: trio.Process
    port: int
    stdout: Output
    stderr: Output

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


async def _collect(stream: trio.abc.ReceiveStream, lines: Output) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            lines.add(line.decode())
    if buffer:
        lines.add(buffer.decode())
    lines.close()


@contextlib.asynccontextmanager
async def serving(cwd: Path, *arguments: str, **environ: str) -> AsyncIterator[Serving]:
    """`hub serve --port 0 ARGUMENTS`, once it prints its URL; killed if still running after."""
    process = await trio.lowlevel.open_process(
        [*HUB, "serve", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=environment(PYTHONUNBUFFERED="1", **environ),
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = Output(), Output()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, process.stdout, stdout)
            nursery.start_soon(_collect, process.stderr, stderr)
            port = int((await stdout.wait_for(r"at http://127\.0\.0\.1:(\d+)/")).group(1))
            yield Serving(process, port, stdout, stderr)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_log_says_each_connection_and_topic_opening_and_closing(tmp_path: Path) -> None:
    with trio.fail_after(45):
        async with serving(tmp_path) as hub:
            async with client.connect(hub.websocket_url) as ann:
                await ann.join("room:logged", {"user": "ann"})
            hub.process.send_signal(signal.SIGTERM)
        assert hub.process.returncode == 0, hub.stderr
    log = "\n".join(hub.stderr)
    connection = re.search(
        r"INFO hub\.connections: connection (c\d+) opened: websocket from 127\.0\.0\.1:\d+", log
    )
    assert connection is not None, log
    ident = connection.group(1)
    closed = rf"INFO hub\.connections: connection {ident} closed after \d+\.\d s: 1000"
    assert re.search(closed, log), log
    assert "INFO hub.topics: topic room:logged started (route room:*)" in log
    assert re.search(r"INFO hub\.topics: topic room:logged stopped after \d+\.\d s: shut down", log)
    assert "Traceback" not in log


async def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    with trio.fail_after(45):
        async with serving(tmp_path, "--log-format", "json") as hub:
            async with client.connect(hub.websocket_url) as ann:
                await ann.join("room:json", {"user": "ann"})
            hub.process.send_signal(signal.SIGTERM)
    entries = [json.loads(line) for line in hub.stderr if line]
    events = {entry.get("event"): entry for entry in entries}
    opened, closed = events["connection_opened"], events["connection_closed"]
    assert (opened["level"], opened["logger"], opened["transport"]) == (
        "info",
        "hub.connections",
        "websocket",
    )
    assert opened["remote"].startswith("127.0.0.1:")
    assert (closed["connection"], closed["code"]) == (opened["connection"], 1000)
    assert isinstance(closed["seconds"], float)
    assert events["topic_started"]["topic"] == "room:json"
    assert events["topic_stopped"]["reason"] == "shut down"


async def test_a_second_ctrl_c_stops_at_once_with_status_130(tmp_path: Path) -> None:
    with trio.fail_after(45):
        # A close that takes long: the client never answers the hub's Close.
        async with serving(tmp_path, "--set", "websocket.close_timeout=30") as hub:
            stream = await trio.open_tcp_stream("127.0.0.1", hub.port)
            await stream.send_all(upgrade_request("/ws", subprotocols=["triohub.v1.json"]))
            assert b" 101 " in await stream.receive_some(4096)
            # Its Join's Reply says the session is running.
            join = JSON.encode(Join(1, "room:x", {"user": "ann"}))
            await stream.send_all(client_frame(OPCODE_TEXT, str(join).encode()))
            assert b"room:x" in await stream.receive_some(4096)
            hub.process.send_signal(signal.SIGINT)
            await hub.stdout.wait_for("shutting down")
            hub.process.send_signal(signal.SIGINT)
            await hub.process.wait()
            await stream.aclose()
    assert hub.process.returncode == 130
    assert "triohub: SIGINT, shutting down (1 connection to close)" in hub.stdout
    lines = [line for line in hub.stderr if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert lines == ["hub: interrupted again: stopped at once, without a graceful shutdown"]


# --- the allocator it serves on (hub.allocator) ---------------------------------------


def _environ_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


@pytest.mark.skipif(not glibc(), reason="glibc's allocator only")
async def test_hub_serve_runs_on_glibcs_allocator_and_trims_after_its_clients_leave(
    tmp_path: Path,
) -> None:
    trims = ("--set", "server.trim_after_closes=3", "--set", "server.trim_delay_seconds=0.5")
    with trio.fail_after(45):
        async with serving(tmp_path, *trims) as hub:
            # The same process (its PID), started again with the variable set.
            assert _environ_of(hub.process.pid).get("PYTHONMALLOC") == "malloc"
            for index in range(3):
                async with client.connect(hub.websocket_url) as member:
                    await member.join(f"room:trimmed-{index}", {"user": f"u{index}"})
            trimmed = await hub.stderr.wait_for(
                r"INFO hub\.trimmer: gave (\d+\.\d) MiB back to the system in [\d.]+ ms, "
                r"after (\d+) connections closed"
            )
            assert int(trimmed.group(2)) == 3
            hub.process.send_signal(signal.SIGTERM)
        assert hub.process.returncode == 0, hub.stderr


@pytest.mark.skipif(not glibc(), reason="glibc's allocator only")
async def test_a_pythonmalloc_of_the_users_is_left_as_it_is(tmp_path: Path) -> None:
    with trio.fail_after(45):
        async with serving(tmp_path, PYTHONMALLOC="pymalloc") as hub:
            assert _environ_of(hub.process.pid).get("PYTHONMALLOC") == "pymalloc"
            hub.process.send_signal(signal.SIGTERM)
        assert hub.process.returncode == 0, hub.stderr
