"""Helpers for the browser tests: the hub as a real subprocess, and Chromium's settings."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium; Playwright's own browser download does not work offline."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

STARTUP_SECONDS = 20.0
STOP_SECONDS = 20.0

_URL = re.compile(r"http://127\.0\.0\.1:(\d+)/")


class HubProcess:
    """`python -m hub serve` on 127.0.0.1, started and stopped by a test.

    Its output is collected by two reader threads (so the pipes never fill),
    and quoted when the hub misbehaves.
    """

    def __init__(
        self,
        app: str | None = None,
        arguments: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        #: `module:attribute` of the application, or None for the built-in demo.
        self.app = app
        #: More arguments of `hub serve`, and variables for its environment.
        self.arguments = tuple(arguments)
        self.environ = dict(environ or {})
        self.process: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stopped_by_signal = False

    @property
    def url(self) -> str:
        """The demo page, like http://127.0.0.1:PORT/."""
        assert self.port is not None, "the hub is not started"
        return f"http://127.0.0.1:{self.port}/"

    def start(self, port: int = 0) -> HubProcess:
        """Start the hub on `port` (0: any) and wait for it to print its URL."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.output = []
        self._lines = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub",
                "serve",
                *([self.app] if self.app else []),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *self.arguments,
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.environ},
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, is_stdout in ((self.process.stdout, True), (self.process.stderr, False)):
            threading.Thread(
                target=self._read, args=(stream, is_stdout), daemon=True, name="hub-output"
            ).start()
        self.port = self._wait_for_port()
        if port:
            assert self.port == port, f"asked for port {port}, the hub says {self.url}"
        return self

    def _read(self, stream: object, is_stdout: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.output.append(line.rstrip("\n"))
            if is_stdout:
                self._lines.put(line)
        if is_stdout:
            self._lines.put(None)  # end of output: the process is ending

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"the hub printed no http://127.0.0.1:PORT/ line in {STARTUP_SECONDS} s"
                    + self.describe_output()
                ) from None
            if line is None:
                assert self.process is not None
                code = self.process.wait(timeout=STOP_SECONDS)
                raise AssertionError(
                    f"the hub exited with {code} before printing its URL" + self.describe_output()
                )
            match = _URL.search(line)
            if match:
                return int(match.group(1))

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test froze it
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the hub did not exit within {STOP_SECONDS} s of SIGTERM" + self.describe_output()
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)

    def freeze(self) -> None:
        """SIGSTOP: the hub answers nothing until `thaw` (the kernel still accepts TCP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def describe_output(self) -> str:
        if not self.output:
            return " (it printed nothing)"
        return "; its output:\n" + "\n".join(self.output[-40:])


@contextmanager
def running_hub(
    port: int = 0,
    app: str | None = None,
    arguments: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Iterator[HubProcess]:
    """A hub for the duration of the block, which must exit with status 0 on SIGTERM."""
    hub = HubProcess(app, arguments, environ).start(port)
    try:
        yield hub
    except BaseException:
        if hub.process is not None and hub.process.poll() is None:
            hub.stop()
        raise
    if hub.process is not None and hub.process.poll() is None:
        code = hub.stop()
        assert code == 0, f"the hub exited with {code} on SIGTERM" + hub.describe_output()
