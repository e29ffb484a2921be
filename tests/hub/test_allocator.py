"""`hub serve` starts itself again on glibc's allocator; `trim` gives free pages back.

The process-level part (a real `hub serve` on it, the trim it logs) is in
tests/cli/test_cli.py.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import textwrap
import weakref

import pytest

from hub.allocator import ALLOCATOR_VARIABLE, can_trim, glibc, run_on_system_allocator, trim

needs_glibc = pytest.mark.skipif(not glibc(), reason="glibc's allocator only")


class Exec:
    """Stands in for os.execve: what the process would have become."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, arguments: list[str], environment: dict[str, str]) -> None:
        self.calls.append((path, arguments, environment))


@needs_glibc
def test_hub_serve_starts_again_with_pythonmalloc_malloc_and_nothing_else_changed() -> None:
    execute = Exec()
    environ = {"PATH": "/usr/bin", "TRIOHUB_SERVER__PORT": "9000"}
    run_on_system_allocator(["serve", "my.app:hub"], environ=environ, execute=execute)
    [(path, arguments, environment)] = execute.calls
    assert path == sys.executable
    assert arguments == [sys.executable, *sys.orig_argv[1:]]
    assert environment == {**environ, ALLOCATOR_VARIABLE: "malloc"}


@needs_glibc
def test_an_empty_pythonmalloc_is_no_choice_and_it_starts_again_all_the_same() -> None:
    # CPython reads PYTHONMALLOC= as unset: it would serve on pymalloc.
    execute = Exec()
    run_on_system_allocator(["serve"], environ={ALLOCATOR_VARIABLE: ""}, execute=execute)
    [(_, _, environment)] = execute.calls
    assert environment[ALLOCATOR_VARIABLE] == "malloc"


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["bench", "echo"], {}),  # only serve
        (["token", "ann"], {}),
        (["--version"], {}),
        ([], {}),
        (["serve"], {ALLOCATOR_VARIABLE: "pymalloc"}),  # the user's choice
        (["serve"], {ALLOCATOR_VARIABLE: "malloc"}),  # already on it (no loop)
    ],
)
def test_anything_else_is_left_as_it_is(argv: list[str], environ: dict[str, str]) -> None:
    execute = Exec()
    run_on_system_allocator(argv, environ=environ, execute=execute)
    assert execute.calls == []


@needs_glibc
def test_a_failed_start_serves_on_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(path: str, arguments: list[str], environment: dict[str, str]) -> None:
        raise PermissionError("not allowed here")

    run_on_system_allocator(["serve"], environ={}, execute=refuse)
    assert "could not start again with PYTHONMALLOC=malloc (not allowed here)" in caplog.text


# Starts `run_on_system_allocator` for `hub serve` and says whether it would
# have started the process again.
_WOULD_START_AGAIN = textwrap.dedent(
    """
    from hub.allocator import run_on_system_allocator
    calls = []
    run_on_system_allocator(["serve"], execute=lambda *call: calls.append(call))
    print(len(calls))
    """
)


@needs_glibc
@pytest.mark.parametrize("flags", [["-E"], ["-I"], ["-X", "dev"]])
def test_a_python_that_ignores_pythonmalloc_or_in_dev_mode_is_not_started_again(
    flags: list[str],
) -> None:
    # With -E or -I it would start again on pymalloc all the same, the
    # variable set (and its --help and environment saying it runs on
    # glibc's allocator); development mode has allocators of its own.
    completed = subprocess.run(
        [sys.executable, *flags, "-c", _WOULD_START_AGAIN],
        env=_clean_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert completed.stdout.split() == ["0"], completed.stderr


# A program that frees 64 MiB of small blocks below one it keeps (so that
# glibc cannot give them back by shrinking its heap), and prints its RSS
# before and after `trim`.
_FREED_BELOW_A_KEPT_BLOCK = textwrap.dedent(
    """
    from hub.allocator import resident_bytes, trim
    blocks = [bytes(1000) for _ in range(64 * 1024)]
    kept = bytes(1000)
    del blocks
    before = resident_bytes()
    gave = trim()
    print(before, resident_bytes(), gave)
    """
)


@pytest.mark.skipif(not can_trim(), reason="malloc_trim is glibc's")
def test_trim_gives_freed_pages_back_on_glibcs_allocator() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _FREED_BELOW_A_KEPT_BLOCK],
        env={**_clean_environment(), ALLOCATOR_VARIABLE: "malloc"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    before, after, gave = completed.stdout.split()
    assert gave == "True"
    assert int(before) - int(after) > 32 * 2**20, completed.stdout


def _clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != ALLOCATOR_VARIABLE}


def _free_listed(capfd: pytest.CaptureFixture[str]) -> dict[str, int]:
    """How many 2-tuples and dicts CPython keeps for reuse (sys._debugmallocstats, on fd 2)."""
    capfd.readouterr()
    sys._debugmallocstats()
    stats = capfd.readouterr().err
    counts = {
        kind: re.search(rf"(\d+) free {kind}", stats)
        for kind in ("2-sized PyTupleObjects", "PyDictObjects")
    }
    assert all(counts.values()), stats
    return {kind: int(match.group(1)) for kind, match in counts.items() if match}


@pytest.mark.skipif(not can_trim(), reason="malloc_trim is glibc's")
def test_trim_empties_cpythons_free_lists_first(capfd: pytest.CaptureFixture[str]) -> None:
    # Each kept object would keep its page: glibc could not give it back.
    pairs = [(index, index) for index in range(10_000)]
    tables = [{"index": index} for index in range(10_000)]
    del pairs, tables
    full = _free_listed(capfd)
    assert min(full.values()) >= 50, full
    trim()
    emptied = _free_listed(capfd)
    assert all(emptied[kind] < full[kind] // 10 for kind in full), (full, emptied)


@pytest.mark.skipif(not can_trim(), reason="malloc_trim is glibc's")
def test_what_lives_through_a_trim_is_collected_once_it_is_garbage() -> None:
    # trim() freezes every object for its collection: it must thaw them all,
    # or a cycle alive at a trim would never be collected (a leak).
    cycle = _Cycle()
    cycle.itself = cycle
    alive = weakref.ref(cycle)
    try:
        trim()
        del cycle
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()  # whatever a broken trim left frozen


class _Cycle:
    itself: _Cycle | None = None
