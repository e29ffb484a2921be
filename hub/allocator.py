"""The allocator `hub serve` runs on, and asking it to give free memory back (`trim`).

CPython allocates its small objects (most of a connection's: frames, dicts,
strings, tasks) from arenas of 1 MiB of its own (pymalloc), and gives an
arena back to the system only once every block in it is free. After a wave
of clients has left, a few long-lived blocks pin most of the arenas the wave
took: a bare trio server keeps about 20% more than it started with, and
never gives it back (docs/benchmarks.md, "churn").

glibc's allocator can give back any free page, when asked (`malloc_trim`).
So, on Linux with glibc:

- `hub serve` runs on it: the `hub` command starts itself again, before it
  loads anything, with `PYTHONMALLOC=malloc` (`run_on_system_allocator`).
  Set `PYTHONMALLOC` yourself (`pymalloc` keeps CPython's own) and it is
  left alone. Idle memory per connection is about 6% higher on it; CPU per
  message the same within the noise (docs/benchmarks.md).
- `hub.trimmer.Trimmer` asks glibc for the free pages back once enough connections
  have closed (`server.trim_after_closes`) and none has for a while
  (`server.trim_delay_seconds`, longer than presence's grace and an empty
  topic's, so what the departed left in presence and in topics of their
  own is gone too).

Elsewhere (macOS, musl, Windows) both do nothing. An application that runs
the hub inside its own process (`serve_hub`) gets the trims; to get the
allocator, it sets `PYTHONMALLOC=malloc` where it starts Python.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

__all__ = [
    "ALLOCATOR_VARIABLE",
    "can_trim",
    "glibc",
    "resident_bytes",
    "run_on_system_allocator",
    "trim",
]

logger = logging.getLogger(__name__)

#: CPython's own switch of allocators, read once as the interpreter starts.
ALLOCATOR_VARIABLE: Final = "PYTHONMALLOC"

_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def glibc() -> bool:
    """Whether this process runs on glibc (whose allocator can give free pages back)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return False  # no confstr (Windows), or not a name this C library knows (musl)


def run_on_system_allocator(
    argv: Sequence[str],
    *,
    environ: dict[str, str] | None = None,
    execute: Callable[[str, list[str], dict[str, str]], object] = os.execve,
) -> None:
    """Start this process again on glibc's allocator if it is about to serve on pymalloc.

    Called first thing by the `hub` command with its arguments (`argv`, not
    the program's name). It does nothing unless the command is `hub serve`,
    the C library is glibc, `PYTHONMALLOC` is not set (whatever it says, the
    user chose; empty counts as not set, as it does for CPython), Python is
    not in development mode (which has allocators of its own) and reads its
    variables (not `-E` or `-I`, with which it would start again on
    pymalloc all the same). Otherwise it replaces the process (same PID,
    same open files) with the same interpreter, arguments and environment
    plus `PYTHONMALLOC=malloc`; it returns only if that cannot be done.
    """
    environment = dict(os.environ if environ is None else environ)
    # Set and empty is unset to CPython (pymalloc): not a choice of the user's.
    if _command(argv) != "serve" or environment.get(ALLOCATOR_VARIABLE):
        return
    if sys.flags.dev_mode or sys.flags.ignore_environment:
        return
    if not glibc() or not sys.executable or not sys.orig_argv:
        return
    environment[ALLOCATOR_VARIABLE] = "malloc"
    arguments = [sys.executable, *sys.orig_argv[1:]]
    try:
        execute(sys.executable, arguments, environment)
    except OSError as error:
        # Serving on pymalloc is no failure: the memory after a mass leave
        # comes back more slowly, that is all.
        logger.warning("could not start again with %s=malloc (%s)", ALLOCATOR_VARIABLE, error)


def _command(argv: Sequence[str]) -> str | None:
    """The `hub` command `argv` names (its first word that is not an option), if any."""
    return next((argument for argument in argv if not argument.startswith("-")), None)


def resident_bytes() -> int:
    """This process's resident memory (RSS) in bytes, 0 where /proc cannot tell."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None on another C library."""
    if not glibc():
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_TRIM: Final = _malloc_trim()


def can_trim() -> bool:
    """Whether `trim` can give memory back here (glibc)."""
    return _TRIM is not None


def trim() -> bool:
    """Give free memory back to the system; whether glibc gave any (False off glibc).

    First CPython's free lists (tuples, lists, dicts, floats it keeps for
    reuse) are emptied: those objects are scattered over the heap and each
    keeps its page. A full collection empties them; with every object frozen
    first it examines none, so it takes about a millisecond however many
    objects there are (a plain `gc.collect()` took 0.7 s with 10,000
    connections). Objects frozen before (`gc.freeze`: the hub freezes what
    exists once it listens) join the oldest generation with the rest.
    Then glibc's `malloc_trim(0)` gives back every free page: about 2 ms
    after 1,000 connections left (docs/benchmarks.md). Blocks throughout.
    """
    if _TRIM is None:
        return False
    gc.freeze()
    try:
        gc.collect()
    finally:
        gc.unfreeze()
    return bool(_TRIM(0))
