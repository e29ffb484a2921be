"""The backplane interface's test suite: every implementation must pass it.

Parametrized by the `backplane` fixture (tests/backplane/conftest.py); a new
implementation (Redis) joins by adding itself there.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hub.backplane import Backplane, Position, Record, recovery_for


def record(topic: str, position: Position, offset: int | None, event: str = "e") -> Record:
    return Record(topic, event, {"n": offset}, position.epoch, offset)


async def publish_kept(backplane: Backplane, topic: str, count: int) -> Position:
    """Publish `count` kept records after the topic's position; return the new position."""
    position = await backplane.position(topic)
    for offset in range(position.offset + 1, position.offset + count + 1):
        backplane.publish(record(topic, position, offset))
    return Position(position.epoch, position.offset + count)


async def test_a_new_topic_starts_at_offset_zero_of_a_fresh_epoch(backplane: Backplane) -> None:
    first = await backplane.position("t:new")
    other = await backplane.position("t:other")
    assert first.offset == 0 and other.offset == 0
    assert first.epoch and first.epoch != other.epoch
    assert await backplane.position("t:new") == first


async def test_records_reach_the_node_subscribed_in_publish_order(backplane: Backplane) -> None:
    received: list[Record] = []
    backplane.subscribe("t:order", received.append)
    position = await backplane.position("t:order")
    sent = [record("t:order", position, offset) for offset in range(1, 51)]
    sent.insert(10, record("t:order", position, None, event="volatile"))
    for item in sent:
        backplane.publish(item)
    with trio.fail_after(5):
        while len(received) < len(sent):
            await trio.testing.wait_all_tasks_blocked()
    assert received == sent


async def test_records_keep_how_they_are_delivered(backplane: Backplane) -> None:
    received: list[Record] = []
    backplane.subscribe("t:delivery", received.append)
    position = await backplane.position("t:delivery")
    sent = [
        Record("t:delivery", "state", {"tick": 1}, position.epoch, key="state"),
        Record("t:delivery", "spark", {"x": 1}, position.epoch, volatile=True),
        Record("t:delivery", "cursor", None, position.epoch, latest_only=True, exclude="c1"),
    ]
    for item in sent:
        backplane.publish(item)
    with trio.fail_after(5):
        while len(received) < len(sent):
            await trio.testing.wait_all_tasks_blocked()
    assert received == sent


async def test_a_topic_not_subscribed_reaches_no_one_and_unsubscribe_stops(
    backplane: Backplane,
) -> None:
    received: list[Record] = []
    backplane.subscribe("t:sub", received.append)
    position = await backplane.position("t:sub")
    backplane.publish(record("t:other-topic", await backplane.position("t:other-topic"), 1))
    backplane.publish(record("t:sub", position, 1))
    backplane.unsubscribe("t:sub")
    backplane.publish(record("t:sub", position, 2))
    await trio.testing.wait_all_tasks_blocked()
    assert [item.offset for item in received] == [1]


async def test_history_returns_what_was_kept_after_an_offset(backplane: Backplane) -> None:
    position = await publish_kept(backplane, "t:hist", 10)
    history = await backplane.history("t:hist", after=6)
    assert history.position == position
    assert [item.offset for item in history.records] == [7, 8, 9, 10]
    assert history.complete
    caught_up = await backplane.history("t:hist", after=10)
    assert caught_up.records == [] and caught_up.complete


async def test_history_is_bounded_and_says_when_it_is_incomplete(
    small_backplane: Backplane,
) -> None:
    # `small_backplane` keeps 5 records per topic.
    await publish_kept(small_backplane, "t:small", 12)
    history = await small_backplane.history("t:small", after=3)
    assert [item.offset for item in history.records] == [8, 9, 10, 11, 12]
    assert not history.complete  # 4 to 7 are gone
    assert (await small_backplane.history("t:small", after=7)).complete
    limited = await small_backplane.history("t:small", after=7, limit=2)
    assert [item.offset for item in limited.records] == [8, 9] and not limited.complete


async def test_volatile_records_are_not_kept_and_take_no_offset(backplane: Backplane) -> None:
    position = await backplane.position("t:vol")
    backplane.publish(record("t:vol", position, None))
    backplane.publish(record("t:vol", position, 1))
    assert (await backplane.position("t:vol")).offset == 1
    assert [item.offset for item in (await backplane.history("t:vol", after=0)).records] == [1]


async def test_an_offset_out_of_sequence_is_refused(backplane: Backplane) -> None:
    position = await publish_kept(backplane, "t:seq", 3)
    with pytest.raises(ValueError, match="does not follow"):
        backplane.publish(record("t:seq", position, 5))
    with pytest.raises(ValueError, match="does not follow"):
        backplane.publish(Record("t:seq", "e", None, "another-epoch", 4))
    assert (await backplane.position("t:seq")) == position


async def test_history_outlives_its_owner_for_the_retention_then_a_new_epoch_starts(
    backplane: Backplane, autojump_clock: trio.testing.MockClock
) -> None:
    # `backplane` keeps a released topic's history for 60 s.
    backplane.claim("t:ret")
    position = await publish_kept(backplane, "t:ret", 3)
    backplane.release("t:ret")
    await trio.sleep(59)
    assert await backplane.position("t:ret") == position  # still kept
    backplane.claim("t:ret")  # an owner again: kept as long as it runs
    await trio.sleep(600)
    assert await backplane.position("t:ret") == position
    backplane.release("t:ret")
    await trio.sleep(61)
    fresh = await backplane.position("t:ret")
    assert fresh.offset == 0 and fresh.epoch != position.epoch
    assert (await backplane.history("t:ret", after=0)).records == []


async def test_a_rejoin_is_judged_by_epoch_and_offset(
    backplane: Backplane, small_backplane: Backplane
) -> None:
    position = await publish_kept(backplane, "t:rejoin", 6)
    history = await backplane.history("t:rejoin", after=4)
    recovery = recovery_for(history, position.epoch, 4)
    assert recovery.recovered and [item.offset for item in recovery.missed] == [5, 6]
    assert not recovery_for(history, "old-epoch", 4).recovered
    assert not recovery_for(await backplane.history("t:rejoin", after=0), None, None).recovered
    # Offsets from before what is kept: not recoverable, whatever the epoch.
    small_position = await publish_kept(small_backplane, "t:rejoin", 12)
    gone = await small_backplane.history("t:rejoin", after=2)
    assert not recovery_for(gone, small_position.epoch, 2).recovered
    # An offset from the future of this epoch: the client is confused; not recovered.
    ahead = await backplane.history("t:rejoin", after=99)
    assert not recovery_for(ahead, position.epoch, 99).recovered


# --- the cluster's calls: node messages, leases, heartbeats ---------------------------


async def test_a_subscription_takes_effect_before_subscribed_returns(
    backplane: Backplane,
) -> None:
    received: list[Record] = []
    backplane.subscribe("t:live", received.append)
    with trio.fail_after(5):
        await backplane.subscribed("t:live")
    position = await backplane.position("t:live")
    backplane.publish(record("t:live", position, 1))
    with trio.fail_after(5):
        while not received:
            await trio.testing.wait_all_tasks_blocked()


async def test_messages_sent_to_a_node_reach_its_handler_in_order(backplane: Backplane) -> None:
    received: list[bytes] = []
    backplane.on_node_message(received.append)
    sent = [f"m{n}".encode() for n in range(30)]
    for message in sent:
        backplane.send_to_node(backplane.node, message)
    with trio.fail_after(5):
        while len(received) < len(sent):
            await trio.testing.wait_all_tasks_blocked()
    assert received == sent
    backplane.on_node_message(None)
    backplane.send_to_node(backplane.node, b"dropped")
    assert received == sent


async def test_a_lease_is_taken_renewed_and_given_back(backplane: Backplane) -> None:
    me = backplane.node
    assert await backplane.acquire_lease("t:lease", ttl=30) == me
    assert await backplane.acquire_lease("t:lease", ttl=30) == me  # ours already
    assert await backplane.lease_holders(["t:lease"]) == [me]
    assert await backplane.renew_leases(["t:lease"], ttl=30) == []
    backplane.release_lease("t:lease")
    # Free again (in process, this node is the one node: always the holder).
    assert await backplane.acquire_lease("t:lease", ttl=30) == me


async def test_a_heartbeat_says_which_nodes_are_alive(backplane: Backplane) -> None:
    await backplane.heartbeat(ttl=30)
    assert await backplane.nodes_alive([backplane.node, "no-such-node"]) == [True, False]
    assert await backplane.nodes_alive([]) == []
