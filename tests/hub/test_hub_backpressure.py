"""Slow consumers: evicted (1013) so that nobody else waits; latest-only topics conflate."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.testing
from hub_support import JSON, PATIENT_WRITES, HubClient, RawWebSocket, counter_value, wait_until
from join_support import join_ok
from wire_support import OPCODE_CLOSE, parse_frame

import actors
from hub.app import Hub
from hub.protocol import Heartbeat, Join, Leave, Payload, Push, Reply
from hub.services import Service
from hub.topics import Member, Topic

# Big pushes fill the kernel's socket buffers quickly.
PAD = "x" * 16_000

# How far a fast member may fall behind the publisher: well below the hub's
# per-connection outbox, so only the client that stopped reading overflows it.
WINDOW = 64

# A slow client's receive buffer: fixed (no autotuning), so the hub's writes
# to it stall after a few hundred kilobytes.
SLOW_RECEIVE_BUFFER = 4096

# Bound on how many posts a test may need before the hub reacts; a hub that
# never evicts fails here rather than at the timeout.
MAX_POSTS = 20_000


class FeedService(Service):
    """Broadcasts every `post` to every member; latest-only if the topic says so."""

    def __init__(self, topic: Topic, *, latest_only: bool) -> None:
        super().__init__(topic)
        self.latest_only = latest_only

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "burst":
            # Numbered items for everyone but the sender, all queued at once.
            assert isinstance(payload, int)
            for number in range(payload):
                self.topic.broadcast("item", {"n": number, "pad": PAD}, exclude=member)
            return
        self.topic.broadcast("post", payload, latest_only=self.latest_only)


def feed_app() -> Hub:
    app = Hub("feeds")
    app.route("feed:*", lambda topic: FeedService(topic, latest_only=False))
    app.route("state:*", lambda topic: FeedService(topic, latest_only=True))
    return app


class Progress:
    """The numbers a reading client has seen, and a way to wait for more of them."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = trio.Event()

    def add(self, number: int) -> None:
        self.seen.append(number)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_count(self, count: int) -> None:
        while len(self.seen) < count:
            await self._changed.wait()

    async def wait_for_number(self, number: int) -> None:
        while not self.seen or self.seen[-1] != number:
            await self._changed.wait()


async def read_posts(client: HubClient, topic: str, progress: Progress) -> None:
    """Record the number of every post on `topic`; anything else fails the test."""
    while True:
        push = await client.next_push(topic)
        assert push.event == "post"
        progress.add(push.payload["n"])


async def join_slow_client(port: int, topic: str) -> RawWebSocket:
    slow = await RawWebSocket.connect(port, codec=JSON, receive_buffer=SLOW_RECEIVE_BUFFER)
    await slow.send(Join(1, topic))
    assert await slow.read_data_frames(1) == [join_ok(1, topic)]
    return slow


async def test_slow_consumer_is_evicted_with_1013_while_others_get_everything(start_hub):
    with trio.fail_after(40):
        hub = await start_hub(feed_app(), **PATIENT_WRITES)
        slow = await join_slow_client(hub.port, "feed:x")
        async with (
            hub.client("json") as publisher,
            hub.client("msgpack") as other,
            trio.open_nursery() as nursery,
        ):
            fast = {publisher: Progress(), other: Progress()}
            for client, progress in fast.items():
                await client.join_ok("feed:x")
                nursery.start_soon(read_posts, client, "feed:x", progress)

            # Post, keeping the fast members within WINDOW, until the hub
            # evicts the client that reads nothing; then a little more.
            sent = 0
            extra = 50
            while counter_value(hub.metrics.slow_consumers) == 0 or extra:
                if counter_value(hub.metrics.slow_consumers):
                    extra -= 1
                assert sent < MAX_POSTS, "the slow client was never evicted"
                for progress in fast.values():
                    await progress.wait_for_count(sent - WINDOW)
                await publisher.publish("feed:x", "post", {"n": sent, "pad": PAD})
                sent += 1
            for progress in fast.values():
                await progress.wait_for_count(sent)
                assert progress.seen == list(range(sent))
            nursery.cancel_scope.cancel()

        # Now the slow client reads: whatever it got is whole and in order,
        # a prefix of the stream, and then the hub's Close 1013.
        frames, close = await slow.read_until_close()
        assert (close.close_code, close.close_reason) == (1013, "slow consumer")
        assert all(isinstance(frame, Push) and frame.payload["pad"] == PAD for frame in frames)
        numbers = [frame.payload["n"] for frame in frames]
        assert numbers == list(range(len(numbers)))
        assert len(numbers) < sent
        await slow.send_close(1000)
        assert await slow.read_frames_until_eof() == []
        await slow.aclose()
        assert counter_value(hub.metrics.slow_consumers) == 1


async def test_slow_member_of_a_latest_only_topic_stays_and_gets_the_newest(start_hub):
    count = 3000  # far more than a connection's outbox holds
    with trio.fail_after(40):
        hub = await start_hub(feed_app(), **PATIENT_WRITES)
        slow = await join_slow_client(hub.port, "state:x")
        async with hub.client("msgpack") as publisher, trio.open_nursery() as nursery:
            progress = Progress()
            await publisher.join_ok("state:x")
            nursery.start_soon(read_posts, publisher, "state:x", progress)
            for number in range(count):
                await publisher.publish("state:x", "post", {"n": number, "pad": PAD})
            await progress.wait_for_number(count - 1)
            nursery.cancel_scope.cancel()

        # The slow client reads again: increasing states, the newest last, and
        # the connection still open and answering.
        numbers = []
        while not numbers or numbers[-1] != count - 1:
            for frame in await slow.read_data_frames(1):
                assert isinstance(frame, Push) and frame.payload["pad"] == PAD
                numbers.append(frame.payload["n"])
        assert numbers == sorted(set(numbers))
        assert len(numbers) < count  # conflated: it never held them all
        await slow.send(Heartbeat(2))
        assert await slow.read_data_frames(1) == [Reply(2, None, True)]
        assert counter_value(hub.metrics.slow_consumers) == 0
        assert counter_value(hub.metrics.conflated) > 0
        await slow.aclose()


@contextlib.asynccontextmanager
async def writer_stalled_on_a_burst(
    hub: Any,
) -> AsyncIterator[tuple[RawWebSocket, actors.ActorRef, HubClient]]:
    """A slow member of feed:x whose socket is full, with a burst of items waiting.

    Yields the slow client, its session actor and a publisher that sent a
    burst of 300 items on feed:x: 16 kB pushes, far more than the slow
    client's socket buffers hold, so most of them wait in its outbox. (The
    ack comes after the service's handler, which delivered every item.)
    """
    slow = await join_slow_client(hub.port, "feed:x")
    [slow_session] = hub.runtime.sessions().which_children()
    async with hub.client() as publisher:
        await publisher.join_ok("feed:x")
        assert (await publisher.publish_acked("feed:x", "burst", 300)).ok
        yield slow, slow_session.ref, publisher


async def test_client_that_reads_nothing_is_evicted_at_the_write_timeout(start_hub):
    """A client that reads nothing at all: its socket takes nothing for write_timeout.

    It is evicted (counted once, its session ended); the others carry on.
    Reading again within the close timeout, it gets whole frames in order and
    then the Close 1013 that says why (the backlog is dropped, the frame in
    flight is finished first).
    """
    with trio.fail_after(20):
        hub = await start_hub(feed_app(), websocket={"write_timeout": 0.5, "close_timeout": 10})
        slow = await join_slow_client(hub.port, "feed:x")
        async with hub.client() as publisher:
            await publisher.join_ok("feed:x")
            assert (await publisher.publish_acked("feed:x", "burst", 300)).ok
            await wait_until(lambda: counter_value(hub.metrics.slow_consumers) > 0)
            frames, close = await slow.read_until_close()
            assert (close.close_code, close.close_reason) == (1013, "slow consumer")
            assert all(isinstance(frame, Push) for frame in frames)
            numbers = [frame.payload["n"] for frame in frames]
            assert numbers == list(range(len(numbers)))
            assert len(numbers) < 300
            await slow.aclose()
            assert counter_value(hub.metrics.slow_consumers) == 1
            # The others carry on.
            assert (await publisher.publish_acked("feed:x", "post", {"n": 0})).ok


async def test_client_that_never_reads_again_is_cut_after_the_close_timeout(start_hub):
    """Evicted, and still reading nothing: the TCP stream ends once the Close times out.

    Whatever the client then finds in its buffers is whole frames in order,
    then either the Close 1013 (if the frame in flight went out whole before
    the end) or the beginning of one more frame: nothing follows a cut.
    """
    with trio.fail_after(20):
        hub = await start_hub(feed_app(), websocket={"write_timeout": 0.5, "close_timeout": 0.5})
        async with writer_stalled_on_a_burst(hub) as (slow, slow_ref, _publisher):
            # An eviction is the client's doing: the actor is ended, not crashed.
            assert await slow_ref.wait_exit() == actors.SHUTDOWN
            assert counter_value(hub.metrics.slow_consumers) == 1
            await wait_until(lambda: hub.runtime.connection_count() == 1)  # the publisher
        data = await slow.read_until_eof()
        position = 0
        numbers = []
        while True:
            frame, used = parse_frame(data[position:])
            if frame is None:
                break
            position += used
            if frame.opcode == OPCODE_CLOSE:
                assert frame.close_code == 1013
                assert position == len(data), "bytes after the Close frame"
                break
            numbers.extend(item.payload["n"] for item in JSON.decode_strict(frame.message))
        assert numbers == list(range(len(numbers)))
        assert len(numbers) < 300
        await slow.aclose()


async def test_overflow_is_one_eviction_with_its_close(start_hub):
    """The outbox overflows while the socket is full, and then the write times out too.

    Both notice the same slow client: it is disconnected once and counted
    once, and when it reads again it gets whole items in order, then Close 1013.
    """
    with trio.fail_after(20):
        hub = await start_hub(feed_app(), websocket={"write_timeout": 2.0, "close_timeout": 10})
        async with writer_stalled_on_a_burst(hub) as (slow, slow_ref, publisher):
            # 300 wait already: 1100 more overflow the outbox (1024).
            assert (await publisher.publish_acked("feed:x", "burst", 1100)).ok
            assert counter_value(hub.metrics.slow_consumers) == 1  # the outbox overflowed
            frames, close = await slow.read_until_close()
            assert (close.close_code, close.close_reason) == (1013, "slow consumer")
            numbers = [frame.payload["n"] for frame in frames]
            assert numbers == list(range(len(numbers)))
            assert await slow_ref.wait_exit() == actors.SHUTDOWN
            assert counter_value(hub.metrics.slow_consumers) == 1
        await slow.aclose()


async def test_no_push_follows_the_leave_reply_even_from_a_batch_being_written(start_hub):
    """Leave while the writer is stalled in the middle of a batch of that topic's pushes.

    The batch was taken before the Leave, so it may still be written, but
    all of it before the Leave's Reply: after that Reply no Push for the
    topic reaches the client (docs/protocol.md, Leave).
    """
    with trio.fail_after(20):
        hub = await start_hub(feed_app())
        async with writer_stalled_on_a_burst(hub) as (slow, _slow_ref, _publisher):
            await slow.send(Leave(2, "feed:x"))
            # The hub has read the Leave and its reader waits to write the Reply.
            await trio.testing.wait_all_tasks_blocked()
            await slow.send(Heartbeat(3))

            frames = await slow.read_data_frames(1)
            while frames[-1] != Reply(3, None, True):
                frames.extend(await slow.read_data_frames(1))
            leave_reply = frames.index(Reply(2, "feed:x", True))
            assert all(isinstance(frame, Push) for frame in frames[:leave_reply])
            assert frames[leave_reply + 1 :] == [Reply(3, None, True)]
            numbers = [frame.payload["n"] for frame in frames[:leave_reply]]
            assert numbers == list(range(len(numbers)))
            # Every item was delivered before the Leave was read, so all of
            # them may come before its Reply; none may come after it.
            assert len(numbers) <= 300
        await slow.aclose()
