"""A session driven through the in-memory transport: the hub protocol with no socket at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from join_support import join_ok
from memory_support import connect_memory, read_frames, read_until

import actors
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, ServerConfig, SessionConfig
from hub.protocol import JSON, Call, Ended, Join, Leave, Payload, Publish, Push, Reply
from hub.services import EchoService, Service
from hub.topics import Member, Topic
from hub.transport import TransportClosed


class FeedService(Service):
    """`burst` n: n numbered pushes to everyone; `post`: one push."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "burst":
            assert isinstance(payload, int)
            for number in range(payload):
                self.topic.broadcast("item", number)
        else:
            self.topic.broadcast(event, payload)


class StuckService(Service):
    """Calls wait for the test's `release` event."""

    def __init__(self, topic: Topic, release: trio.Event) -> None:
        super().__init__(topic)
        self.release = release

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        await self.release.wait()
        return "done"

    async def leave(self, member: Member) -> None:
        LEFT.append(member.id)

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "kick-me":
            self.topic.kick(member, "asked for it")


# Who left a StuckService topic, by session id.
LEFT: list[str] = []


@pytest.fixture
def release() -> trio.Event:
    return trio.Event()


@pytest.fixture
async def runtime(nursery: trio.Nursery, release: trio.Event) -> AsyncIterator[HubRuntime]:
    app = Hub("memory")
    app.route("echo:*", EchoService)
    app.route("feed:*", FeedService)
    app.route("stuck:*", lambda topic: StuckService(topic, release))
    # Floods of calls on purpose (to fill a topic's mailbox): no rate limit in the way.
    config = HubConfig(
        server=ServerConfig(port=0),
        session=SessionConfig(messages_per_second=1e6, max_calls_in_flight=100_000),
    )
    running: HubRuntime = await nursery.start(serve_hub, app, config)
    yield running


async def test_a_session_speaks_the_protocol_over_a_memory_transport(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        client, done = await connect_memory(runtime, nursery)
        client.send(JSON.encode(Join(1, "echo:x")))
        assert await read_frames(client, 1) == [join_ok(1, "echo:x")]
        client.send(JSON.encode(Call(2, "echo:x", "ping", {"n": 1})))
        assert await read_frames(client, 1) == [Reply(2, "echo:x", True, {"n": 1})]
        assert runtime.connection_count() == 1
        client.close()
        await done.wait()
        assert runtime.connection_count() == 0


async def test_a_leave_reply_follows_every_push_delivered_before_it_and_precedes_none_after(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    """The reader's replies and the topics' pushes share one ordered path."""
    with trio.fail_after(10):
        # A tiny buffer: most of the burst waits in the outbox when Leave arrives.
        reader, _done = await connect_memory(runtime, nursery, buffer=2)
        publisher, _publisher_done = await connect_memory(runtime, nursery)
        for client in (reader, publisher):
            client.send(JSON.encode(Join(1, "feed:x")))
            assert await read_frames(client, 1) == [join_ok(1, "feed:x")]
        publisher.send(JSON.encode(Publish(2, "feed:x", "burst", 200)))
        received = await read_frames(publisher, 201)
        assert received[-1] == Reply(2, "feed:x", True)
        # Every item was delivered to the reader's session before it reads the Leave.
        reader.send(JSON.encode(Leave(2, "feed:x")))
        await trio.testing.wait_all_tasks_blocked()
        publisher.send(JSON.encode(Publish(3, "feed:x", "post", "after")))
        assert (await read_frames(publisher, 2))[-1] == Reply(3, "feed:x", True)
        got = await read_frames(reader, 201)
        assert got[:200] == [Push("feed:x", "item", number) for number in range(200)]
        assert got[200] == Reply(2, "feed:x", True)
        # The post after the Leave never reaches the reader.
        reader.send(JSON.encode(Call(3, "feed:x", "x")))  # not joined: refused at once
        [refusal] = await read_frames(reader, 1)
        assert isinstance(refusal, Reply) and not refusal.ok


async def test_a_full_topic_answers_overloaded_and_the_session_carries_on(
    runtime: HubRuntime, nursery: trio.Nursery, release: trio.Event
) -> None:
    """The session never waits on a topic's mailbox: a full one is refused at once."""
    with trio.fail_after(20):
        client, _done = await connect_memory(runtime, nursery, buffer=100_000)
        client.send(JSON.encode(Join(1, "stuck:x")))
        client.send(JSON.encode(Join(2, "echo:y")))
        replies = sorted(await read_frames(client, 2), key=lambda frame: frame.ref)  # type: ignore[union-attr]
        assert replies == [join_ok(1, "stuck:x"), join_ok(2, "echo:y")]
        topic_ref = runtime.topics.whereis("stuck:x")
        assert topic_ref is not None
        # One call is being handled (stuck), the rest of its batch waits in
        # the actor, and `capacity` more fill the mailbox: the next is refused.
        calls = topic_ref.mailbox_capacity + actors.DEFAULT_BATCH_SIZE + 1
        for ref in range(10, 10 + calls):
            client.send(JSON.encode(Call(ref, "stuck:x", "wait", None, 60)))
        # The same connection's other topic answers at once.
        client.send(JSON.encode(Call(99_999, "echo:y", "ping", "pong")))
        answers = await read_until(client, Reply(99_999, "echo:y", True, "pong"))
        refused = answers[:-1]
        assert refused, "no call was refused"
        for reply in refused:
            assert isinstance(reply, Reply) and reply.error_code == "overloaded", reply
        release.set()


async def test_the_client_going_away_ends_the_session_and_its_memberships(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        client, done = await connect_memory(runtime, nursery)
        client.send(JSON.encode(Join(1, "feed:gone")))
        assert await read_frames(client, 1) == [join_ok(1, "feed:gone")]
        topic_ref = runtime.topics.whereis("feed:gone")
        assert topic_ref is not None
        client.close()
        await done.wait()
        with pytest.raises(TransportClosed):
            client.send(JSON.encode(Join(2, "feed:other")))


async def test_a_leave_reaches_a_topic_whose_mailbox_is_full(
    runtime: HubRuntime, nursery: trio.Nursery, release: trio.Event
) -> None:
    """A Leave goes past the topic's capacity: the member is removed once it gets there."""
    LEFT.clear()
    with trio.fail_after(20):
        client, _done = await connect_memory(runtime, nursery, buffer=100_000)
        client.send(JSON.encode(Join(1, "stuck:leave")))
        assert await read_frames(client, 1) == [join_ok(1, "stuck:leave")]
        topic_ref = runtime.topics.whereis("stuck:leave")
        assert topic_ref is not None
        calls = topic_ref.mailbox_capacity + actors.DEFAULT_BATCH_SIZE + 1
        for ref in range(10, 10 + calls):
            client.send(JSON.encode(Call(ref, "stuck:leave", "wait", None, 60)))
        client.send(JSON.encode(Leave(2, "stuck:leave")))
        await read_until(client, Reply(2, "stuck:leave", True))
        release.set()
        while not LEFT:
            await trio.testing.wait_all_tasks_blocked()
        assert len(LEFT) == 1


async def test_a_kick_for_a_membership_already_left_ends_nothing_of_the_next(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    """Kick, Leave and Join again in one burst: the client ends up joined, once."""
    with trio.fail_after(10):
        client, _done = await connect_memory(runtime, nursery)
        client.send(JSON.encode(Join(1, "stuck:kick")))
        assert await read_frames(client, 1) == [join_ok(1, "stuck:kick")]
        # One batch message: the session takes all three before the topic
        # handles the first, so the kick's Ended reaches the session after
        # the Leave and the new Join (sent one by one, the order would be
        # the scheduler's to choose).
        burst = [
            Publish(0, "stuck:kick", "kick-me"),
            Leave(2, "stuck:kick"),
            Join(3, "stuck:kick"),
        ]
        client.send(JSON.encode_batch(burst))
        frames = await read_until(client, join_ok(3, "stuck:kick"))
        assert Reply(2, "stuck:kick", True) in frames
        assert not any(isinstance(frame, Ended) for frame in frames), frames
        # Joined, and the topic knows it: a call is answered (not "not_joined").
        client.send(JSON.encode(Call(4, "stuck:kick", "x", None, 0.5)))
        [answer] = await read_frames(client, 1)
        assert isinstance(answer, Reply) and answer.error_code == "call_timeout"


async def test_a_session_that_closes_tells_its_memory_client_the_code(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        client, done = await connect_memory(runtime, nursery)
        for _ in range(50):
            client.send("not a frame")
        with pytest.raises(TransportClosed) as closed:
            while True:
                await client.receive()
        assert closed.value.code == 1008
        await done.wait()
