"""Backplanes: how topics' events and history cross processes (see `base`).

- `base`: the `Backplane` interface and the values that cross it (`Record`,
  `Position`, `History`), and `Recovery`, what a rejoining client missed;
- `local`: `LocalBackplane`, in process, the default: nothing to install.

- `redis`: `RedisBackplane`, several workers and machines on one Redis:
  the same interface, the same test suite (tests/backplane), and what the
  cluster needs (`hub.cluster`).
"""

from hub.backplane.base import (
    MAX_HISTORY_READ,
    Backplane,
    BackplaneStats,
    Deliver,
    History,
    Position,
    Record,
    Recovery,
    recovery_for,
)
from hub.backplane.local import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_RETENTION_SECONDS,
    LocalBackplane,
    new_epoch,
)

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_RETENTION_SECONDS",
    "MAX_HISTORY_READ",
    "Backplane",
    "BackplaneStats",
    "Deliver",
    "History",
    "LocalBackplane",
    "Position",
    "Record",
    "Recovery",
    "new_epoch",
    "recovery_for",
]
