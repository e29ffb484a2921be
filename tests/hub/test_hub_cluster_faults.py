"""Faults between hub nodes: what a client sees when nodes disagree about who is alive.

Two hub nodes in this process on one real Valkey, as in test_hub_cluster.py.
"""

from __future__ import annotations

import trio
from test_hub_cluster import plane_of, start_two
from valkey_support import ValkeyServer

from hub.protocol import Call, Ended, Publish, Reply


async def test_a_member_its_topics_owner_judged_gone_is_told_to_join_again_not_left_in_silence(
    start_hub, valkey_server: ValkeyServer
) -> None:
    # Node one judges node two dead (its heartbeat lapsed: it stalled, or
    # lost Redis a while) and removes its members; node two comes back and
    # its relay still holds them. Their requests must get an answer, not
    # vanish on the owner (a call would hold a place of the client's calls
    # in flight for ever).
    one, two = await start_two(start_hub, valkey_server)
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
                lambda frame: (isinstance(frame, Reply) and frame.ref == ref)
                or (isinstance(frame, Ended) and frame.topic == "count:z")
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
