"""The leases of the topics this node runs: one owner per topic in the cluster.

A topic's lease is a key in the backplane naming the node that runs it,
taken when the topic starts here (`acquire`), renewed with every heartbeat,
all in one round trip (`renew`), and given back when its actor ends
(`release`). A node that dies stops renewing: its leases expire after
`lease_seconds` and the next join anywhere takes the topic over.
"""

from __future__ import annotations

import attrs

from hub.backplane import Backplane

__all__ = ["Leases"]


@attrs.define(eq=False)
class Leases:
    """The leases this node holds, with how many of its topic actors use each.

    Counted: a topic whose actor is still stopping here while a join starts
    a new one holds its lease for both, and the first to end must not give it back.
    """

    backplane: Backplane
    lease_seconds: float
    _held: dict[str, int] = attrs.Factory(dict)

    def holds(self, topic: str) -> bool:
        return topic in self._held

    def __len__(self) -> int:
        return len(self._held)

    async def acquire(self, topic: str) -> str:
        """Take `topic`'s lease if it is free or this node's; return the node that holds it.

        Raises ConnectionError if the backplane cannot be reached.
        """
        holder = await self.backplane.acquire_lease(topic, ttl=self.lease_seconds)
        if holder == self.backplane.node:
            self._held[topic] = self._held.get(topic, 0) + 1
        return holder

    def release(self, topic: str) -> None:
        """One topic actor of `topic` has ended here; the last gives the lease back."""
        count = self._held.get(topic, 0)
        if count > 1:
            self._held[topic] = count - 1
        elif count == 1:
            del self._held[topic]
            self.backplane.release_lease(topic)

    async def renew(self) -> list[str]:
        """Renew every lease held here; return (and forget) those another node holds now."""
        if not self._held:
            return []
        lost = await self.backplane.renew_leases(list(self._held), ttl=self.lease_seconds)
        for topic in lost:
            self._held.pop(topic, None)
        return lost
