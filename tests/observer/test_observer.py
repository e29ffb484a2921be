"""The observer's topic and snapshots, over memory transports on trio's autojump clock.

What a watcher is pushed (on joining, then on the observer's timer, never
by asking), what a snapshot holds (the tree with each actor's state and
restarts, topics with members and rates, connections with their topics and
outboxes, crashes with tracebacks), who may watch, and the bound on a
snapshot's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from join_support import join_ok
from memory_support import connect_memory, read_frames

import actors
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import AdminConfig, HubConfig, ServerConfig, TopicsConfig
from hub.observer import OBSERVER_TOPIC, ObserverIdentity, snapshot
from hub.protocol import JSON, Call, Join, Leave, Publish, Push, Reply
from hub.services import RoomService, Service
from hub.topics import Member

INTERVAL = 2.0
WATCHER = ObserverIdentity()


class Fragile(actors.Actor):
    """A backend actor that crashes when told to."""

    async def handle(self, message: Any) -> None:
        if message == "crash":
            raise RuntimeError("fragile was told to crash")


class Poke(Service):
    async def handle_call(self, member: Member, event: str, payload: Any) -> Any:
        assert self.topic.hub is not None
        self.topic.hub.actor("fragile").cast("crash")
        return "sent"


def app(observer: bool = True) -> Hub:
    hub = Hub("observed", observer=observer)
    hub.route("room:*", RoomService)
    hub.route("poke:*", Poke)
    hub.actor("fragile", Fragile)
    return hub


async def start(nursery: trio.Nursery, hub: Hub) -> HubRuntime:
    config = HubConfig(
        server=ServerConfig(port=0),
        topics=TopicsConfig(empty_grace_seconds=5.0),
        admin=AdminConfig(observer_interval_seconds=INTERVAL),
    )
    runtime: HubRuntime = await nursery.start(serve_hub, hub, config)
    return runtime


async def call(client: Any, frame: Join | Call | Leave) -> Reply:
    client.send(JSON.encode(frame))
    [reply] = await read_frames(client, 1)
    assert isinstance(reply, Reply), reply
    return reply


async def next_snapshot(client: Any) -> Mapping[str, Any]:
    [push] = await read_frames(client, 1)
    assert isinstance(push, Push) and (push.topic, push.event) == (OBSERVER_TOPIC, "snapshot")
    assert isinstance(push.payload, Mapping)
    return push.payload


def find(tree: Mapping[str, Any], child_id: str) -> Mapping[str, Any]:
    """The actor of `child_id` in a snapshot's tree."""
    if tree["child_id"] == child_id:
        return tree
    for child in tree["children"]:
        try:
            return find(child, child_id)
        except LookupError:
            pass
    raise LookupError(child_id)


async def test_the_observer_is_off_unless_the_application_or_the_settings_turn_it_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, app(observer=False))
        assert not runtime.observer
        client, _done = await connect_memory(runtime, nursery, identity=WATCHER)
        refused = await call(client, Join(1, OBSERVER_TOPIC, {}))
        assert (refused.ok, refused.payload["code"]) == (False, "unknown_topic")


async def test_a_watcher_gets_a_snapshot_at_once_then_one_every_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        runtime = await start(nursery, app())
        watcher, _done = await connect_memory(runtime, nursery, identity=WATCHER)
        joined = await call(watcher, Join(1, OBSERVER_TOPIC, {}))
        assert joined == join_ok(1, OBSERVER_TOPIC, {"interval": INTERVAL})
        first = await next_snapshot(watcher)
        at_first = trio.current_time()

        hub = first["hub"]
        assert (hub["name"], hub["connections"], hub["topics"]) == ("observed", 1, 1)
        assert hub["interval"] == INTERVAL
        tree = first["tree"]
        assert tree["kind"] == "supervisor" and tree["state"] == "running"
        assert [child["child_id"] for child in find(tree, "hub")["children"]] == [
            "services",
            "topics",
            "sessions",
        ]
        assert find(tree, "fragile")["restarts"] == 0
        (topic,) = first["topics"]
        assert (topic["name"], topic["route"], topic["members"]) == (OBSERVER_TOPIC,) * 2 + (1,)
        (connection,) = first["connections"]
        assert connection["transport"] == "memory" and connection["observer"] is True
        assert connection["topics"] == [OBSERVER_TOPIC] and connection["outbox"] == 0
        assert first["crashes"] == []

        # Then the observer's timer pushes, the watcher asks for nothing.
        await next_snapshot(watcher)
        assert trio.current_time() - at_first == pytest.approx(INTERVAL)
        await next_snapshot(watcher)
        assert trio.current_time() - at_first == pytest.approx(2 * INTERVAL)


@pytest.mark.hub_logs_errors  # the crash, as its supervisor logs it
async def test_a_snapshot_shows_members_rates_topics_and_a_crash_with_its_restart(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        runtime = await start(nursery, app())
        watcher, _done = await connect_memory(runtime, nursery, identity=WATCHER)
        assert (await call(watcher, Join(1, OBSERVER_TOPIC, {}))).ok
        await next_snapshot(watcher)
        ann, _ = await connect_memory(runtime, nursery)
        bob, _ = await connect_memory(runtime, nursery)
        assert (await call(ann, Join(1, "room:a", {"user": "ann"}))).ok
        assert (await call(bob, Join(1, "room:a", {"user": "bob"}))).ok
        assert (await call(bob, Join(2, "poke:p", {}))).ok
        await next_snapshot(watcher)  # the rates count from here

        for ref in range(2, 8):  # six messages, each pushed to both members
            ann.send(JSON.encode(Publish(ref, "room:a", "message", {"text": f"m{ref}"})))
            await read_frames(ann, 2)  # the Push and the ack
        await read_frames(bob, 6)
        assert (await call(bob, Call(3, "poke:p", "crash", None))).ok
        await trio.testing.wait_all_tasks_blocked()
        shown = await next_snapshot(watcher)

        topics = {topic["name"]: topic for topic in shown["topics"]}
        assert topics["room:a"]["members"] == 2
        assert topics["room:a"]["rate"] == pytest.approx(6 / INTERVAL)
        assert topics["poke:p"]["members"] == 1
        connections = {connection["id"]: connection for connection in shown["connections"]}
        assert sorted(map(tuple, (c["topics"] for c in connections.values()))) == [
            (OBSERVER_TOPIC,),
            ("room:a",),
            ("room:a", "poke:p"),
        ]
        assert shown["hub"]["messages_in_rate"] == pytest.approx(7 / INTERVAL)

        fragile = find(shown["tree"], "fragile")
        assert (fragile["state"], fragile["restarts"]) == ("running", 1)
        (crash,) = shown["crashes"]
        assert crash["actor"].startswith("fragile#") and crash["supervisor"].startswith("services#")
        assert crash["restart"] == "permanent"
        assert crash["error"] == "RuntimeError('fragile was told to crash')"
        assert "Traceback (most recent call last)" in crash["traceback"]
        assert crash["traceback"].rstrip().endswith("RuntimeError: fragile was told to crash")


async def test_only_a_connection_on_the_observer_path_may_watch(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, app())
        client, _done = await connect_memory(runtime, nursery, identity="ann")
        refused = await call(client, Join(1, OBSERVER_TOPIC, {}))
        assert (refused.ok, refused.payload["code"]) == (False, "forbidden")
        assert "/observer/ws" in refused.payload["message"]


async def test_the_snapshots_stop_with_the_last_watcher(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        runtime = await start(nursery, app())
        watcher, _done = await connect_memory(runtime, nursery, identity=WATCHER)
        assert (await call(watcher, Join(1, OBSERVER_TOPIC, {}))).ok
        await next_snapshot(watcher)
        taken: list[float] = []
        original = snapshot.Snapshotter.take

        def counting(self: snapshot.Snapshotter) -> dict[str, Any]:
            taken.append(trio.current_time())
            return original(self)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(snapshot.Snapshotter, "take", counting)
            await next_snapshot(watcher)
            assert len(taken) == 1
            assert (await call(watcher, Leave(2, OBSERVER_TOPIC))).ok
            await trio.sleep(10 * INTERVAL)
        assert len(taken) == 1
        assert runtime.topics.whereis(OBSERVER_TOPIC) is None  # stopped once empty


async def test_a_snapshot_lists_the_busiest_and_counts_the_rest(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "MAX_ROWS", 3)
    monkeypatch.setattr(snapshot, "MAX_CHILDREN", 3)
    with trio.fail_after(60):
        runtime = await start(nursery, app())
        watcher, _done = await connect_memory(runtime, nursery, identity=WATCHER)
        for number in range(5):
            client, _ = await connect_memory(runtime, nursery)
            assert (await call(client, Join(1, f"room:{number}", {"user": "u"}))).ok
        assert (await call(watcher, Join(1, OBSERVER_TOPIC, {}))).ok
        shown = await next_snapshot(watcher)
        assert (len(shown["connections"]), shown["connections_more"]) == (3, 3)
        assert (len(shown["topics"]), shown["topics_more"]) == (3, 3)
        sessions = find(shown["tree"], "sessions")
        assert (len(sessions["children"]), sessions["more"]) == (3, 3)
