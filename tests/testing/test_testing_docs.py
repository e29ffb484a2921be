"""docs/testing.md's example runs as written, and its minutes take well under a second."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def guide_namespace() -> dict[str, Any]:
    """The guide's Python blocks run in order, in one namespace (the service, then its tests)."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    return namespace


TESTS = sorted(name for name in guide_namespace() if name.startswith("test_"))


def test_the_guide_has_the_idle_timeout_test_and_the_outage_test() -> None:
    assert TESTS == [
        "test_a_player_cut_off_gets_what_was_said_meanwhile",
        "test_a_silent_player_loses_their_seat_after_a_minute",
    ]


@pytest.mark.parametrize("name", TESTS)
def test_each_test_of_the_guide_passes_in_well_under_a_second_of_wall_time(name: str) -> None:
    test: Callable[[trio.testing.MockClock], Awaitable[None]] = guide_namespace()[name]
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def run() -> float:
        started = trio.current_time()
        await test(clock)
        return trio.current_time() - started

    wall_started = time.perf_counter()
    hub_seconds = trio.run(run, clock=clock)
    wall_seconds = time.perf_counter() - wall_started
    assert hub_seconds >= 5  # the hub's clock went through the scenario...
    if "silent" in name:
        assert hub_seconds >= 105  # ...the minute of silence, twice over
    assert wall_seconds < 1.0, (
        f"{name}: {hub_seconds:.0f} s of the hub's time took {wall_seconds:.2f} s"
    )


def test_the_readmes_test_kit_example_passes_against_the_readmes_chat_app() -> None:
    readme = (GUIDE.parents[1] / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    [chat] = [block for block in blocks if "# chat.py" in block]
    [example] = [block for block in blocks if "open_test_hub" in block]
    namespace: dict[str, Any] = {}
    exec(compile(chat + "\n" + example, "README.md", "exec"), namespace)
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(namespace["test_the_room_keeps_its_history"], clock, clock=clock)
