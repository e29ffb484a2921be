"""One owner per topic across hub nodes: two hub nodes in this process on one real Valkey.

The first node whose client joins a topic takes its lease and runs it; the
other relays its clients' requests there (docs/deployment.md#ownership).
Killed nodes are in tests/hub/test_hub_cluster_kill.py (real processes).
"""

from __future__ import annotations

from collections.abc import Mapping

import trio
from valkey_support import ValkeyServer

from hub.app import Hub
from hub.backplane.redis import RedisBackplane
from hub.protocol import Ended, Payload, Push
from hub.services import RoomService, Service
from hub.topics import Member

BACKPLANE_SETTINGS = {"lease_seconds": 2.0, "heartbeat_seconds": 0.5}


class CounterService(Service):
    """State that must be one: a count every member's `add` call adds to."""

    def __init__(self, topic) -> None:  # type: ignore[no-untyped-def]
        super().__init__(topic)
        self.count = 0

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        return {"count": self.count}

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        assert isinstance(payload, int)
        self.count += payload
        return {"count": self.count, "by": member.id}


def cluster_app() -> Hub:
    app = Hub("cluster test")
    app.route("room:*", RoomService)
    app.route("count:*", CounterService)
    return app


async def start_two(start_hub, valkey_server: ValkeyServer):  # type: ignore[no-untyped-def]
    valkey_server.flush()
    backplane = {"redis_url": valkey_server.url, **BACKPLANE_SETTINGS}
    one = await start_hub(cluster_app(), backplane=backplane)
    two = await start_hub(cluster_app(), backplane=backplane)
    return one, two


def plane_of(running) -> RedisBackplane:  # type: ignore[no-untyped-def]
    plane = running.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    return plane


async def lease_holder(plane: RedisBackplane, topic: str) -> str | None:
    (holder,) = await plane.lease_holders([topic])
    return holder


async def test_a_room_joined_on_two_nodes_runs_on_one_and_both_hear_everything_once_in_order(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client("msgpack") as bob:
            first = await ann.join_ok("room:a", {"user": "ann"})
            second = await bob.join_ok("room:a", {"user": "bob"})
            # One owner: node one took the lease; node two runs a relay.
            assert await lease_holder(plane_of(one), "room:a") == plane_of(one).node
            assert one.runtime.cluster is not None and two.runtime.cluster is not None
            assert one.runtime.cluster.remote_members() == 1
            assert two.runtime.cluster.relays() == 1
            assert first.payload["epoch"] == second.payload["epoch"]  # type: ignore[index]
            for n in range(20):
                sender = ann if n % 2 == 0 else bob
                await sender.publish("room:a", "message", {"text": str(n)})
            heard = []
            for client in (ann, bob):
                got: list[Push] = []
                while len(got) < 20:
                    push = await client.next_push("room:a")
                    if push.event == "message":
                        got.append(push)
                texts = [int(push.payload["text"]) for push in got]  # type: ignore[index]
                # Each sender's messages in the order sent; all of them once.
                assert [n for n in texts if n % 2 == 0] == list(range(0, 20, 2))
                assert [n for n in texts if n % 2 == 1] == list(range(1, 20, 2))
                offsets = [push.offset for push in got]
                assert offsets == list(range(offsets[0], offsets[0] + 20))  # type: ignore[arg-type]
                heard.append([(push.offset, push.payload) for push in got])
            # One order for everyone: the owner's.
            assert heard[0] == heard[1]
            # Exactly once: nothing more after a final acknowledged message.
            reply = await bob.publish_acked("room:a", "message", {"text": "end"})
            assert reply.ok
            for client in (ann, bob):
                push = await client.wait_for(
                    lambda frame: isinstance(frame, Push) and frame.event == "message"
                )
                assert push.payload["text"] == "end"
                assert not [
                    frame
                    for frame in client.take_unread()
                    if isinstance(frame, Push) and frame.event == "message"
                ]
    # One node gave out the offsets: Redis refused none.
    assert plane_of(one).failed_writes == 0
    assert plane_of(two).failed_writes == 0


async def test_a_stateful_topic_has_one_state_whichever_node_calls(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("count:x")
            joined = await bob.join_ok("count:x")
            assert joined.payload["count"] == 0  # type: ignore[index]
            assert (await ann.call("count:x", "add", 5)).payload["count"] == 5  # type: ignore[index]
            answer = await bob.call("count:x", "add", 2)
            assert answer.ok, answer
            # Node two's call saw node one's effect: one state, on one node.
            assert answer.payload["count"] == 7  # type: ignore[index]
            assert answer.payload["by"].endswith("@" + plane_of(two).node)  # type: ignore[index]
            assert (await ann.call("count:x", "add", 1)).payload["count"] == 8  # type: ignore[index]


async def test_presence_is_the_same_from_every_node(start_hub, valkey_server: ValkeyServer) -> None:
    one, two = await start_two(start_hub, valkey_server)
    valkey_backplane = {"redis_url": valkey_server.url, **BACKPLANE_SETTINGS}
    three = await start_hub(cluster_app(), backplane=valkey_backplane)  # no member of its own
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("room:p", {"user": "ann", "$presence": {}})
            await bob.join_ok("room:p", {"user": "bob", "$presence": {}})
            views = [await running.runtime.presence("room:p") for running in (one, two, three)]
            for view in views:
                assert sorted(view.users) == ["ann", "bob"], view
            assert views[0] == views[1] == views[2]
            # The client's own view, asked through node two's relay.
            reply = await bob.call("room:p", "$presence")
            assert reply.ok, reply
            assert sorted(reply.payload) == ["ann", "bob"]  # type: ignore[arg-type]
            # Bob leaves on node two: gone from everyone's view, and ann is told.
            await bob.leave("room:p")
            diff = await ann.wait_for(
                lambda frame: (
                    isinstance(frame, Push)
                    and frame.event == "$presence_diff"
                    and "bob" in frame.payload["leaves"]
                )
            )
            assert "bob" not in diff.payload["joins"]
            for running in (one, two, three):
                assert sorted((await running.runtime.presence("room:p")).users) == ["ann"]


async def test_a_member_of_a_relay_gets_pushes_replies_and_kicks_as_locally(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with one.client() as ann, two.client() as bob:
            await ann.join_ok("room:k", {"user": "ann"})
            await bob.join_ok("room:k", {"user": "bob"})
            async with two.client() as carol:
                # A join the owner's service refuses: told through the relay.
                refused = await carol.join("room:k", {"user": ""})
                assert not refused.ok and refused.error_code == "bad_field", refused
                # A name another connection holds, on the other node.
                taken = await carol.join("room:k", {"user": "ann"})
                assert not taken.ok and taken.error_code == "name_taken", taken
            # A server publish from the relay's node goes through the owner.
            offset = await two.runtime.publish("room:k", "news", {"n": 1})
            assert offset is not None
            for client in (ann, bob):
                push = await client.wait_for(
                    lambda frame: isinstance(frame, Push) and frame.event == "news"
                )
                assert push.offset == offset


async def test_a_node_that_stops_gracefully_gives_its_topics_back_at_once(
    start_hub, valkey_server: ValkeyServer
) -> None:
    one, two = await start_two(start_hub, valkey_server)
    with trio.fail_after(30):
        async with two.client() as bob:
            async with one.client() as ann:
                await ann.join_ok("room:g", {"user": "ann"})
                await bob.join_ok("room:g", {"user": "bob"})
                await ann.publish("room:g", "message", {"text": "before"})
                before = await bob.wait_for(
                    lambda frame: isinstance(frame, Push) and frame.event == "message"
                )
                one.runtime.request_shutdown()
                await one.returned.wait()
            # Released as it stopped, not left to expire; its relay's member is told.
            assert await lease_holder(plane_of(two), "room:g") is None
            ended = await bob.wait_for(
                lambda frame: isinstance(frame, Ended) and frame.topic == "room:g"
            )
            assert ended.code == "topic_crashed"
            rejoined = await bob.join_ok("room:g", {"user": "bob"}, offset=before.offset)
            assert rejoined.payload["offset"] == before.offset  # type: ignore[index]
            assert await lease_holder(plane_of(two), "room:g") == plane_of(two).node
