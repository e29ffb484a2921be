"""A member on another node, as a topic run here sees it: a remote connection.

A topic keys its members by their connection's actor ref, watches that ref
to learn when the member's connection ends, and delivers to the connection.
For a member whose session runs on another node, the ref is a stand-in's:
a small actor here that does nothing but live as long as the remote
membership does (Erlang's remote pid, in a hub that has no distribution of
its own). Ending it is the topic's `Down`. What the topic delivers goes to
the member's node (`ClusterNode.to_member`), whose relay hands it on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import actors
from hub.protocol import Codec
from hub.topics.messages import Outbound, ToConnection

if TYPE_CHECKING:
    from hub.cluster.node import ClusterNode

__all__ = ["RemoteConnection", "serve_stand_in"]


async def serve_stand_in(ctx: actors.Context) -> None:
    """Live until killed: the stand-in of one remote membership (it gets no messages)."""
    ctx.ready()
    async for _message in ctx:
        pass  # nothing is sent to a stand-in; whatever comes is of no use to it


@attrs.define(eq=False)
class RemoteConnection:
    """A remote member's connection (a `hub.topics.Subscriber`) on the topic's node.

    `data` is the connection's data bag as it was when it joined: a copy,
    which the topic may read and change without the member's node seeing it.
    """

    ref: actors.ActorRef
    codec: Codec
    data: dict[str, Any]
    node: str
    topic: str
    member: str
    cluster: ClusterNode = attrs.field(repr=False)

    def deliver(self, item: Outbound | ToConnection) -> None:
        self.cluster.to_member(self, item)
