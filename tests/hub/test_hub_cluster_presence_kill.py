"""Presence subscriptions across nodes when a node is killed outright (SIGKILL).

A real `hub serve` process and a hub node in this process, on one real
Valkey. With a lease of 2 s renewed every 0.5 s, the surviving node notices
within 2.5 s (docs/deployment.md#ownership); the tests wait on what it
does, bounded by `fail_after`, never on the clock.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from hub_support import open_client, wait_until
from test_hub_cluster import lease_holder, plane_of
from test_hub_cluster_kill import hub_process, redis_get
from test_hub_cluster_presence import change, remote_subscribers, start_node
from valkey_support import ValkeyServer

from hub.presence import PresenceLimitError, PresenceSnapshot
from hub.protocol import Ended

# The killed node's application: rooms, and a backend actor that a join of
# `watch:<n>` subscribes to the presence of the topic its params name.
APP = """
import actors
from hub.app import Hub
from hub.services import RoomService, Service


class Watcher(actors.Actor):
    async def handle(self, message):
        pass  # it holds a subscription; what it receives is of no use here


class Watch(Service):
    async def join(self, member, params):
        hub = self.topic.hub
        snapshot = await hub.subscribe_presence(params["topic"], hub.actor("watcher"))
        return {"users": sorted(snapshot.users)}


app = Hub("rooms")
app.route("room:*", RoomService)
app.route("watch:*", Watch)
app.actor("watcher", Watcher)
"""


@pytest.mark.timeout(120)
async def test_the_owner_drops_the_subscriptions_of_a_killed_node_and_its_places_free_up(
    start_hub, tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    owner = await start_node(start_hub, valkey_server, presence={"max_subscribers": 1})
    with trio.fail_after(90):
        async with (
            owner.client() as ann,
            hub_process(tmp_path, valkey_server.url, APP) as (victim, port),
            open_client(f"ws://127.0.0.1:{port}/ws", "json") as bob,
        ):
            await ann.join_ok("room:x", {"user": "ann"})
            # The killed node's backend actor subscribes, through its relay.
            joined = await bob.join_ok("watch:1", {"topic": "room:x"})
            assert joined.payload["users"] == ["ann"]  # type: ignore[index]
            assert remote_subscribers(owner) == 1
            with pytest.raises(PresenceLimitError):
                await owner.runtime.subscribe_presence("room:x", owner.watcher())

            victim.send_signal(signal.SIGKILL)

            # Its heartbeat lapses: the owner drops its subscription, and the place is free.
            await wait_until(lambda: remote_subscribers(owner) == 0)
            snapshot = await owner.runtime.subscribe_presence("room:x", owner.watcher())
            assert list(snapshot.users) == ["ann"]


@pytest.mark.timeout(120)
async def test_a_subscriber_learns_that_its_topics_owner_died_and_subscribes_again(
    start_hub, tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    node = await start_node(start_hub, valkey_server)
    with trio.fail_after(90):
        async with (
            hub_process(tmp_path, valkey_server.url, APP) as (victim, port),
            open_client(f"ws://127.0.0.1:{port}/ws", "json") as ann,
            node.client() as bob,
        ):
            # room:y runs on the node about to die (ann joined it first).
            await ann.join_ok("room:y", {"user": "ann"})
            await bob.join_ok("room:y", {"user": "bob"})
            victim_node = redis_get(valkey_server, "triohub:owner:room:y")
            assert victim_node is not None and victim_node.decode() != plane_of(node.running).node
            snapshot = await node.runtime.subscribe_presence("room:y", node.watcher())
            assert sorted(snapshot.users) == ["ann", "bob"]

            victim.send_signal(signal.SIGKILL)

            # The relay sees its owner's lease lapse: the topic's end, for
            # the subscriber as for the member.
            assert await node.next() == PresenceSnapshot("room:y", {})
            ended = await bob.wait_for(
                lambda frame: isinstance(frame, Ended) and frame.topic == "room:y"
            )
            assert ended.code == "topic_crashed"
            # Subscribed again, on the node that runs it now: this one.
            snapshot = await node.runtime.subscribe_presence("room:y", node.watcher())
            assert snapshot == PresenceSnapshot("room:y", {})
            plane = plane_of(node.running)
            assert await lease_holder(plane, "room:y") == plane.node
            await bob.join_ok("room:y", {"user": "bob"})
            assert change(await node.next()) == ("room:y", ["bob"], [])
            assert node.nothing_more()
