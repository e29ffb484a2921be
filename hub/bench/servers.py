"""The servers a benchmark runs against: the hub (any app) and the two baselines.

Each run starts its server afresh as a process of its own (so that its CPU
time and memory are its own, and one run's leftovers do not weigh on the
next), waits for the line that gives its WebSocket URL, and stops it with
SIGTERM afterwards. Its stderr goes to a log file, kept when it is not empty.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs

from hub.bench.spec import Dialect

# How long a server may take to print its URL, and to stop, in seconds.
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 30.0

# The startup lines: `hub serve` prints "... (WebSocket ws://127.0.0.1:P/ws); ..."
# and the baselines "listening on ws://127.0.0.1:P".
_URL: Final = re.compile(r"ws://[^\s)]+")

#: The baselines' scripts, in the source tree beside the package.
DEFAULT_BASELINES: Final = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines"

BASELINE_SCRIPTS: Final = {
    "trio-websocket": "trio_websocket_server.py",
    "websockets": "websockets_server.py",
}


class ServerStartError(Exception):
    """A server did not start (it exited, or printed no URL in time)."""


@attrs.frozen
class ServerKind:
    """What to start, and how to talk to it."""

    #: Short name for tables: "hub", "trio-websocket", "websockets".
    name: str
    #: Longer name for the report's header, such as the hub's app.
    description: str
    dialect: Dialect
    command: tuple[str, ...]


@attrs.frozen
class RunningServer:
    url: str
    pid: int
    log: Path
    _process: subprocess.Popen[bytes] = attrs.field(eq=False, repr=False)

    def running(self) -> bool:
        """Whether the server has not exited yet."""
        return self._process.poll() is None


# A benchmark measures what the hub can carry: its limits against hostile
# clients (docs/security.md) are lifted, as the baselines have none. Each
# load-generating connection sends far more than a client is allowed to,
# and thousands connect at once.
_NO_LIMITS: Final = (
    "session.messages_per_second=1e9",
    "session.bytes_per_second=1e12",
    "session.max_calls_in_flight=1000000",
    "limits.max_connections=0",
    "limits.max_handshakes_per_second=0",
    # The benchmarks read the server's task count and connections there.
    "admin.metrics=true",
)


def hub_kind(app: str) -> ServerKind:
    """`hub serve APP` on a free port of 127.0.0.1, its limits on clients lifted."""
    command = (sys.executable, "-m", "hub", "serve", app, "--host", "127.0.0.1", "--port", "0")
    settings = tuple(part for setting in _NO_LIMITS for part in ("--set", setting))
    return ServerKind(
        name="hub",
        description=f"hub serve {app}",
        dialect="hub",
        command=(*command, *settings, "--log-level", "warning"),
    )


def baseline_kinds(directory: Path = DEFAULT_BASELINES) -> list[ServerKind]:
    """The trio-websocket and websockets baselines, from their scripts in `directory`.

    Raises ServerStartError if a script is missing (say, when the package is
    installed without its source tree: pass --baselines DIR).
    """
    kinds = []
    for name, script in BASELINE_SCRIPTS.items():
        path = directory / script
        if not path.is_file():
            raise ServerStartError(f"no baseline server {str(path)!r} (see --baselines)")
        kinds.append(
            ServerKind(
                name=name,
                description=f"{name} baseline ({path.name})",
                dialect="plain",
                command=(sys.executable, str(path), "--port", "0"),
            )
        )
    return kinds


def _read_url(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the server's stdout until a ws:// URL; raise ServerStartError if none comes."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            match = _URL.search(seen.decode(errors="replace"))
            if match is not None and b"\n" in seen:
                return match.group(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise ServerStartError(f"no URL within {timeout:g} s; it printed {seen!r}")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise ServerStartError(f"it exited ({process.wait()}); it printed {seen!r}")
            seen += chunk


@contextmanager
def spawned(kind: ServerKind, *, log_dir: Path | None = None) -> Iterator[RunningServer]:
    """Start `kind`'s server; yield where it listens; stop it (SIGTERM, then SIGKILL).

    Its stderr goes to a file in `log_dir` (a temporary directory if None),
    which is deleted if the server wrote nothing there.
    """
    directory = Path(log_dir or tempfile.gettempdir())
    log = Path(tempfile.mkstemp(prefix=f"hub-bench-{kind.name}-", suffix=".log", dir=directory)[1])
    with log.open("wb") as log_file:
        process = subprocess.Popen(kind.command, stdout=subprocess.PIPE, stderr=log_file)
    try:
        try:
            url = _read_url(process, START_TIMEOUT_SECONDS)
        except ServerStartError as error:
            raise ServerStartError(
                f"{kind.description}: {error}; its log: {log.read_text()[-2000:]}"
            ) from None
        yield RunningServer(url=url, pid=process.pid, log=log, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if log.stat().st_size == 0:
            log.unlink()
