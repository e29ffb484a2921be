"""The fuzz targets: each module's `test_one_input(data)` runs one input and raises on a finding.

A target asserts the documented outcomes of hostile input and nothing else,
so any exception out of `test_one_input` is a finding. The same functions
run under atheris (`scripts/fuzz`, coverage-guided, for a bounded time) and
in the test suite, which replays the committed corpus (fuzz/corpus/<target>/)
without atheris.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Final

#: Target names, as the corpus directories and `scripts/fuzz` call them.
TARGETS: Final = ("websocket_frames", "http_request", "protocol_machine")


def load(name: str) -> Callable[[bytes], None]:
    """Import target `name` and return its `test_one_input`."""
    if name not in TARGETS:
        raise ValueError(f"unknown fuzz target {name!r}; known: {', '.join(TARGETS)}")
    module = importlib.import_module(f"fuzz.targets.{name}")
    test_one_input: Callable[[bytes], None] = module.test_one_input
    return test_one_input
