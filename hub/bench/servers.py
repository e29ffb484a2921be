"""The servers a benchmark runs against: the hub (any app) and the two baselines.

Each run starts its server afresh as a process of its own (so that its CPU
time and memory are its own, and one run's leftovers do not weigh on the
next), waits for the line that gives its WebSocket URL, and stops it with
SIGTERM afterwards. Its stderr goes to a log file, kept when it is not empty.

A hub on Redis (`ServerKind.redis`) gets a Valkey server of its own for the
run (`hub.devredis`), started before it and stopped after it. A hub of N
workers (`hub serve --workers N`) is given a free port (it refuses port 0:
its workers must share one), and is ready once every worker has printed its
URL, each after it listens.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

import attrs

from hub.bench.spec import Dialect
from hub.devredis import DevRedisError, ValkeyServer, free_port, running_valkey

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
    #: The command, without its port (`--port P` is added at the start).
    command: tuple[str, ...]
    #: The hub's worker processes (`--workers`): above 1, a fixed free port.
    workers: int = 1
    #: Whether the hub runs on a Redis (`--redis URL`) started for the run.
    redis: bool = False

    def command_for(self, port: int, redis_url: str | None) -> list[str]:
        """The command line that starts this server on `port` (on `redis_url`, if redis)."""
        command = [*self.command, "--port", str(port)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        if redis_url is not None:
            command += ["--redis", redis_url]
        return command


@attrs.frozen
class RunningServer:
    url: str
    #: The server's process (with --workers: the parent of the workers).
    pid: int
    log: Path
    _process: subprocess.Popen[bytes] = attrs.field(eq=False, repr=False)
    #: The Redis server started for this run, if any.
    redis: ValkeyServer | None = attrs.field(default=None, eq=False)

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


def hub_kind(app: str, *, name: str = "hub", workers: int = 1, redis: bool = False) -> ServerKind:
    """`hub serve APP` on a free port of 127.0.0.1, its limits on clients lifted.

    With `workers` above 1, `--workers N`; with `redis`, on a Redis started
    for each run (`--redis URL`).
    """
    command = (sys.executable, "-m", "hub", "serve", app, "--host", "127.0.0.1")
    settings = tuple(part for setting in _NO_LIMITS for part in ("--set", setting))
    description = f"hub serve {app}"
    if workers > 1:
        description += f" --workers {workers}"
    if redis:
        description += " --redis (a Valkey of its own)"
    return ServerKind(
        name=name,
        description=description,
        dialect="hub",
        command=(*command, *settings, "--log-level", "warning"),
        workers=workers,
        redis=redis,
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
                command=(sys.executable, str(path)),
            )
        )
    return kinds


def _read_url(process: subprocess.Popen[bytes], timeout: float, count: int = 1) -> str:
    """Read the server's stdout until `count` whole lines with a ws:// URL; return the first.

    Each worker of `hub serve --workers N` prints its line once it listens,
    so with `count` N every worker is ready. Raises ServerStartError if they
    do not all come within `timeout` seconds, or the server exits.
    """
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            lines = seen.decode(errors="replace").split("\n")[:-1]  # whole lines only
            # Workers share the pipe: one's line can land inside another's
            # before its newline does, so count every URL, not one per line.
            urls = [match.group(0) for line in lines for match in _URL.finditer(line)]
            if len(urls) >= count:
                return urls[0]
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
    which is deleted if the server wrote nothing there. A kind on Redis gets
    a Valkey server of its own, stopped after the server.
    """
    with ExitStack() as stack:
        redis = None
        if kind.redis:
            try:
                redis = stack.enter_context(running_valkey())
            except DevRedisError as error:
                raise ServerStartError(f"{kind.description}: {error}") from None
        # Port 0 lets the system choose, but the workers of one hub must share
        # a port: they get one that was free a moment ago.
        port = free_port() if kind.workers > 1 else 0
        command = kind.command_for(port, redis.url if redis else None)
        yield stack.enter_context(_spawned_process(kind, command, redis, log_dir))


@contextmanager
def _spawned_process(
    kind: ServerKind, command: list[str], redis: ValkeyServer | None, log_dir: Path | None
) -> Iterator[RunningServer]:
    directory = Path(log_dir or tempfile.gettempdir())
    name = re.sub(r"[^\w.-]+", "-", kind.name)
    log = Path(tempfile.mkstemp(prefix=f"hub-bench-{name}-", suffix=".log", dir=directory)[1])
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file)
    try:
        try:
            url = _read_url(process, START_TIMEOUT_SECONDS, kind.workers)
        except ServerStartError as error:
            raise ServerStartError(
                f"{kind.description}: {error}; its log: {log.read_text()[-2000:]}"
            ) from None
        yield RunningServer(url=url, pid=process.pid, log=log, process=process, redis=redis)
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
