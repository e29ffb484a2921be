"""The in-process backplane drops a released history when its retention is over, on time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hub.backplane import LocalBackplane

RETENTION = 60.0


class Dropped:
    """`on_expired`: when histories were dropped (trio's clock) and how many."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []
        self._came = trio.Event()

    def __call__(self, count: int) -> None:
        self.calls.append((trio.current_time(), count))
        self._came.set()
        self._came = trio.Event()

    async def next(self) -> tuple[float, int]:
        with trio.fail_after(RETENTION * 2):  # trio's clock: at once under the autojump clock
            await self._came.wait()
        return self.calls[-1]


async def _serving(nursery: trio.Nursery) -> tuple[LocalBackplane, Dropped]:
    dropped = Dropped()
    backplane = LocalBackplane(retention_seconds=RETENTION, on_expired=dropped)
    await nursery.start(backplane.serve_expiry)
    return backplane, dropped


async def test_a_released_history_is_dropped_when_its_retention_is_over_unasked(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backplane, dropped = await _serving(nursery)
    backplane.claim("room:a")
    await trio.sleep(5)
    backplane.claim("room:b")
    backplane.release("room:a")
    released = trio.current_time()
    await trio.sleep(1)
    backplane.release("room:b")
    # Nothing touches the backplane meanwhile: the expiry comes by itself.
    assert await dropped.next() == pytest.approx((released + RETENTION, 1))
    assert await dropped.next() == pytest.approx((released + 1 + RETENTION, 1))
    assert backplane.topics_kept == 0


async def test_a_history_claimed_again_within_its_retention_is_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backplane, dropped = await _serving(nursery)
    backplane.claim("room:a")
    backplane.release("room:a")
    await trio.sleep(RETENTION / 2)
    backplane.claim("room:a")  # its topic started again
    await trio.sleep(RETENTION * 10)
    assert dropped.calls == []
    assert backplane.topics_kept == 1
    backplane.release("room:a")
    released = trio.current_time()
    assert await dropped.next() == pytest.approx((released + RETENTION, 1))
