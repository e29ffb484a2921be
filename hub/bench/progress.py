"""A progress bar on stderr: one line redrawn in place on a terminal, phases otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Final, TextIO

# Redraws at most this often, in seconds, so that drawing costs nothing.
REDRAW_SECONDS: Final = 0.1

_BAR_WIDTH: Final = 24


class ProgressBar:
    """Shows which run is under way, its phase, and how far the phase has come."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._run = ""
        self._phase = ""
        self._drawn = 0.0
        self._width = 0

    def start_run(self, run: str) -> None:
        """Begin a new run, named `run` ("hub 2/3")."""
        self._run = run
        self._phase = ""
        self.update("starting the server", 0, 1)

    def update(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        new_phase = phase != self._phase
        if not new_phase and done < total and now - self._drawn < REDRAW_SECONDS:
            return
        self._drawn = now
        self._phase = phase
        if not self._tty:
            if new_phase:
                self._stream.write(f"{self._run}: {phase}\n")
                self._stream.flush()
            return
        fraction = min(1.0, done / total) if total else 1.0
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        line = f"{self._run}: [{bar}] {fraction:4.0%} {phase} {done:,}/{total:,}"
        line = line[: shutil.get_terminal_size().columns - 1]
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()

    def note(self, text: str) -> None:
        """Print `text` on a line of its own (a warning, a finished run)."""
        self.clear()
        self._stream.write(text + "\n")
        self._stream.flush()

    def clear(self) -> None:
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._width = 0
