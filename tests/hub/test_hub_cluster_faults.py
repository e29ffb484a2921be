"""Faults between hub nodes: what a client sees when nodes disagree about who is alive.

Two hub nodes in this process on one real Valkey, as in test_hub_cluster.py.
"""

from __future__ import annotations

import trio
from test_hub_cluster import plane_of, start_two
from valkey_support import ValkeyServer

from hub.cluster.wire import TopicEnded, decode
from hub.protocol import Call, Ended, Publish, Reply


def lose_topic_ends(running) -> None:  # type: ignore[no-untyped-def]
    """Node `running` never hears that a topic ended (back after its messages were dropped)."""
    cluster = running.runtime.cluster

    def receive(data: bytes) -> None:
        if not isinstance(decode(data), TopicEnded):
            cluster._received(data)

    plane_of(running).on_node_message(receive)


async def test_a_member_its_topics_owner_judged_gone_is_told_to_join_again_not_left_in_silence(
    start_hub, valkey_server: ValkeyServer
) -> None:
    # Node one judges node two dead (its heartbeat lapsed: it stalled, or
    # lost Redis a while) and removes its members; node two comes back and
    # its relay still holds them. Their requests must get an answer, not
    # vanish on the owner (a call would hold a place of the client's calls
    # in flight for ever). Node two is back too late to hear that the owner
    # ended its topics for it (test_hub_cluster_presence.py: in time).
    one, two = await start_two(start_hub, valkey_server)
    lose_topic_ends(two)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("count:z")
            await bob.join_ok("count:z")
            cluster = one.runtime.cluster
            assert cluster is not None and cluster.remote_members() == 1
            cluster._node_died(plane_of(two).node)  # what its liveness round does
            assert cluster.remote_members() == 0
            ref = bob.next_ref()
            await bob.send(Call(ref, "count:z", "add", 1, None))
            answer = await bob.wait_for(
                lambda frame: (
                    (isinstance(frame, Reply) and frame.ref == ref)
                    or (isinstance(frame, Ended) and frame.topic == "count:z")
                )
            )
            assert isinstance(answer, Ended), answer
            assert answer.code == "topic_crashed"
            # Told so, it joins again, and is a member on the owner once more.
            await bob.join_ok("count:z")
            reply = await bob.call("count:z", "add", 2)
            assert reply.ok and reply.payload["count"] == 2, reply  # type: ignore[index]
            assert cluster.remote_members() == 1


async def test_a_publish_of_a_member_its_topics_owner_judged_gone_ends_its_membership(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    lose_topic_ends(two)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("room:z", {"user": "ann"})
            await bob.join_ok("room:z", {"user": "bob"})
            cluster = one.runtime.cluster
            assert cluster is not None
            cluster._node_died(plane_of(two).node)
            await bob.send(Publish(0, "room:z", "message", {"text": "lost?"}))
            ended = await bob.wait_for(lambda frame: isinstance(frame, Ended))
            assert ended.topic == "room:z" and ended.code == "topic_crashed"


def metric(running, name: str) -> float | None:  # type: ignore[no-untyped-def]
    value: float | None = running.runtime.metrics.registry.get_sample_value(name, {})
    return value


async def test_the_metrics_say_what_the_backplane_and_the_cluster_dropped_and_hold(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("count:m")
            await bob.join_ok("count:m")
            connected = one.runtime.metrics.registry.get_sample_value(
                "triohub_backplane_connected", {"kind": "redis"}
            )
            assert connected == 1
            assert metric(one, "triohub_cluster_remote_members") == 1
            assert metric(one, "triohub_cluster_leases") == 1
            assert metric(two, "triohub_cluster_relays") == 1
            assert metric(two, "triohub_cluster_leases") == 0
            for name in (
                "triohub_backplane_dropped_total",
                "triohub_backplane_failed_writes_total",
                "triohub_backplane_refused_messages_total",
                "triohub_node_messages_dropped_total",
                "triohub_node_messages_duplicate_total",
                "triohub_node_messages_held",
                "triohub_node_messages_refused_total",
            ):
                assert metric(one, name) == 0, name
            # A node message that does not decode: refused and counted.
            plane = plane_of(two)
            plane.send_to_node(plane_of(one).node, b"\xc1")
            while metric(one, "triohub_node_messages_refused_total") != 1:
                await trio.lowlevel.checkpoint()  # a round trip through Redis
            # A topic channel's message that does not decode: likewise.
            assert plane._client is not None
            await plane._client.publish(plane._channel("count:m"), b"\xc1")
            while metric(one, "triohub_backplane_refused_messages_total") != 1:
                await trio.lowlevel.checkpoint()
