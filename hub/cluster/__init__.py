"""The cluster: each topic runs on one node at a time, its members anywhere.

On a shared (Redis) backplane every hub process is a node. The node that
first takes a topic's lease runs the topic's actor; on every other node
whose clients join it (or whose backend actors subscribe to its presence),
a relay stands in for it and carries their requests to the owner and its
answers back. Broadcasts reach every node through the backplane as before.
See docs/deployment.md#ownership.

- `node`: `ClusterNode`, this node's heartbeat, leases and messages, and
  `ClusterSettings` (how long a lease holds, how often it is renewed);
- `leases`: `Leases`, the topic leases this node holds;
- `relay`: `Relay`, the stand-in actor for a topic run elsewhere;
- `remote`: `RemoteConnection`, a member of another node as a topic here sees it;
- `presence`: presence subscriptions of backend actors to topics run on
  another node (the owner's stand-in for each, and its relay's side);
- `wire`: the messages between nodes and their msgpack form;
- `errors`: what goes wrong between nodes.

On the in-process backplane there is no cluster: nothing here runs.
"""

from hub.cluster.errors import LeaseLostError, TopicElsewhereError
from hub.cluster.leases import Leases
from hub.cluster.node import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_LEASE_SECONDS,
    NODE_INBOX_CAPACITY,
    ClusterNode,
    ClusterSettings,
)
from hub.cluster.relay import OwnerGone, Relay
from hub.cluster.remote import RemoteConnection

__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "NODE_INBOX_CAPACITY",
    "ClusterNode",
    "ClusterSettings",
    "LeaseLostError",
    "Leases",
    "OwnerGone",
    "Relay",
    "RemoteConnection",
    "TopicElsewhereError",
]
