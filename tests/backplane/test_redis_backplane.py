"""The Redis backplane across nodes: two backplanes on one real Valkey server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import msgpack
import pytest
import trio
from coredis.tokens import PureToken
from valkey_gate import ValkeyGate
from valkey_support import ValkeyServer

import hub.backplane.redis as redis_module
from hub.backplane import Position, Record
from hub.backplane.redis import RedisBackplane, RedisUnavailableError, _Seen


@asynccontextmanager
async def node(server: ValkeyServer, **options: object) -> AsyncIterator[RedisBackplane]:
    plane = RedisBackplane(server.url, **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        await plane.wait_healthy()
        yield plane
        await plane.aclose()


async def wait_until_subscribed(plane: RedisBackplane, topic: str) -> None:
    """A subscription takes a round trip: wait until Redis counts it."""
    assert plane._client is not None
    channel = plane._channel(topic)
    with trio.fail_after(5):
        while True:
            counts = await plane._client.pubsub_numsub(channel)
            if counts.get(channel, 0) >= 1:
                return
            await trio.lowlevel.checkpoint()


@pytest.fixture
def server(valkey_server: ValkeyServer) -> ValkeyServer:
    valkey_server.flush()
    return valkey_server


async def test_a_record_published_on_one_node_reaches_another_once_and_in_order(
    server: ValkeyServer,
) -> None:
    async with node(server) as owner, node(server) as other:
        received: list[Record] = []
        got_all = trio.Event()

        def deliver(record: Record) -> None:
            received.append(record)
            if len(received) == 201:
                got_all.set()

        other.subscribe("room:x", deliver)
        await wait_until_subscribed(other, "room:x")
        local: list[Record] = []
        owner.subscribe("room:x", local.append)
        position = await owner.position("room:x")
        sent = [Record("room:x", "m", {"n": n}, position.epoch, n) for n in range(1, 201)]
        sent.insert(50, Record("room:x", "typing", None, position.epoch, None))
        for record in sent:
            owner.publish(record)
        with trio.fail_after(5):
            await got_all.wait()
        assert received == sent  # exactly once each, in publish order
        assert local == sent  # the owner's own members got them at once
        # The other node reads the same history and position.
        assert await other.position("room:x") == Position(position.epoch, 200)
        history = await other.history("room:x", after=190)
        assert [record.offset for record in history.records] == list(range(191, 201))
        assert history.complete


async def test_a_node_that_did_not_read_the_position_cannot_publish_kept_records(
    server: ValkeyServer,
) -> None:
    async with node(server) as plane:
        with pytest.raises(ValueError, match="only the topic's owner"):
            plane.publish(Record("room:y", "m", None, "e", 1))


async def test_two_owners_of_one_topic_cannot_both_give_out_an_offset(
    server: ValkeyServer,
) -> None:
    # Redis checks the sequence again: whichever record comes second is
    # refused there, and only the first is kept.
    async with node(server) as first, node(server) as second:
        seen: list[Record] = []
        first.subscribe("room:z", seen.append)
        a = await first.position("room:z")
        b = await second.position("room:z")
        first.publish(Record("room:z", "m", "first", a.epoch, 1))
        second.publish(Record("room:z", "m", "second", b.epoch, 1))
        with trio.fail_after(5):
            while (await first.position("room:z")).offset < 1:
                await trio.lowlevel.checkpoint()
        with trio.fail_after(5):
            while first.failed_writes + second.failed_writes < 1:
                await trio.lowlevel.checkpoint()
        history = await first.history("room:z", after=0)
        assert [record.payload for record in history.records] in (["first"], ["second"])
        assert first.failed_writes + second.failed_writes == 1


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(
    server: ValkeyServer,
) -> None:
    async with node(server) as one, node(server) as two:
        assert await one.acquire_lease("room:l", ttl=30) == one.node
        assert await two.acquire_lease("room:l", ttl=30) == one.node
        assert await two.renew_leases(["room:l"], ttl=30) == ["room:l"]  # not two's
        assert await two.lease_holders(["room:l", "room:free"]) == [one.node, None]
        # Released: the other takes it.
        one.release_lease("room:l")
        with trio.fail_after(5):
            while await two.acquire_lease("room:l", ttl=0.2) != two.node:
                await trio.lowlevel.checkpoint()
        # Not renewed: it expires, and the first takes it back.
        with trio.fail_after(10):
            while await one.acquire_lease("room:l", ttl=30) != one.node:
                await trio.lowlevel.checkpoint()
        # A release by a node that does not hold it changes nothing.
        two.release_lease("room:l")
        assert await two.lease_holders(["room:l"]) == [one.node]


async def test_a_node_message_reaches_only_its_node_after_the_records_sent_before_it(
    server: ValkeyServer,
) -> None:
    async with node(server) as one, node(server) as two:
        events: list[object] = []
        got = trio.Event()

        def on_message(message: bytes) -> None:
            events.append(message)
            got.set()

        two.subscribe("room:n", events.append)
        await two.subscribed("room:n")
        with pytest.raises(ValueError, match="not subscribing"):
            await two.subscribed("room:never")
        two.on_node_message(on_message)
        one.on_node_message(lambda message: events.append(("one", message)))
        position = await one.position("room:n")
        one.publish(Record("room:n", "e", 1, position.epoch, 1))
        one.send_to_node(two.node, b"after")
        with trio.fail_after(5):
            await got.wait()
        assert [type(event) for event in events] == [Record, bytes]
        assert events[1] == b"after"


async def test_a_node_that_stops_beating_is_not_alive_after_its_ttl(server: ValkeyServer) -> None:
    async with node(server) as one, node(server) as two:
        await one.heartbeat(ttl=0.2)
        assert await two.nodes_alive([one.node]) == [True]
        with trio.fail_after(10):
            while await two.nodes_alive([one.node]) != [False]:
                await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class SilentProxy:
    """A TCP proxy in front of Valkey that can stop passing anything on (a Redis that hangs)."""

    target_port: int
    port: int = 0
    passing: trio.Event = attrs.Factory(trio.Event)
    #: Whether Redis's answers are held too (else only the commands are).
    replies_only: bool = False

    def hang(self) -> None:
        self.passing = trio.Event()

    def hold_replies(self) -> None:
        """Pass commands on, hold Redis's answers: Redis runs what the client thinks lost."""
        self.replies_only = True
        self.passing = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.passing.set()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", self.target_port) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope, False)
            nursery.start_soon(self._pump, server, client, nursery.cancel_scope, True)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        both: trio.CancelScope,
        replies: bool,
    ) -> None:
        # Either side closing (the client dropping a connection that hung) ends both.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some():
                if replies or not self.replies_only:
                    await self.passing.wait()  # held while hanging
                await sink.send_all(data)
        both.cancel()


async def test_a_redis_that_stops_answering_fails_a_waiting_read_within_the_call_timeout(
    server: ValkeyServer,
) -> None:
    proxy = SilentProxy(server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        plane = RedisBackplane(f"redis://127.0.0.1:{proxy.port}/0", call_timeout=0.5)
        await nursery.start(plane.run)
        with trio.fail_after(20):
            await plane.wait_healthy()
            await plane.position("room:h")
            proxy.hang()
            # Without a deadline this read would wait for as long as Redis hangs.
            with pytest.raises(RedisUnavailableError, match=r"did not answer within 0\.5 s"):
                await plane.history("room:h", after=0)
            assert not plane.connected
            proxy.passing.set()
            await plane.wait_healthy()
            # The connection that hung was dropped: the next answers are the right ones.
            history = await plane.history("room:h", after=0)
            assert history.records == []
            assert (await plane.position("room:h")).offset == 0
            await plane.aclose()
        nursery.cancel_scope.cancel()


async def test_node_messages_and_records_reach_a_node_again_after_redis_restarts_empty(
    server: ValkeyServer,
) -> None:
    async with node(server) as one, node(server) as two:
        got: list[object] = []
        arrived = trio.Event()

        def keep(item: object) -> None:
            got.append(item)
            arrived.set()

        one.on_node_message(keep)
        one.subscribe("room:back", keep)
        await one.subscribed("room:back")
        server.stop()
        try:
            await one.wait_healthy(False)
            await two.wait_healthy(False)
        finally:
            server.start()
        await one.wait_healthy(True)
        await two.wait_healthy(True)
        with trio.fail_after(10):
            await one.subscribed("room:back")
            while not got:
                arrived = trio.Event()
                two.send_to_node(one.node, b"back")
                with trio.move_on_after(0.5):
                    await arrived.wait()
        assert got[0] == b"back"


async def test_node_messages_for_a_node_not_listening_yet_are_held_and_arrive_in_order(
    server: ValkeyServer,
) -> None:
    async with node(server) as one:
        # Nobody listens on node "late"'s channel yet: Redis takes each
        # message and gives it to no one, so `one` holds them.
        for n in range(5):
            one.send_to_node("late", b"%d" % n)
        with trio.fail_after(5):
            while len(one._held.get("late", ())) < 5:
                await trio.lowlevel.checkpoint()
        got: list[bytes] = []
        all_in = trio.Event()

        def on_message(message: bytes) -> None:
            got.append(message)
            if len(got) == 7:
                all_in.set()

        late = RedisBackplane(server.url, node="late")
        late.on_node_message(on_message)
        async with trio.open_nursery() as nursery:
            await nursery.start(late.run)
            # Sent while the first five wait: after them, not before.
            one.send_to_node("late", b"5")
            one.send_to_node("late", b"6")
            with trio.fail_after(10):
                await all_in.wait()
            assert got == [b"%d" % n for n in range(7)]
            assert "late" not in one._held and one.dropped_node_messages == 0
            await late.aclose()


async def test_node_messages_to_a_node_that_subscribes_in_the_middle_of_a_batch_keep_their_order(
    server: ValkeyServer,
) -> None:
    # The sender pipelines ten messages for node "late" in one round trip.
    # Redis runs the first while "late" is not subscribed (it reaches no one:
    # held, to be sent again); "late" subscribes; Redis runs the other nine.
    # They must not overtake the first: "late" acts on them in the order sent.
    gate = ValkeyGate(server.port)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.serve)
        sender = RedisBackplane(gate.url)
        await nursery.start(sender.run)
        with trio.fail_after(20):
            await sender.wait_healthy()
            await sender.flush()  # nothing else in the next round trip
            gate.hold_after(b"message 0")
            for n in range(10):
                sender.send_to_node("late", b"message %d" % n)
            await gate.holding.wait()  # Redis ran the first, for no one
            late = RedisBackplane(server.url, node="late")
            late.on_node_message(got.append)
            await nursery.start(late.run)
            await late.wait_healthy()
            assert late._client is not None
            channel = late._node_channel
            while (await late._client.pubsub_numsub(channel)).get(channel, 0) < 1:
                await trio.lowlevel.checkpoint()
            gate.release()  # the rest of the round trip: "late" listens now
            while sender.stats().held_node_messages or len(got) < 10:
                await trio.lowlevel.checkpoint()
            # Anything still on its way would come before this one.
            sender.send_to_node("late", b"last")
            while got[-1:] != [b"last"]:
                await trio.lowlevel.checkpoint()
        assert got == [*(b"message %d" % n for n in range(10)), b"last"]  # once each, in order
        assert sender.dropped_node_messages == 0
        await late.aclose()
        await sender.aclose()
        nursery.cancel_scope.cancel()


async def test_a_node_cut_off_again_and_again_acts_on_a_stream_of_messages_once_each_in_order(
    server: ValkeyServer,
) -> None:
    # Another node streams numbered messages to `receiver` while Valkey cuts
    # its pub/sub connection, again and again: each time it subscribes again
    # in the middle of the stream. What reached no one meanwhile is sent
    # again; the receiver must act on every message once, in the order sent.
    # (In one process the receiver seldom subscribes again in the middle of
    # one of the sender's round trips: the test above makes that happen.)
    async with node(server) as sender, node(server) as receiver:
        got: list[int] = []
        receiver.on_node_message(lambda message: got.append(int(message)))
        sent = 0

        def send(count: int) -> None:
            nonlocal sent
            for _ in range(count):
                sender.send_to_node(receiver.node, b"%d" % sent)
                sent += 1

        assert sender._client is not None
        with trio.fail_after(60):
            for _cut in range(10):
                # Cut when the receiver has had all: a message Redis had counted
                # as received and not yet written to the connection it cuts would
                # be lost (pub/sub cannot say), which is not what this test is about.
                while len(got) < sent:
                    await trio.lowlevel.checkpoint()
                await sender._client.client_kill(type_=PureToken.PUBSUB)
                await receiver.wait_healthy(False)
                # The stream goes on while the receiver comes back, and after.
                after = 0
                while after < 10:
                    send(20)
                    await trio.lowlevel.checkpoint()
                    after += receiver.healthy
            while len(got) < sent:
                await trio.lowlevel.checkpoint()
            send(1)  # anything still on its way would come before this one
            while len(got) < sent:
                await trio.lowlevel.checkpoint()
        assert got == list(range(sent))  # once each, in order
        assert sender.dropped_node_messages == 0


async def test_bytes_on_a_topic_channel_that_do_not_decode_are_refused_and_counted(
    server: ValkeyServer,
) -> None:
    # Anything that can write to Redis can publish on a topic's channel. What
    # does not decode is refused and counted; it does not cost the node its
    # pub/sub connection (and the records published meanwhile with it).
    async with node(server) as one, node(server) as two:
        got: list[Record] = []
        arrived = trio.Event()

        def deliver(record: Record) -> None:
            got.append(record)
            arrived.set()

        one.subscribe("room:g", deliver)
        await one.subscribed("room:g")
        went_unhealthy = trio.Event()
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await one.wait_healthy(False)
                went_unhealthy.set()

            nursery.start_soon(watch)
            position = await two.position("room:g")
            assert two._client is not None
            channel = one._channel("room:g")
            for garbage in (
                b"\xc1",  # not msgpack
                msgpack.packb(7),  # not a list
                msgpack.packb(["other", b"\xc1"]),  # a record that is not one
                msgpack.packb(["other", msgpack.packb([1, 2])]),  # too few fields
                # Eight fields, of the wrong kinds (an event that is not a name).
                msgpack.packb(["other", msgpack.packb([7, None, "e", 1, None, False, None, 0])]),
            ):
                await two._client.publish(channel, garbage)
            two.publish(Record("room:g", "m", "after", position.epoch, 1))
            with trio.fail_after(5):
                await arrived.wait()
            assert [record.payload for record in got] == ["after"]
            assert one.refused_messages == 5
            assert not went_unhealthy.is_set()
            nursery.cancel_scope.cancel()


async def test_a_node_whose_lease_another_node_took_cannot_append_to_the_topic_history(
    server: ValkeyServer,
) -> None:
    # A zombie owner: its lease lapsed (it stalled, or lost Redis a while)
    # and another node took the topic. Until it learns so (its next renewal),
    # what it appends must not take the new owner's offsets.
    async with node(server) as stale, node(server) as owner:
        assert await stale.acquire_lease("room:z2", ttl=0.2) == stale.node
        stale_position = await stale.position("room:z2")
        with trio.fail_after(10):
            while await owner.acquire_lease("room:z2", ttl=30) != owner.node:
                await trio.lowlevel.checkpoint()
        position = await owner.position("room:z2")
        assert position == stale_position
        stale.publish(Record("room:z2", "m", "stale", stale_position.epoch, 1))
        await stale.flush()
        owner.publish(Record("room:z2", "m", "owner", position.epoch, 1))
        await owner.flush()
        history = await owner.history("room:z2", after=0)
        assert [record.payload for record in history.records] == ["owner"]
        assert stale.failed_writes == 1
        assert owner.failed_writes == 0


async def test_a_node_message_redis_ran_in_a_round_trip_that_timed_out_arrives_once(
    server: ValkeyServer,
) -> None:
    # Redis runs the PUBLISH but its answer is held past the call timeout:
    # the sender counts the round trip lost and sends the message again.
    # The receiver must act on it once (a relayed publish or call twice is
    # a chat message twice, a game move made twice).
    proxy = SilentProxy(server.port)
    async with trio.open_nursery() as nursery, node(server) as receiver:
        got: list[bytes] = []
        receiver.on_node_message(got.append)
        await nursery.start(proxy.serve)
        sender = RedisBackplane(f"redis://127.0.0.1:{proxy.port}/0", call_timeout=0.5)
        await nursery.start(sender.run)
        with trio.fail_after(20):
            await sender.wait_healthy()
            sender.send_to_node(receiver.node, b"once")
            await sender.flush()
            proxy.hold_replies()
            sender.send_to_node(receiver.node, b"twice?")
            while not got[1:]:
                await trio.lowlevel.checkpoint()  # Redis ran it: the receiver has it
            await sender.wait_healthy(False)  # the sender's round trip timed out
            proxy.passing.set()
            await sender.wait_healthy()
            sender.send_to_node(receiver.node, b"after")
            while got[-1:] != [b"after"]:
                await trio.lowlevel.checkpoint()
        assert got == [b"once", b"twice?", b"after"]
        await sender.aclose()
        nursery.cancel_scope.cancel()


def test_a_node_acts_on_each_numbered_message_once_even_out_of_order() -> None:
    # A node of an older version could send a message that reached no one
    # (its node subscribing again) and the next that reached it in one batch:
    # the first, sent again, still counts as new.
    seen = _Seen()
    assert [seen.first_time(number, 0.0) for number in (1, 2, 4, 3, 4, 3, 1)] == [
        True, True, True, True, False, False, False,
    ]  # fmt: skip
    assert seen.first_time(10_000, 0.0)
    assert not seen.first_time(5, 0.0)  # older than any reordering: sent long ago


async def test_the_messages_held_for_one_node_are_bounded(
    server: ValkeyServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_module, "MAX_HELD_NODE_MESSAGES", 3)
    async with node(server) as one:
        one.send_to_node("gone", b"first")
        with trio.fail_after(5):
            while "gone" not in one._held:
                await trio.lowlevel.checkpoint()
        for n in range(5):
            one.send_to_node("gone", b"%d" % n)
        assert len(one._held["gone"]) == 3
        assert one.dropped_node_messages == 3
        assert one.stats().held_node_messages == 3
        assert one.stats().dropped_node_messages == 3
        full = [record for record in caplog.records if "newer ones dropped" in record.message]
        assert [record.getMessage() for record in full] == [
            "node gone is not listening: 3 messages held for it, newer ones dropped"
        ]  # once, not once per message dropped
