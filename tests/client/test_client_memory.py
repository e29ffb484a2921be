"""hub.client's delivery, reconnection, recovery and buffering, through hub.testing.

Each test runs minutes of the hub's time in milliseconds on the autojump
clock: the client is the real one, its links in-memory connections into a
real hub's sessions.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Mapping

import pytest
import trio
import trio.testing

from hub import Hub, JoinRefusedError, Member, Payload, RoomService, Service, Topic, client
from hub.backplane import Recovery
from hub.config import HubConfig, TopicsConfig, WebSocketConfig
from hub.protocol import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from hub.testing import open_test_hub

EMPTY_GRACE = 10.0
RETENTION = 60.0


class Lobby(Service):
    """Four players make a match: the fourth join broadcasts `ready` to all."""

    async def joined(self, member: Member, recovery: Recovery) -> None:
        if len(self.topic.members) == 4:
            self.topic.broadcast("ready", {"players": 4})


class Feed(Service):
    """Keeps what is published; an ack comes after the broadcast."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.broadcast(event, payload, keep=True)


def app() -> Hub:
    hub = Hub("client over memory")
    hub.route("room:*", RoomService)
    hub.route("lobby:*", Lobby)
    hub.route("feed:*", Feed)
    return hub


def config() -> HubConfig:
    return HubConfig(
        topics=TopicsConfig(empty_grace_seconds=EMPTY_GRACE, history_retention_seconds=RETENTION)
    )


class Collected:
    """A handler that keeps the payloads it gets, and lets a test wait for them."""

    def __init__(self) -> None:
        self.payloads: list[Payload] = []
        self._changed = trio.Event()

    def __call__(self, payload: Payload) -> None:
        self.payloads.append(payload)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[Payload]:
        while len(self.payloads) < count:
            await self._changed.wait()
        return self.payloads

    def field(self, name: str) -> list[Payload]:
        return [payload[name] for payload in self.payloads]  # type: ignore[index, call-overload]


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON])
async def test_handlers_attached_after_the_join_see_the_history_that_followed_it(
    autojump_clock: trio.testing.MockClock, subprotocol: str
) -> None:
    """As the README has it: `room = await c.join(...)`, then `room.on(...)`."""
    with trio.fail_after(30):
        async with (
            open_test_hub(app()) as hub,
            hub.connect(subprotocol=subprotocol) as ann,
            hub.connect(subprotocol=subprotocol) as bob,
        ):
            assert bob.subprotocol == subprotocol
            room = await ann.join("room:x", {"user": "ann"})
            for text in ("one", "two", "three"):
                await room.publish("message", {"text": text}, ack=True)
            late = await bob.join("room:x", {"user": "bob"})
            await trio.sleep(1)  # the history arrived long ago: it is held, not dropped
            messages = Collected()
            late.on("message", messages)
            await messages.wait_for(3)
            assert messages.field("text") == ["one", "two", "three"]


async def test_the_fourth_player_sees_the_ready_broadcast_its_join_caused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(app()) as hub, contextlib.AsyncExitStack() as stack:
            readies = []
            for _ in range(4):
                player = await stack.enter_async_context(hub.connect())
                lobby = await player.join("lobby:1")
                ready = Collected()
                lobby.on("ready", ready)
                readies.append(ready)
            for ready in readies:
                assert await ready.wait_for(1) == [{"players": 4}]


async def test_handlers_before_the_join_and_a_late_iterator_see_every_push(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(app()) as hub, hub.connect() as ann:
            await hub.runtime.publish("room:pre", "message", {"text": "kept"})
            channel = ann.channel("room:pre")
            messages = Collected()
            channel.on("message", messages)
            assert channel.state == client.ChannelState.IDLE
            await channel.join({"user": "ann"})
            assert channel.state == client.ChannelState.JOINED
            await messages.wait_for(1)
            assert messages.field("text") == ["kept"]
            # An iterator started late gets what nobody took before it, in order.
            feed = await ann.join("feed:it")
            await hub.runtime.publish("feed:it", "n", 1)
            await hub.runtime.publish("feed:it", "n", 2)
            got = []
            async for push in feed:
                got.append((push.offset, push.payload))
                if len(got) == 2:
                    break
            assert got == [(1, 1), (2, 2)]


async def test_after_the_server_drops_it_the_client_backs_off_rejoins_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    draws = itertools.cycle([0.5, 1.0, 0.25])
    base, cap = 1.0, 4.0
    with trio.fail_after(120):
        async with (
            open_test_hub(app(), config()) as hub,
            hub.connect(backoff_base=base, backoff_cap=cap, random=lambda: next(draws)) as ann,
            hub.connect() as bob,
        ):
            mine = await ann.join("feed:f")
            theirs = await bob.join("feed:f")
            seen = Collected()
            mine.on("n", seen)
            rejoins = Collected()
            mine.on_rejoin(rejoins)
            await theirs.publish("n", 1, ack=True)
            await seen.wait_for(1)

            with hub.offline():
                dropped_at = trio.current_time()
                hub.drop(ann)
                for number in (2, 3, 4):
                    await theirs.publish("n", number, ack=True)
                await trio.sleep(10)  # five attempts fail meanwhile
            await ann.wait_connected()
            await seen.wait_for(4)
            assert seen.payloads == [1, 2, 3, 4]
            assert rejoins.field("recovered") == [True]
            assert ann.connections == 2
            # Full jitter: each delay is the draw times the (capped, doubling) ceiling.
            # Ceilings 1, 2, 4, 4 (capped), 4, 4; draws 0.5, 1.0, 0.25, 0.5, 1.0, 0.25.
            attempts = [dropped_at, *hub.dial_times(ann)[1:]]
            delays = [later - earlier for earlier, later in itertools.pairwise(attempts)]
            assert delays == pytest.approx([0.5, 2.0, 1.0, 2.0, 4.0, 1.0])
            # And it goes on as before.
            await theirs.publish("n", 5, ack=True)
            await seen.wait_for(5)
            assert seen.payloads == [1, 2, 3, 4, 5]


async def test_publishes_and_calls_made_during_an_outage_go_out_after_it_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with (
            open_test_hub(app(), config()) as hub,
            hub.connect(backoff_cap=1.0) as ann,
            hub.connect() as bob,
        ):
            mine = await ann.join("feed:b")
            theirs = await bob.join("feed:b")
            seen = Collected()
            theirs.on("n", seen)
            outcomes: list[str] = []

            async def publish(number: int, ack: bool) -> None:
                await mine.publish("n", number, ack=ack, timeout=20)
                outcomes.append(f"sent {number}")

            async def call() -> None:
                with pytest.raises(client.ReplyError) as refused:
                    await mine.call("count", timeout=20)
                outcomes.append(refused.value.code)

            async with trio.open_nursery() as nursery:
                with hub.offline():
                    hub.drop(ann)
                    await trio.testing.wait_all_tasks_blocked()  # the client has seen it
                    for number, ack in ((1, False), (2, True), (3, False)):
                        nursery.start_soon(publish, number, ack)
                        await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(call)
                    await trio.sleep(3)
                    assert not ann.connected and outcomes == []
                back = trio.current_time()
            # Each went out once, in order, after the channel was joined again.
            assert trio.current_time() - back < 2.0
            await seen.wait_for(3)
            assert seen.payloads == [1, 2, 3]
            assert sorted(outcomes) == ["sent 1", "sent 2", "sent 3", "unknown_event"]


async def test_a_request_buffered_longer_than_its_timeout_fails_and_is_never_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with (
            open_test_hub(app(), config()) as hub,
            hub.connect(backoff_cap=1.0, max_buffered=2) as ann,
            hub.connect() as bob,
        ):
            mine = await ann.join("feed:t")
            theirs = await bob.join("feed:t")
            seen = Collected()
            theirs.on("n", seen)
            async with trio.open_nursery() as nursery:
                with hub.offline():
                    hub.drop(ann)
                    started = trio.current_time()
                    with pytest.raises(client.RequestTimeoutError) as timed_out:
                        await mine.publish("n", "late", timeout=2.0)
                    assert trio.current_time() - started == pytest.approx(2.0)
                    assert timed_out.value.code == "timeout"
                    with pytest.raises(client.RequestTimeoutError):
                        await mine.call("anything", timeout=1.5)
                    # The buffer is bounded: past `max_buffered`, refused at once.
                    for number in (1, 2):
                        nursery.start_soon(functools.partial(mine.publish, "n", number, timeout=60))
                        await trio.testing.wait_all_tasks_blocked()
                    with pytest.raises(client.BufferFullError) as full:
                        await mine.publish("n", 3)
                    assert full.value.code == "buffer_full"
                    await trio.sleep(5)
            # Back online: the two waiting went out; the timed-out one never did.
            await seen.wait_for(2)
            await theirs.publish("n", "after", ack=True)
            await seen.wait_for(3)
            assert seen.payloads == [1, 2, "after"]


class Bouncer(Service):
    """Lets a user in once per incarnation of the topic: a rejoin is refused."""

    def __init__(self, topic: Topic) -> None:
        super().__init__(topic)
        self.seen: set[object] = set()

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        if member.identity in self.seen:
            raise JoinRefusedError("you were here before", code="no_return")
        self.seen.add(member.identity)
        return None


class Silent(Service):
    """Never answers a call (the hub's call timeout does)."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        await trio.sleep_forever()
        return None  # pragma: no cover


def more_routes() -> Hub:
    hub = app()
    hub.route("bouncer:*", Bouncer)
    hub.route("silent:*", Silent)
    return hub


async def test_a_rejoin_that_cannot_recover_says_so_before_the_next_push(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The topic's history was dropped while the client was away: refetch."""
    with trio.fail_after(EMPTY_GRACE + RETENTION + 60):
        async with open_test_hub(app(), config()) as hub, hub.connect(backoff_cap=1.0) as ann:
            feed = await ann.join("feed:gone")
            events: list[object] = []
            feed.on("n", lambda payload: events.append(payload))
            feed.on_rejoin(lambda reply: events.append(("rejoined", reply["recovered"])))  # type: ignore[index, call-overload]
            await hub.runtime.publish("feed:gone", "n", 1)
            with hub.offline():
                hub.drop(ann)
                # Nobody is left: the topic stops, and its history outlives it
                # only for the retention.
                await trio.sleep(EMPTY_GRACE + RETENTION + 5)
                await hub.runtime.publish("feed:gone", "n", "new epoch")
            await ann.wait_connected()
            await hub.runtime.publish("feed:gone", "n", "after")
            async for push in feed:
                if push.payload == "after":
                    break
            assert events == [1, ("rejoined", False), "after"]
            assert feed.recovered is False and feed.offset == 2


async def test_the_server_closing_with_1008_ends_the_client_for_good(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with open_test_hub(app()) as hub, hub.connect() as ann:
            feed = await ann.join("feed:x")
            hub.drop(ann, code=1008, reason="authorization revoked")
            await ann.wait_closed()
            assert ann.closed is not None and "1008" in str(ann.closed)
            assert feed.state == client.ChannelState.ENDED
            with pytest.raises(client.ClientClosedError):
                await feed.publish("n", 1)
            await trio.sleep(60)
            assert len(hub.dial_times(ann)) == 1  # it never tried again


async def test_a_request_in_flight_when_the_link_drops_is_lost_not_resent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(more_routes()) as hub, hub.connect() as ann:
            silent = await ann.join("silent:x")
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with pytest.raises(client.ConnectionLostError) as lost:
                        await silent.call("wait", timeout=4)
                    assert lost.value.code == "disconnected"

                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
                hub.drop(ann)
            await ann.wait_connected()
            assert silent.state == client.ChannelState.JOINED


async def test_a_rejoin_the_service_refuses_ends_the_channel_with_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(more_routes()) as hub, hub.connect(identity="ann") as ann:
            door = await ann.join("bouncer:1")
            hub.drop(ann)
            await ann.wait_connected()
            assert [push async for push in door] == []
            assert door.state == client.ChannelState.ENDED
            assert door.error is not None and door.error.code == "no_return"
            assert "bouncer:1" not in ann.channels


async def test_a_slow_consumer_evicted_with_1013_ends_up_with_every_event_once_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler too slow for the feed: evicted, reconnected, recovered, as often as it takes."""
    total = 600
    settings = HubConfig(
        websocket=WebSocketConfig(outbox_capacity=32),
        topics=TopicsConfig(history_size=1000),
    )
    with trio.fail_after(600):
        async with open_test_hub(app(), settings) as hub, hub.connect(backoff_cap=1.0) as ann:
            feed = await ann.join("feed:fast")
            seen: list[Payload] = []
            done = trio.Event()

            async def slowly(payload: Payload) -> None:
                await trio.sleep(0.01)
                seen.append(payload)
                if len(seen) == total:
                    done.set()

            feed.on("n", slowly)
            for number in range(1, total + 1):
                await hub.runtime.publish("feed:fast", "n", number)
            await done.wait()
            assert seen == list(range(1, total + 1))
            assert hub.runtime.metrics.slow_consumers._value.get() >= 1
            assert ann.connections >= 2 and feed.recovered is True


async def test_a_channel_ended_before_anyone_took_it_keeps_its_pushes_and_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(app()) as hub, hub.connect() as ann:
            assert ann._nursery is not None
            nursery = ann._nursery

            def channel_tasks() -> int:
                return sum("Channel._serve" in task.name for task in nursery.child_tasks)

            room = await ann.join("room:end", {"user": "ann"})
            assert channel_tasks() == 1
            await hub.runtime.publish("room:end", "message", {"text": "last words"})
            await trio.testing.wait_all_tasks_blocked()
            hub.drop(ann, code=1008, reason="gone")  # the client closes, and its channels
            await ann.wait_closed()
            await trio.testing.wait_all_tasks_blocked()
            assert channel_tasks() == 0  # the channel's task has ended
            texts = [push.payload["text"] async for push in room]  # type: ignore[index, call-overload]
            assert texts == ["last words"]
