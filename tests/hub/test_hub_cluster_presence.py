"""Presence subscriptions across nodes: a backend actor on one node, the topic on another.

Two hub nodes in this process on one real Valkey, as in test_hub_cluster.py;
a node killed outright is in test_hub_cluster_presence_kill.py. Each node's
backend actor `watcher` hands what it receives to the test through a memory
channel, which the test reads under `fail_after`.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import pytest
import trio
from hub_support import wait_until
from running_hub import RunningHub
from test_hub_cluster import BACKPLANE_SETTINGS, lease_holder, plane_of
from valkey_support import ValkeyServer

import actors
from hub.app import Hub
from hub.cluster.wire import ToSubscriber, decode
from hub.presence import (
    Presence,
    PresenceChanged,
    PresenceLimitError,
    PresenceSnapshot,
)
from hub.protocol import Ended
from hub.services import RoomService
from hub.topics import TopicWithoutPresenceError

# What a watcher received and the test has not read yet. A test that lets
# this many pile up fails (WouldBlock) rather than loses one.
SEEN_CAPACITY: Final = 100


class Watcher(actors.Actor):
    """A backend actor that hands every message it receives to the test."""

    def __init__(self, seen: trio.MemorySendChannel[Any]) -> None:
        self._seen = seen

    async def handle(self, message: Any) -> None:
        self._seen.send_nowait(message)


class SlowWatcher(Watcher):
    """A watcher with room for one message, which stops reading until `gate` is set."""

    mailbox_capacity = 1
    overflow = actors.Overflow.DROP_NEWEST

    def __init__(self, seen: trio.MemorySendChannel[Any], gate: trio.Event) -> None:
        super().__init__(seen)
        self._gate = gate

    async def handle(self, message: Any) -> None:
        await super().handle(message)
        await self._gate.wait()


@attrs.define(eq=False)
class Node:
    """A hub node of the test and what its watchers received."""

    running: RunningHub
    seen: dict[str, trio.MemoryReceiveChannel[Any]]
    gate: trio.Event

    @property
    def runtime(self) -> Any:
        return self.running.runtime

    def watcher(self, name: str = "watcher") -> actors.ActorRef:
        ref: actors.ActorRef = self.runtime.actor(name)
        return ref

    async def next(self, name: str = "watcher") -> Any:
        return await self.seen[name].receive()

    def nothing_more(self, name: str = "watcher") -> bool:
        try:
            self.seen[name].receive_nowait()
        except trio.WouldBlock:
            return True
        return False

    def client(self) -> Any:
        return self.running.client()


async def start_node(start_hub, valkey_server: ValkeyServer, **sections: Any) -> Node:  # type: ignore[no-untyped-def]
    app = Hub("cluster presence test")
    app.route("room:*", RoomService)
    app.route("none:*", RoomService, presence=False)
    app.route("slow:*", RoomService, presence=Presence(user_param="user"))
    seen = {}
    gate = trio.Event()
    for name in ("watcher", "other"):
        send, seen[name] = trio.open_memory_channel[Any](SEEN_CAPACITY)
        app.actor(name, Watcher, send)
    send, seen["slow"] = trio.open_memory_channel[Any](SEEN_CAPACITY)
    app.actor("slow", SlowWatcher, send, gate)
    backplane = {"redis_url": valkey_server.url, **BACKPLANE_SETTINGS}
    running = await start_hub(app, backplane=backplane, **sections)
    return Node(running, seen, gate)


async def start_two(start_hub, valkey_server: ValkeyServer, **owner: Any) -> tuple[Node, Node]:  # type: ignore[no-untyped-def]
    """Node one (where the tests' topics run: its clients join first) and node two."""
    valkey_server.flush()
    one = await start_node(start_hub, valkey_server, **owner)
    two = await start_node(start_hub, valkey_server)
    return one, two


def change(message: Any) -> tuple[str, list[str], list[str]]:
    """A PresenceChanged as (topic, users joined, users left)."""
    assert isinstance(message, PresenceChanged), message
    return message.topic, sorted(message.diff.joins), sorted(message.diff.leaves)


def remote_subscribers(node: Node) -> int:
    cluster = node.runtime.cluster
    assert cluster is not None
    count: int = cluster.remote_subscribers()
    return count


async def test_a_subscriber_on_another_node_gets_the_snapshot_then_every_change_in_order(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob, one.client() as carol:
            await ann.join_ok("room:p", {"user": "ann", "$presence": {"meta": {"s": 1}}})
            plane = plane_of(one.running)
            assert await lease_holder(plane, "room:p") == plane.node
            # Subscribed on node two: the snapshot comes from the owner, node one.
            snapshot = await two.runtime.subscribe_presence("room:p", two.watcher())
            assert isinstance(snapshot, PresenceSnapshot) and snapshot.topic == "room:p"
            assert list(snapshot.users) == ["ann"]
            assert snapshot.users["ann"][0].meta == {"s": 1}
            assert remote_subscribers(one) == 1
            assert two.runtime.cluster.relays() == 1
            # Joins and leaves from clients of both nodes, each in its turn.
            # (A leave is answered by the client's own node: the owner hears
            # of it after. So each step waits for its change before the next.)
            await bob.join_ok("room:p", {"user": "bob"})
            assert change(await two.next()) == ("room:p", ["bob"], [])
            await carol.join_ok("room:p", {"user": "carol"})
            assert change(await two.next()) == ("room:p", ["carol"], [])
            await bob.leave("room:p")
            assert change(await two.next()) == ("room:p", [], ["bob"])
            await ann.publish_acked("room:p", "$presence", {"s": 2})
            updated = await two.next()
            assert change(updated) == ("room:p", ["ann"], [])  # her entry, with its new meta
            assert updated.diff.joins["ann"][0].meta == {"s": 2}
            await ann.leave("room:p")
            assert change(await two.next()) == ("room:p", [], ["ann"])
            # Many changes in a row (each its own message to the topic): in order.
            for n in range(10):
                await carol.publish("room:p", "$presence", {"n": n})
            for n in range(10):
                updated = await two.next()
                assert change(updated) == ("room:p", ["carol"], [])
                assert updated.diff.joins["carol"][0].meta == {"n": n}
            # What node two's watcher sees is what a watcher on the owner sees.
            assert await one.runtime.presence("room:p") == await two.runtime.presence("room:p")

            # Unsubscribed, it gets nothing more; the owner forgets it.
            await two.runtime.unsubscribe_presence("room:p", two.watcher())
            await wait_until(lambda: remote_subscribers(one) == 0)
            await two.runtime.subscribe_presence("room:p", two.watcher("other"))
            await bob.join_ok("room:p", {"user": "bob"})
            assert change(await two.next("other")) == ("room:p", ["bob"], [])
            assert two.nothing_more("watcher")


async def test_the_limit_counts_subscribers_of_every_node_and_frees_up_on_unsubscribe(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server, presence={"max_subscribers": 1})
    with trio.fail_after(30):
        async with one.client() as ann:
            await ann.join_ok("room:l", {"user": "ann"})
            await two.runtime.subscribe_presence("room:l", two.watcher())
            # The owner's limit, said with the same error on either node.
            with pytest.raises(PresenceLimitError, match="max_subscribers"):
                await two.runtime.subscribe_presence("room:l", two.watcher("other"))
            with pytest.raises(PresenceLimitError, match="max_subscribers"):
                await one.runtime.subscribe_presence("room:l", one.watcher())
            assert remote_subscribers(one) == 1
            # Its place is free as soon as the unsubscribe returns, for a
            # subscribe from the same node (they reach the owner in order).
            await two.runtime.unsubscribe_presence("room:l", two.watcher())
            snapshot = await two.runtime.subscribe_presence("room:l", two.watcher("other"))
            assert list(snapshot.users) == ["ann"]
            # A route without presence is said so from either node.
            await ann.join_ok("none:x", {"user": "ann"})
            for node in (one, two):
                with pytest.raises(TopicWithoutPresenceError, match="keeps no presence"):
                    await node.runtime.subscribe_presence("none:x", node.watcher())
                with pytest.raises(TopicWithoutPresenceError, match="keeps no presence"):
                    await node.runtime.presence("none:x")
    assert two.nothing_more("watcher")


async def test_a_subscriber_that_ends_is_dropped_by_the_owner(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann:
            await ann.join_ok("room:d", {"user": "ann"})
            await two.runtime.subscribe_presence("room:d", two.watcher())
            assert remote_subscribers(one) == 1
            two.watcher().kill()  # a backend actor that crashes, say
            await wait_until(lambda: remote_subscribers(one) == 0)


async def test_a_subscriber_learns_its_topic_ended_when_the_owner_stops_and_subscribes_again(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with two.client() as bob:
            async with one.client() as ann:
                await ann.join_ok("room:g", {"user": "ann"})
                await bob.join_ok("room:g", {"user": "bob"})
                snapshot = await two.runtime.subscribe_presence("room:g", two.watcher())
                assert sorted(snapshot.users) == ["ann", "bob"]
                one.running.runtime.request_shutdown()
                await one.running.returned.wait()
            # The topic's end: an empty snapshot, once.
            assert await two.next() == PresenceSnapshot("room:g", {})
            # Subscribed again, on whichever node runs it now: here.
            snapshot = await two.runtime.subscribe_presence("room:g", two.watcher())
            plane = plane_of(two.running)
            assert await lease_holder(plane, "room:g") == plane.node
            assert snapshot == PresenceSnapshot("room:g", {})  # bob has not joined again yet
            await bob.join_ok("room:g", {"user": "bob"})
            assert change(await two.next()) == ("room:g", ["bob"], [])
            assert two.nothing_more()


async def test_a_change_lost_between_nodes_is_made_up_for_with_a_snapshot(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    cluster = two.runtime.cluster
    assert cluster is not None
    lost: list[ToSubscriber] = []
    skipped = trio.Event()

    def receive(data: bytes) -> None:
        # The first change for a subscriber never reaches node two (Redis
        # dropped it, or the owner's node held it past its time).
        message = decode(data)
        if isinstance(message, ToSubscriber) and message.item[0] == "changed" and not lost:
            lost.append(message)
            return
        cluster._received(data)  # in the relay's mailbox now
        if isinstance(message, ToSubscriber) and message.seq == 2:
            skipped.set()

    plane_of(two.running).on_node_message(receive)
    with trio.fail_after(30):
        async with one.client() as ann, one.client() as bob, two.client() as carol:
            await ann.join_ok("room:m", {"user": "ann"})
            await two.runtime.subscribe_presence("room:m", two.watcher())
            await bob.join_ok("room:m", {"user": "bob"})  # lost
            await carol.join_ok("room:m", {"user": "carol"})  # a number skipped: no use
            await skipped.wait()
            assert len(lost) == 1
            # The owner is asked for a snapshot, which comes with the next change.
            await two.runtime.presence("room:m")  # asked behind it: the owner has it
            await bob.leave("room:m")
            snapshot = await two.next()
            assert isinstance(snapshot, PresenceSnapshot), snapshot
            assert sorted(snapshot.users) == ["ann", "carol"]
            # Then changes again, in order.
            await bob.join_ok("room:m", {"user": "bob"})
            assert change(await two.next()) == ("room:m", ["bob"], [])
            assert two.nothing_more()


async def test_a_subscriber_whose_mailbox_was_full_gets_a_snapshot_instead(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    slow = two.watcher("slow")
    with trio.fail_after(30):
        async with one.client() as ann, one.client() as bob, one.client() as carol:
            await ann.join_ok("slow:s", {"user": "ann"})
            await two.runtime.subscribe_presence("slow:s", slow)
            await bob.join_ok("slow:s", {"user": "bob"})
            # The watcher takes bob's join and stops reading...
            assert change(await two.next("slow")) == ("slow:s", ["bob"], [])
            await carol.join_ok("slow:s", {"user": "carol"})  # ...carol's fills its mailbox...
            await bob.leave("slow:s")  # ...and bob's leave finds no room.
            await wait_until(lambda: slow.dropped == 1)
            await two.runtime.presence("slow:s")  # asked behind it: the owner has it
            two.gate.set()
            assert change(await two.next("slow")) == ("slow:s", ["carol"], [])
            # What it missed comes as a snapshot with the next change.
            await ann.leave("slow:s")
            snapshot = await two.next("slow")
            assert snapshot == PresenceSnapshot("slow:s", {"carol": snapshot.users["carol"]})
            await ann.join_ok("slow:s", {"user": "ann"})
            assert change(await two.next("slow")) == ("slow:s", ["ann"], [])
            assert two.nothing_more("slow")


async def test_a_node_judged_dead_that_was_only_stalled_is_told_its_subscriptions_ended(
    start_hub, valkey_server: ValkeyServer
) -> None:
    # Node one judges node two dead (its heartbeat lapsed: it stalled, or
    # lost Redis a while) and drops its members and subscribers. Node two,
    # still running, must not wait for changes that will never come.
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("room:j", {"user": "ann"})
            await bob.join_ok("room:j", {"user": "bob"})
            await two.runtime.subscribe_presence("room:j", two.watcher())
            cluster = one.runtime.cluster
            assert cluster is not None
            cluster._node_died(plane_of(two.running).node)  # what its liveness round does
            assert remote_subscribers(one) == 0
            # Its relay ends: the topic's end for its subscriber and its member.
            assert await two.next() == PresenceSnapshot("room:j", {})
            ended = await bob.wait_for(lambda frame: isinstance(frame, Ended))
            assert ended.topic == "room:j" and ended.code == "topic_crashed"
            # Both come back, and are the owner's again.
            snapshot = await two.runtime.subscribe_presence("room:j", two.watcher())
            assert list(snapshot.users) == ["ann"]  # bob left when his node was judged gone
            await bob.join_ok("room:j", {"user": "bob"})
            assert change(await two.next()) == ("room:j", ["bob"], [])
            assert remote_subscribers(one) == 1
