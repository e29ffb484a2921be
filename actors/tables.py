"""Tables that give their memory back: `compacted`, for a dict after a mass removal.

A dict never shrinks its table when entries are deleted: after a thousand
clients leave a room at once, the room's member table, the supervisor's
children and every other table they were in keep the size of the peak until
they are emptied by `clear()` or replaced. A long-lived owner calls
`compacted` after removing, and keeps what it returns in place of the old
table; nothing else may hold the old one.
"""

from __future__ import annotations

import sys
from typing import Final, TypeVar

__all__ = ["compacted"]

_K = TypeVar("_K")
_V = TypeVar("_V")

# Tables smaller than this (about 100 entries) are left as they are.
_COMPACT_ABOVE_BYTES: Final = 4096

# A dict's table takes 16 to 36 bytes per slot it was sized for; one that
# takes more than this per entry held is at most about an eighth full.
_SPARSE_BYTES_PER_ENTRY: Final = 192


def compacted(table: dict[_K, _V]) -> dict[_K, _V]:
    """`table`, or a copy sized to what it holds if it is far larger than that.

    The check costs a fraction of a microsecond; the copy is linear in the
    entries left, which happens once each time the table shrinks to an
    eighth, so it is amortised over the removals that made it so.
    """
    size = sys.getsizeof(table)
    if size > _COMPACT_ABOVE_BYTES and len(table) * _SPARSE_BYTES_PER_ENTRY < size:
        return dict(table)
    return table
