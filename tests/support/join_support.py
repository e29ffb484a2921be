"""The ok Reply to a Join, as the hub sends it: the service's payload and the hub's position.

    assert await read_frames(client, 1) == [join_ok(1, "echo:x")]

The hub adds `epoch` (random per history) and `offset` to every map or None
join payload (docs/protocol.md, "Recovery"); `join_ok` matches any epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from unittest.mock import ANY

from hub.protocol import Payload, Reply


def join_ok(
    ref: int, topic: str, payload: Mapping[str, Payload] | None = None, *, offset: int = 0
) -> Reply:
    """The ok join Reply for a service that answered `payload`, at history `offset`."""
    return Reply(ref, topic, True, {"epoch": ANY, "offset": offset, **(payload or {})})
