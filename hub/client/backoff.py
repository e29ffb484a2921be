"""Reconnect delays: exponential backoff with full jitter.

Attempt n (from 0) waits a uniformly random time in [0, min(cap, base * 2**n)]
("full jitter", as AWS's architecture blog measured it: clients cut off
together do not come back together). The randomness is a parameter, so
tests choose it, and trio's clock (the autojump clock in tests) does the
waiting.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

import attrs

__all__ = ["DEFAULT_BACKOFF_BASE", "DEFAULT_BACKOFF_CAP", "Backoff"]

# The first reconnect waits up to this long, in seconds; it doubles per failure...
DEFAULT_BACKOFF_BASE: Final = 0.5
# ...up to this.
DEFAULT_BACKOFF_CAP: Final = 30.0


@attrs.define
class Backoff:
    """The delays before successive attempts; `reset()` once one succeeds."""

    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP
    #: Returns a number in [0, 1): `random.random` unless a test passes its own.
    random: Callable[[], float] = random.random
    attempt: int = 0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base}, cap={self.cap}")

    def ceiling(self) -> float:
        """The longest the next delay may be."""
        # The exponent is bounded: 2.0**attempt overflows a float after ~1000 failures.
        growth: float = 2.0 ** min(self.attempt, 64)
        return min(self.cap, self.base * growth)

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        delay = float(self.random()) * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
