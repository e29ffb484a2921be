"""Recovery through `hub.testing`: the join Reply's `recovered`, the hub's replay, `$history`.

docs/protocol.md ("Recovery") is the contract these check: a Join naming
the epoch and offset a client last saw is answered `recovered: true` and
followed by exactly the kept pushes it missed, in order, before any new
one; or `recovered: false` with the current epoch and offset. A `$history`
call reads a topic's history after an offset, bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
import trio
import trio.testing
from memory_support import read_frames, read_until

from hub.app import Hub, HubRuntime
from hub.config import HubConfig, TopicsConfig
from hub.permissions import Action, Allow, Permissions
from hub.protocol import JSON, Call, Frame, Join, Leave, Payload, Publish, Push, Reply
from hub.services import RoomService, Service
from hub.testing import TestHub, open_test_hub
from hub.topics import Member
from hub.transport import MemoryClient, TransportClosed

EMPTY_GRACE = 10.0
RETENTION = 60.0
HISTORY_SIZE = 50
MAX_READ = 4


class Feed(Service):
    """Keeps every event, and does nothing on join: any replay is the hub's."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.broadcast(event, payload, keep=True)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return "pong"


class Private(Feed):
    """Leaves its history permission to itself, and keeps its history to itself."""

    async def authorize(self, member: Member, action: Action) -> bool:
        return action is not Action.HISTORY


class Listed(Feed):
    """Answers its join with a list: not a map, so the hub adds nothing to it."""

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        return ["welcome"]


@pytest.fixture
async def hub() -> AsyncIterator[TestHub]:
    app = Hub("recovery")
    app.route("feed:*", Feed)
    app.route("private:*", Private, permissions=Permissions(history=Allow.SERVICE))
    app.route("listed:*", Listed)
    app.route("room:*", RoomService)
    config = HubConfig(
        topics=TopicsConfig(
            empty_grace_seconds=EMPTY_GRACE,
            history_retention_seconds=RETENTION,
            history_size=HISTORY_SIZE,
            history_max_read=MAX_READ,
        ),
    )
    async with open_test_hub(app, config) as test_hub:
        yield test_hub


def send(client: MemoryClient, frame: Frame) -> None:
    client.send(JSON.encode(frame))


async def answer(client: MemoryClient, frame: Join | Call | Publish | Leave) -> Reply:
    """Send `frame` and read its Reply, which must be the next frame."""
    send(client, frame)
    [reply] = await read_frames(client, 1)
    assert isinstance(reply, Reply) and reply.ref == frame.ref, reply
    return reply


def answer_later(client: MemoryClient, frame: Publish) -> Reply:
    """Send `frame`; return the ok Reply it will get (read it with read_until)."""
    send(client, frame)
    return Reply(frame.ref, frame.topic, True)


async def publish_all(runtime: HubRuntime, topic: str, count: int, *, start: int = 1) -> None:
    for number in range(start, start + count):
        await runtime.publish(topic, "n", {"n": number})


def numbers(frames: list[Frame]) -> list[tuple[int | None, Payload]]:
    return [(push.offset, push.payload["n"]) for push in frames if isinstance(push, Push)]  # type: ignore[index]


async def test_a_rejoin_gets_exactly_the_pushes_it_missed_before_any_new_one(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        bob = hub.open_raw(buffer=1000)
        first = await answer(ann, Join(1, "feed:a"))
        # A first join names no offset: told where the history stands, not `recovered`.
        assert first.payload == {"epoch": first.payload["epoch"], "offset": 0}
        epoch = first.payload["epoch"]
        assert (await answer(bob, Join(1, "feed:a"))).ok
        send(bob, Publish(0, "feed:a", "n", {"n": 1}))
        assert numbers(await read_frames(ann, 1)) == [(1, 1)]
        assert (await answer(ann, Leave(2, "feed:a"))).ok
        send(bob, Publish(0, "feed:a", "n", {"n": 2}))
        send(bob, Publish(0, "feed:a", "n", {"n": 3}))
        await read_until(bob, answer_later(bob, Publish(9, "feed:a", "n", {"n": 4})))
        # The rejoin, and a new event racing it to the topic: whichever the
        # topic takes first, the client sees each event once, in order, and
        # what it missed before anything new.
        send(ann, Join(3, "feed:a", {}, 1, epoch))
        send(bob, Publish(0, "feed:a", "n", {"n": 5}))
        frames = await read_frames(ann, 5)
        assert isinstance(frames[0], Reply) and frames[0].ref == 3
        assert frames[0].payload in (
            {"epoch": epoch, "offset": 4, "recovered": True},
            {"epoch": epoch, "offset": 5, "recovered": True},  # the new one came first
        )
        assert numbers(frames[1:]) == [(2, 2), (3, 3), (4, 4), (5, 5)]
        # Nothing else came: the next frame is the answer to a call.
        assert await answer(ann, Call(4, "feed:a", "ping")) == Reply(4, "feed:a", True, "pong")


async def test_a_recovered_room_member_gets_each_missed_message_once(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    """Rooms replay the recent history to a new member, and leave a recovered one to the hub."""
    with trio.fail_after(30):
        ann = hub.open_raw()
        bob = hub.open_raw(buffer=1000)
        epoch = (await answer(ann, Join(1, "room:r", {"user": "ann"}))).payload["epoch"]
        assert (await answer(bob, Join(1, "room:r", {"user": "bob"}))).ok
        assert (await answer(ann, Leave(2, "room:r"))).ok
        for text in ("one", "two"):
            send(bob, Publish(0, "room:r", "message", {"text": text}))
        await read_frames(bob, 2)
        again = await answer(ann, Join(3, "room:r", {"user": "ann"}, 0, epoch))
        assert again.payload == {"members": 2, "epoch": epoch, "offset": 2, "recovered": True}
        frames = await read_frames(ann, 2)
        assert [(push.offset, push.payload["text"]) for push in frames] == [(1, "one"), (2, "two")]  # type: ignore[union-attr, index]
        assert await answer(ann, Call(4, "room:r", "members")) == Reply(
            4, "room:r", True, ["bob", "ann"]
        )
        # A newcomer is not recovering: rooms give it the recent history themselves.
        carl = hub.open_raw()
        joined = await answer(carl, Join(1, "room:r", {"user": "carl"}))
        assert "recovered" not in joined.payload
        assert len(await read_frames(carl, 2)) == 2


async def test_a_restarted_topic_answers_an_old_epoch_recovered_false(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(EMPTY_GRACE + RETENTION + 60):
        ann = hub.open_raw()
        epoch = (await answer(ann, Join(1, "feed:old"))).payload["epoch"]
        send(ann, Publish(0, "feed:old", "n", {"n": 1}))
        send(ann, Publish(0, "feed:old", "n", {"n": 2}))
        assert numbers(await read_frames(ann, 2)) == [(1, 1), (2, 2)]
        assert (await answer(ann, Leave(2, "feed:old"))).ok
        # The topic stops, and its history is dropped past the retention.
        await trio.sleep(EMPTY_GRACE + RETENTION + 1)
        assert hub.runtime.backplane.topics_kept == 0
        late = await answer(ann, Join(3, "feed:old", {}, 2, epoch))
        assert late.payload["recovered"] is False
        assert late.payload["epoch"] != epoch and late.payload["offset"] == 0
        assert await answer(ann, Call(4, "feed:old", "ping")) == Reply(4, "feed:old", True, "pong")


@pytest.mark.parametrize(
    ("offset", "why"),
    [(2, "older than what is kept"), (HISTORY_SIZE + 20, "past the last offset")],
)
async def test_a_rejoin_from_an_offset_it_cannot_recover_is_told_so(
    hub: TestHub,
    autojump_clock: trio.testing.MockClock,
    offset: int,
    why: str,
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        epoch = (await answer(ann, Join(1, "feed:gap"))).payload["epoch"]
        assert (await answer(ann, Leave(2, "feed:gap"))).ok
        await publish_all(hub.runtime, "feed:gap", HISTORY_SIZE + 5)  # 1..5 are no longer kept
        again = await answer(ann, Join(3, "feed:gap", {}, offset, epoch))
        assert again.payload == {"epoch": epoch, "offset": HISTORY_SIZE + 5, "recovered": False}, (
            why
        )
        assert await answer(ann, Call(4, "feed:gap", "ping")) == Reply(4, "feed:gap", True, "pong")


async def test_a_service_payload_that_is_no_map_is_left_alone(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await answer(ann, Join(1, "listed:x"))).payload == ["welcome"]


async def test_history_reads_are_bounded_and_say_whether_anything_is_lost(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw(buffer=1000)
        epoch = (await answer(ann, Join(1, "feed:h"))).payload["epoch"]
        await publish_all(hub.runtime, "feed:h", 10)
        await read_frames(ann, 10)

        async def history(ref: int, payload: Payload) -> Payload:
            reply = await answer(ann, Call(ref, "feed:h", "$history", payload))
            assert reply.ok, reply
            return reply.payload

        def offsets(answer: Payload) -> list[int]:
            return [event["offset"] for event in answer["events"]]  # type: ignore[index, call-overload]

        # A limit above the configured maximum is cut to it; none means the maximum.
        first = await history(2, {"after": 2, "epoch": epoch, "limit": 1000})
        assert offsets(first) == [3, 4, 5, 6]
        assert first["events"][0] == {"event": "n", "payload": {"n": 3}, "offset": 3}  # type: ignore[index, call-overload]
        assert (first["recovered"], first["epoch"], first["offset"]) == (True, epoch, 10)  # type: ignore[index, call-overload]
        assert offsets(await history(3, None)) == [1, 2, 3, 4]
        # Paging on from the last offset read; the end is an empty page.
        assert offsets(await history(4, {"after": 6, "limit": 2})) == [7, 8]
        end = await history(5, {"after": 10, "epoch": epoch})
        assert end["events"] == [] and end["recovered"] is True  # type: ignore[index, call-overload]
        # Another epoch: not recovered, and what is kept from its start.
        stale = await history(6, {"after": 8, "epoch": "gone"})
        assert stale["recovered"] is False and offsets(stale) == [1, 2, 3, 4]  # type: ignore[index, call-overload]


async def test_history_read_past_what_is_kept_is_not_recovered(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await answer(ann, Join(1, "feed:k"))).ok
        assert (await answer(ann, Leave(2, "feed:k"))).ok
        await publish_all(hub.runtime, "feed:k", HISTORY_SIZE + 2)
        assert (await answer(ann, Join(3, "feed:k"))).ok
        reply = await answer(ann, Call(4, "feed:k", "$history", {"after": 0}))
        assert reply.payload["recovered"] is False
        assert [event["offset"] for event in reply.payload["events"]] == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("payload", "quoted"),
    [
        ({"limit": 0}, "'limit'"),
        ({"after": -1}, "'after'"),
        ({"after": "5"}, "'after'"),
        ({"after": 1.5}, "'after'"),
        ({"epoch": 7}, "'epoch'"),
        ({"epoch": ""}, "'epoch'"),
        ({"since": 3}, "'since'"),
        ("everything", "a map"),
    ],
)
async def test_a_bad_history_request_is_a_bad_field_error(
    hub: TestHub,
    autojump_clock: trio.testing.MockClock,
    payload: Payload,
    quoted: str,
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await answer(ann, Join(1, "feed:bad"))).ok
        reply = await answer(ann, Call(2, "feed:bad", "$history", payload))
        assert reply.error_code == "bad_field" and quoted in (reply.error_message or "")


async def test_dollar_events_are_the_hubs(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await answer(ann, Join(1, "feed:d"))).ok
        published = await answer(ann, Publish(2, "feed:d", "$history", {}))
        assert published.error_code == "unknown_event"
        unknown = await answer(ann, Call(3, "feed:d", "$secret"))
        assert unknown.error_code == "unknown_event" and "$history" in (unknown.error_message or "")
        # The service saw neither: nothing was kept or broadcast.
        assert hub.runtime.topics.whereis("feed:d") is not None
        history = await answer(ann, Call(4, "feed:d", "$history"))
        assert history.payload["offset"] == 0 and history.payload["events"] == []


async def test_the_history_permission_is_checked_for_history_reads(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await answer(ann, Join(1, "private:p"))).ok
        reply = await answer(ann, Call(2, "private:p", "$history"))
        assert reply.error_code == "forbidden"


async def test_a_rejoin_does_not_replay_history_the_route_does_not_let_the_member_read(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    # Recovery is a history read: without the history permission a rejoin
    # naming offset 0 gets nothing replayed (it would be `$history` by
    # another door), and is told it did not recover.
    with trio.fail_after(30):
        ann = hub.open_raw()
        epoch = (await answer(ann, Join(1, "private:r"))).payload["epoch"]
        await publish_all(hub.runtime, "private:r", 3)
        assert len(numbers(await read_frames(ann, 3))) == 3
        assert (await answer(ann, Leave(2, "private:r"))).ok
        rejoin = await answer(ann, Join(3, "private:r", {}, 0, epoch))
        assert rejoin.payload["recovered"] is False
        # Nothing was replayed: the next frame answers a call.
        pong = await answer(ann, Call(4, "private:r", "ping"))
        assert pong == Reply(4, "private:r", True, "pong")
        # Where reading history is allowed, the same rejoin gets all three.
        epoch = (await answer(ann, Join(5, "feed:r"))).payload["epoch"]
        await publish_all(hub.runtime, "feed:r", 3)
        await read_frames(ann, 3)
        assert (await answer(ann, Leave(6, "feed:r"))).ok
        send(ann, Join(7, "feed:r", {}, 0, epoch))
        frames = await read_frames(ann, 4)
        assert frames[0].payload["recovered"] is True  # type: ignore[union-attr]
        assert numbers(frames[1:]) == [(1, 1), (2, 2), (3, 3)]


async def test_a_slow_consumer_cut_with_1013_recovers_everything_on_reconnect(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    """Evicted, then rejoined with its last position: no event lost within the history."""
    total = 40
    with trio.fail_after(30):
        ann = hub.open_raw(buffer=4, outbox_capacity=8)
        epoch = (await answer(ann, Join(1, "feed:slow"))).payload["epoch"]
        # Ann reads nothing while 40 events go out: her outbox overflows.
        await publish_all(hub.runtime, "feed:slow", total)
        seen: list[tuple[int | None, Payload]] = []
        with pytest.raises(TransportClosed) as closed:
            while True:
                seen.extend(numbers(await read_frames(ann, 1)))
        assert closed.value.code == 1013
        assert 0 < len(seen) < total
        last_offset = seen[-1][0]

        again = hub.open_raw(buffer=1000)
        rejoined = await answer(again, Join(1, "feed:slow", {}, last_offset, epoch))
        assert rejoined.payload["recovered"] is True
        rest = await read_until(again, Push("feed:slow", "n", {"n": total}, total))
        seen.extend(numbers(rest))
        assert seen == [(number, number) for number in range(1, total + 1)]


async def test_a_room_rejoined_from_an_old_epoch_sends_its_whole_recent_history(
    hub: TestHub, autojump_clock: trio.testing.MockClock
) -> None:
    """Offsets of the old epoch mean nothing in the new one: none of the new events is skipped."""
    with trio.fail_after(EMPTY_GRACE + RETENTION + 60):
        ann = hub.open_raw(buffer=1000)
        epoch = (await answer(ann, Join(1, "room:new", {"user": "ann"}))).payload["epoch"]
        for text in ("a", "b", "c"):
            send(ann, Publish(0, "room:new", "message", {"text": text}))
        await read_frames(ann, 3)
        assert (await answer(ann, Leave(2, "room:new"))).ok
        await trio.sleep(EMPTY_GRACE + RETENTION + 1)
        for text in ("x", "y", "z"):
            await hub.runtime.publish("room:new", "message", {"text": text})
        again = await answer(ann, Join(3, "room:new", {"user": "ann"}, 2, epoch))
        assert again.payload["recovered"] is False and again.payload["offset"] == 3
        frames = await read_frames(ann, 3)
        assert [push.payload["text"] for push in frames] == ["x", "y", "z"]  # type: ignore[union-attr, index]
