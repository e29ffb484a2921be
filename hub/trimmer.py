"""Giving memory back after a mass leave: `Trimmer` (the why is in `hub.allocator`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import attrs
import trio

from hub.allocator import can_trim, resident_bytes, trim

__all__ = ["Trimmer"]

logger = logging.getLogger(__name__)

# A trim that has waited this many delays for the closes to stop runs anyway:
# under a steady churn there is never a quiet moment.
_MOST_DELAYS: Final = 6


@attrs.define(eq=False)
class Trimmer:
    """Trims the heap once `after_closes` things were freed and then nothing for `delay` s.

    What counts: connections that ended (the hub calls `closed()` for
    each) and topic histories dropped once their retention was over (the
    in-process backplane calls `histories_dropped`). The hub runs `serve`
    in its nursery. A steady churn with no pause is trimmed anyway, at most
    `_MOST_DELAYS` delays after the count was reached. With `after_closes`
    0, or off glibc, it never trims. `on_trim(freed_bytes, seconds)` hears
    of each trim (the metrics).
    """

    after_closes: int
    delay: float
    on_trim: Callable[[int, float], None] | None = None
    #: Connections closed since the last trim.
    closes: int = 0
    #: Topic histories dropped since the last trim.
    histories: int = 0
    #: Trims done.
    trims: int = 0
    _enough: trio.Event = attrs.field(factory=trio.Event)
    # While a trim waits for the closes to pause: its wait, whose deadline
    # each close moves on, and the latest the deadline may be moved to.
    _pause: trio.CancelScope | None = None
    _latest: float = 0.0

    @property
    def enabled(self) -> bool:
        """Whether it ever trims."""
        return self.after_closes > 0 and can_trim()

    def closed(self) -> None:
        """Count a connection that ended (and put off a trim that is waiting for a pause)."""
        self.closes += 1
        self._freed()

    def histories_dropped(self, count: int) -> None:
        """Count `count` topic histories dropped (as `closed` counts a connection)."""
        self.histories += count
        self._freed()

    def _freed(self) -> None:
        if self._pause is not None:
            self._pause.deadline = min(trio.current_time() + self.delay, self._latest)
        elif self.closes + self.histories >= self.after_closes:
            self._enough.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Trim whenever enough connections have closed and the closes have paused; forever."""
        task_status.started()
        if not self.enabled:
            await trio.sleep_forever()
        while True:
            await self._enough.wait()
            now = trio.current_time()
            self._latest = now + self.delay * _MOST_DELAYS
            with trio.CancelScope(deadline=now + self.delay) as self._pause:
                await trio.sleep_forever()
            self._pause = None
            self.trim_now()

    def trim_now(self) -> None:
        """Trim at once, and count from zero again."""
        closes, self.closes = self.closes, 0
        histories, self.histories = self.histories, 0
        self._enough = trio.Event()
        before = resident_bytes()
        started = time.perf_counter()
        trim()
        seconds = time.perf_counter() - started
        self.trims += 1
        freed = max(0, before - resident_bytes())
        logger.info(
            "gave %.1f MiB back to the system in %.1f ms, after %d connections closed%s",
            freed / 2**20,
            seconds * 1e3,
            closes,
            f" and {histories} topic histories dropped" if histories else "",
        )
        if self.on_trim is not None:
            self.on_trim(freed, seconds)
