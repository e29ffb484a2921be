"""The crash ledger: a topic that keeps crashing is not served for a while."""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs

# A topic whose actor crashes this often within the window is not served
# again until the window has passed (its joins are refused meanwhile), so
# that one buggy topic cannot use up the restart budget every topic shares.
TOPIC_MAX_CRASHES: Final = 3
TOPIC_CRASH_WINDOW_SECONDS: Final = 30.0


@attrs.define(eq=False)
class CrashLedger:
    """When each topic's actor crashed lately, to stop serving one that keeps crashing."""

    max_crashes: int = TOPIC_MAX_CRASHES
    window_seconds: float = TOPIC_CRASH_WINDOW_SECONDS
    _crashes: dict[str, deque[float]] = attrs.Factory(dict)

    def record(self, topic: str, now: float) -> None:
        for name in list(self._crashes):
            self._forget_old(name, now)
        self._crashes.setdefault(topic, deque()).append(now)

    def closed_until(self, topic: str, now: float) -> float | None:
        """When `topic` may be served again, or None if it may be now."""
        self._forget_old(topic, now)
        times = self._crashes.get(topic)
        if times is None or len(times) < self.max_crashes:
            return None
        return times[0] + self.window_seconds

    def _forget_old(self, topic: str, now: float) -> None:
        times = self._crashes.get(topic)
        if times is None:
            return
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._crashes[topic]
