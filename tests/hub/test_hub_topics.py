"""Joins, leaves, publishes and calls through real sockets; batches; crashes; cleanup."""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Mapping

import pytest
import trio
from hub_support import JSON, RawWebSocket
from join_support import join_ok

from hub.app import Hub
from hub.errors import JoinRefusedError, ServiceError
from hub.presence import Presence
from hub.protocol import (
    MAX_BATCH_FRAMES,
    MAX_MESSAGE_BYTES,
    Ended,
    Error,
    Join,
    Payload,
    Publish,
    Push,
    Reply,
)
from hub.services import EchoService, RoomService, Service
from hub.topics import TOPIC_MAX_CRASHES, CrashLedger, Member, Topic, topic_name_key


class GateService(Service):
    """Refuses joins without the right password, with a code of its own."""

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        if params.get("password") != "open sesame":
            raise JoinRefusedError("wrong password", code="bad_password")
        return {"welcome": True}


class SlowService(Service):
    """Takes its time over calls: `slow` never answers, `quick` does at once."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        if event == "slow":
            await trio.sleep_forever()
        return {"quick": payload}


class CounterService(Service):
    """Counts `inc` events and broadcasts the count; `boom` crashes it; `count` reads it."""

    def __init__(self, topic: Topic) -> None:
        super().__init__(topic)
        self.count = 0

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "boom":
            raise RuntimeError("boom, as asked")
        if event == "burst":
            assert isinstance(payload, int)
            for index in range(payload):
                self.topic.broadcast("item", index)
            return
        if event == "big-burst":
            assert isinstance(payload, dict)
            for index in range(payload["count"]):
                self.topic.broadcast("item", {"n": index, "pad": "é" * payload["size"]})
            return
        self.count += 1
        self.topic.broadcast("count", self.count)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        if event == "count":
            return self.count
        raise ServiceError(event, code="unknown_event")


def topics_app() -> Hub:
    app = Hub("topics")
    app.route("room:*", RoomService)
    app.route("echo:*", EchoService)
    app.route("gate:*", GateService)
    app.route("slow:*", SlowService)
    app.route("count:*", CounterService)
    return app


@pytest.fixture
async def topics_hub(start_hub):
    return await start_hub(topics_app())


# --- joins --------------------------------------------------------------------------


async def test_join_unknown_topic_gets_unknown_topic(topics_hub):
    with trio.fail_after(10):
        async with topics_hub.client() as client:
            reply = await client.join("nosuch:x")
            assert not reply.ok and reply.error_code == "unknown_topic", reply
            # Not joined after a failed join: publishing is refused.
            reply = await client.publish_acked("nosuch:x", "e")
            assert reply.error_code == "not_joined"


async def test_refused_join_gets_the_services_code(topics_hub):
    with trio.fail_after(10):
        async with topics_hub.client("msgpack") as client:
            reply = await client.join("gate:vault", {"password": "guess"})
            assert (reply.ok, reply.error_code, reply.error_message) == (
                False,
                "bad_password",
                "wrong password",
            )
            reply = await client.join("gate:vault", {"password": "open sesame"})
            assert reply == join_ok(reply.ref, "gate:vault", {"welcome": True})


async def test_second_join_gets_already_joined(topics_hub):
    with trio.fail_after(10):
        async with topics_hub.client() as client:
            await client.join_ok("echo:x")
            reply = await client.join("echo:x")
            assert reply.error_code == "already_joined"
            # A Join still waiting for its Reply counts too: send two at once.
            await client.send(Join(50, "echo:y"))
            await client.send(Join(51, "echo:y"))
            first, second = await client.reply_to(50), await client.reply_to(51)
            assert first.ok and second.error_code == "already_joined"


async def test_publish_to_a_topic_not_joined_gets_not_joined(topics_hub):
    with trio.fail_after(10):
        async with topics_hub.client() as client:
            reply = await client.publish_acked("echo:x", "e")
            assert reply.error_code == "not_joined"
            # Without a ref the answer is an Error frame with a null ref.
            await client.publish("echo:x", "e")
            error = await client.next_frame()
            assert isinstance(error, Error) and (error.ref, error.code) == (None, "not_joined")
            reply = await client.call("echo:x", "e")
            assert reply.error_code == "not_joined"
            reply = await client.leave("echo:x")
            assert reply.error_code == "not_joined"


async def test_after_leave_no_push_for_the_topic_arrives(topics_hub):
    with trio.fail_after(10):
        async with topics_hub.client() as ann, topics_hub.client() as bob:
            await ann.join_ok("room:t", {"user": "ann"})
            await ann.join_ok("echo:sync")
            await bob.join_ok("room:t", {"user": "bob"})
            await bob.publish_acked("room:t", "message", {"text": "before"})
            assert (await ann.next_push("room:t")).payload["text"] == "before"

            assert (await ann.leave("room:t")).ok
            assert (await bob.publish_acked("room:t", "message", {"text": "after"})).ok
            # Bob's broadcast was queued for Ann (if at all) before his ack, and so
            # before anything Ann asks for next: her echo call is answered after it.
            reply = await ann.call("echo:sync", "ping", "pong")
            assert reply.payload == "pong"
            assert ann.take_unread() == []
            texts = [
                frame.payload["text"]
                for message in ann.received
                for frame in message.frames
                if isinstance(frame, Push)
            ]
            assert texts == ["before"]
            members = await bob.call("room:t", "members")
            assert members.payload == ["bob"]


# --- calls and publishes -------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_call_gets_a_reply_with_the_payload(topics_hub, codec):
    with trio.fail_after(10):
        async with topics_hub.client(codec) as client:
            await client.join_ok("echo:x")
            payload: Payload = {"nested": [1, {"deep": None}], "pi": 3.25}
            reply = await client.call("echo:x", "anything", payload)
            assert reply == Reply(reply.ref, "echo:x", True, payload)


async def test_slow_call_gets_call_timeout(topics_hub):
    """Real time: the call's own timeout is 0.2 s (see the autojump variant below)."""
    with trio.fail_after(10):
        async with topics_hub.client() as client:
            await client.join_ok("slow:x")
            started = trio.current_time()
            reply = await client.call("slow:x", "slow", timeout=0.2)
            waited = trio.current_time() - started
            assert reply.error_code == "call_timeout", reply
            assert 0.2 <= waited < 5.0  # the client's timeout, not the 5 s default
            # The topic actor is free again: the next call is answered.
            reply = await client.call("slow:x", "quick", 1, timeout=1.0)
            assert reply.payload == {"quick": 1}


async def test_slow_call_gets_call_timeout_with_the_default_timeout(topics_hub, autojump_clock):
    """The 5 s default, on trio's autojumping clock: the real sockets do not mind it."""
    with trio.fail_after(30):
        async with topics_hub.client() as client:
            await client.join_ok("slow:x")
            started = trio.current_time()
            reply = await client.call("slow:x", "slow")
            assert reply.error_code == "call_timeout", reply
            assert trio.current_time() - started == pytest.approx(5.0, abs=0.1)


async def test_publish_with_ack_is_answered_after_the_broadcast(topics_hub):
    """The sender's own Push comes first, then its ok Reply, each a message of its own."""
    with trio.fail_after(10):
        async with topics_hub.client() as ann, topics_hub.client("msgpack") as bob:
            await ann.join_ok("room:t", {"user": "ann"})
            await bob.join_ok("room:t", {"user": "bob"})
            ref = ann.next_ref()
            await ann.send(Publish(ref, "room:t", "message", {"text": "hi"}))
            [push] = (await ann.receive_message()).frames
            [reply] = (await ann.receive_message()).frames
            assert isinstance(push, Push) and push.payload["text"] == "hi"
            assert reply == Reply(ref, "room:t", True)
            assert (await bob.next_push("room:t")).payload == push.payload


async def test_a_burst_arrives_in_batches_of_at_most_the_limit(topics_hub):
    count = MAX_BATCH_FRAMES + 50
    with trio.fail_after(10):
        async with topics_hub.client("msgpack") as client:
            await client.join_ok("count:burst")
            reply = await client.publish_acked("count:burst", "burst", count)
            assert reply.ok
            items = client.take_unread()
            assert [frame.payload for frame in items] == list(range(count))
            sizes = [len(message.frames) for message in client.received[1:]]
            assert sum(sizes) == count + 1
            assert max(sizes) <= MAX_BATCH_FRAMES and len(sizes) >= 2, sizes


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_batches_stay_within_the_message_size_clients_read(topics_hub, codec):
    """Many big pushes queued at once: no message over MAX_MESSAGE_BYTES.

    Clients' decoders (and trio-websocket's default limit) refuse bigger
    messages. The hub frames each broadcast once for all its subscribers, so
    it never merges pushes into batches of its own: each goes as it was built.
    """
    count, size = 120, 20_000  # 120 pushes of 40 kB (in UTF-8) each
    with trio.fail_after(20):
        async with topics_hub.client(codec) as client:
            await client.join_ok("count:big")
            reply = await client.publish_acked(
                "count:big", "big-burst", {"count": count, "size": size}
            )
            assert reply.ok
            items = client.take_unread()
            assert [frame.payload["n"] for frame in items] == list(range(count))
            sizes = [
                len(message.data.encode() if isinstance(message.data, str) else message.data)
                for message in client.received
            ]
            assert max(sizes) <= MAX_MESSAGE_BYTES, sizes
            assert all(len(message.frames) == 1 for message in client.received[1:])


# --- crashes -------------------------------------------------------------------------


@pytest.mark.hub_logs_errors
async def test_a_crashing_topic_ends_every_membership_and_restarts_fresh(topics_hub, caplog):
    runtime = topics_hub.runtime
    with trio.fail_after(10):
        async with (
            topics_hub.client() as ann,
            topics_hub.client("msgpack") as bob,
            topics_hub.client() as cat,
        ):
            await ann.join_ok("count:a")
            await bob.join_ok("count:a")
            await cat.join_ok("count:b")
            await ann.publish_acked("count:a", "inc")
            await cat.publish_acked("count:b", "inc")
            assert (await ann.call("count:a", "count")).payload == 1
            crashed_ref = runtime.system.registry.whereis(topic_name_key("count:a"))
            assert crashed_ref is not None

            await ann.publish("count:a", "boom")
            for client in (ann, bob):
                ended = await client.wait_for(lambda frame: isinstance(frame, Ended))
                assert (ended.topic, ended.code) == ("count:a", "topic_crashed")
                # Before it, only the count pushed before the crash.
                assert client.take_unread() == [Push("count:a", "count", 1)]
            assert not crashed_ref.alive

            # No longer members: the hub answers for the topic without its service.
            assert (await ann.publish_acked("count:a", "inc")).error_code == "not_joined"

            # Joining again works and finds fresh state.
            await ann.join_ok("count:a")
            assert (await ann.call("count:a", "count")).payload == 0
            new_ref = runtime.system.registry.whereis(topic_name_key("count:a"))
            assert new_ref is not None and new_ref is not crashed_ref
            await ann.publish_acked("count:a", "inc")
            assert (await ann.next_push("count:a")).payload == 1
            # Bob, not rejoined, hears nothing of it.
            await bob.join_ok("echo:sync")
            assert (await bob.call("echo:sync", "ping")).ok
            assert [f for f in bob.take_unread() if getattr(f, "topic", "") == "count:a"] == []

            # The other topic of the same service kept its member and its state.
            assert (await cat.call("count:b", "count")).payload == 1
            await cat.publish_acked("count:b", "inc")
            pushes = [frame.payload for frame in cat.take_unread() if isinstance(frame, Push)]
            assert pushes == [1, 2]

            # The rejoin started it afresh (the supervisor does not restart a
            # topic: a crashed one has lost its members and state anyway).
            restarts = [info.restarts for info in runtime.topics.supervisor_of().which_children()]
            assert sum(restarts) == 0, restarts
            # The supervisor logged the crash once, with its traceback.
            crashes = [record for record in caplog.records if "crashed under" in record.message]
            assert len(crashes) == 1
            assert crashes[0].exc_info is not None
            assert "boom, as asked" in str(crashes[0].exc_info[1])


# --- cleanup -------------------------------------------------------------------------


class TrackedRoom(RoomService):
    """A room that reports every member leaving, by user name, on a channel."""

    def __init__(self, topic: Topic, left: trio.MemorySendChannel[str]) -> None:
        super().__init__(topic)
        self._left = left

    async def leave(self, member: Member) -> None:
        self._left.send_nowait(member.params["user"])


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_abrupt_disconnect_removes_the_member_through_monitors(start_hub, how):
    # Capacity: one name per leave in this test; send_nowait would fail loudly beyond it.
    left_send, left_receive = trio.open_memory_channel[str](8)
    app = Hub("cleanup")
    # No presence grace: the ghost's name is to go with its membership here
    # (tests/topics/test_presence.py tests the grace).
    presence = Presence(user_param="user", grace=0)
    app.route("room:*", lambda topic: TrackedRoom(topic, left_send), presence=presence)
    app.route("echo:*", EchoService)
    with trio.fail_after(10):
        hub = await start_hub(app)
        async with hub.client() as bob:
            await bob.join_ok("room:r", {"user": "bob"})
            ghost = await RawWebSocket.connect(hub.port, codec=JSON)
            await ghost.send(Join(1, "room:r", {"user": "ghost"}))
            await ghost.send(Join(2, "echo:g"))
            room_reply, echo_reply = sorted(await ghost.read_data_frames(2), key=lambda f: f.ref)
            assert room_reply.ok and room_reply.payload["members"] == 2
            assert echo_reply == join_ok(2, "echo:g")
            assert (await bob.call("room:r", "members")).payload == ["bob", "ghost"]
            assert hub.runtime.connection_count() == 2

            if how == "reset":
                # SO_LINGER 0: close sends RST instead of FIN.
                ghost.stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            await ghost.aclose()  # no Close frame, no closing handshake

            assert await left_receive.receive() == "ghost"
            assert (await bob.call("room:r", "members")).payload == ["bob"]
            assert hub.runtime.connection_count() == 1
            # The ghost's other topic lost its only member too.
            echo_ref = hub.runtime.system.registry.whereis(topic_name_key("echo:g"))
            assert echo_ref is not None  # still in its grace period, but empty
        assert await left_receive.receive() == "bob"


@pytest.mark.hub_logs_errors
async def test_a_topic_that_keeps_crashing_is_closed_for_a_while_and_nobody_else_notices(
    topics_hub,
):
    with trio.fail_after(20):
        async with topics_hub.client() as ann, topics_hub.client() as bob:
            await bob.join_ok("count:steady")
            await bob.publish_acked("count:steady", "inc")
            for _ in range(TOPIC_MAX_CRASHES):
                await ann.join_ok("count:buggy")
                await ann.publish("count:buggy", "boom")
                ended = await ann.wait_for(lambda frame: isinstance(frame, Ended))
                assert ended.code == "topic_crashed"
            # One crash too many: the topic is not served for a while...
            refused = await ann.join("count:buggy")
            assert not refused.ok
            assert refused.error_code == "service_error"
            assert f"crashed {TOPIC_MAX_CRASHES} times" in (refused.error_message or "")
            # ...and everyone else carries on: the same connection, other
            # topics, their state, the topics supervisor.
            assert (await ann.heartbeat()).ok
            assert (await bob.call("count:steady", "count")).payload == 1
            await ann.join_ok("count:other")
            assert (await ann.call("count:other", "count")).payload == 0


def test_crash_ledger_forgets_crashes_older_than_its_window():
    ledger = CrashLedger(max_crashes=2, window_seconds=10.0)
    ledger.record("t", 0.0)
    assert ledger.closed_until("t", 1.0) is None
    ledger.record("t", 5.0)
    assert ledger.closed_until("t", 6.0) == 10.0
    assert ledger.closed_until("t", 10.0) is None  # the first crash has aged out
    assert ledger.closed_until("other", 6.0) is None
    assert ledger._crashes == {"t": deque([5.0])}
    assert ledger.closed_until("t", 15.0) is None
    assert ledger._crashes == {}


class Notes(Service):
    """Keeps the last payload published; a call answers with it."""

    last: Payload = None

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.last = payload

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return self.last


async def test_an_answer_the_callers_codec_cannot_carry_is_an_error_reply_not_a_crash(start_hub):
    app = Hub("notes")
    app.route("notes:*", Notes)
    running = await start_hub(app)
    with trio.fail_after(10):
        async with running.client("msgpack") as binary, running.client("json") as text:
            await binary.join_ok("notes:a")
            await text.join_ok("notes:a")
            assert (await binary.publish_acked("notes:a", "note", b"\x00bytes")).ok
            refused = await text.call("notes:a", "last")
            assert not refused.ok
            assert refused.error_code == "service_error"
            assert "triohub.v1.json" in (refused.error_message or "")
            # The msgpack client gets the bytes; the topic lives on for both.
            assert (await binary.call("notes:a", "last")).payload == b"\x00bytes"
            assert text.take_unread() == []


async def test_a_topic_that_empties_often_keeps_one_timer(topics_hub):
    """The empty-topic check is an actor timer, re-armed, never stacked, and costs no task."""
    with trio.fail_after(10):
        timers = topics_hub.runtime.system.timers
        async with topics_hub.client() as ann:
            for _ in range(15):  # within the joins-per-second burst
                await ann.join_ok("count:churn")
                assert (await ann.leave("count:churn")).ok
            assert len(timers) == 1
            await ann.join_ok("count:churn")
            assert (await ann.call("count:churn", "count")).ok


class NeverReady(Service):
    """A service whose start waits on something that never answers."""

    async def started(self) -> None:
        await trio.sleep_forever()


async def test_a_topic_that_never_gets_ready_fails_its_join_in_bounded_time(start_hub):
    app = Hub("hanging start")
    app.route("stuck:*", NeverReady)
    app.route("echo:*", EchoService)
    running = await start_hub(app, topics={"start_timeout_seconds": 0.5})
    with trio.fail_after(10):
        async with running.client() as ann:
            refused = await ann.join("stuck:a")
            assert not refused.ok
            assert refused.error_code == "service_error"
            assert "failed to start" in (refused.error_message or "")
            # The half-started actor is gone, and the connection still works.
            assert running.runtime.system.registry.whereis(topic_name_key("stuck:a")) is None
            await ann.join_ok("echo:a")
            assert (await ann.heartbeat()).ok
