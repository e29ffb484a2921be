"""Presence, over memory transports on trio's autojump clock.

The guarantees of docs/presence.md, each in a test that fails without it: a
reconnect within the grace shows nothing, a leave after it; a late leave
does not remove a newer entry; two devices are one user; meta updates
reach the others; coalesced diffs keep to their interval whatever the
churn; counts only; an impostor is refused; the server-side API.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
import trio.testing
from memory_support import connect_memory, read_frames

import actors
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, PresenceConfig, ServerConfig
from hub.identity import Identity
from hub.permissions import Allow, Permissions
from hub.presence import (
    Claim,
    Presence,
    PresenceChanged,
    PresenceSnapshot,
    PresenceState,
    PresenceView,
)
from hub.protocol import JSON, Call, Ended, Frame, Join, Leave, Payload, Publish, Push, Reply
from hub.services import RoomService, Service
from hub.topics import Member
from hub.transport import MemoryClient

GRACE = 5.0
INTERVAL = 0.5


class Open(Service):
    """Takes everyone, and any event; answers every call with None (a barrier)."""

    seen: list[str] = []

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        Open.seen.append(event)

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return None


class Watcher(actors.Actor):
    """A backend actor that keeps what a topic's presence sends it."""

    received: list[object] = []

    async def handle(self, message: object) -> None:
        Watcher.received.append(message)


def app() -> Hub:
    hub = Hub("presence")
    hub.route("room:*", RoomService)
    hub.route("auth:*", Open, presence=Presence())
    hub.route("co:*", Open, presence=Presence(mode="coalesced", user_param="user"))
    hub.route("count:*", Open, presence=Presence(mode="counts", user_param="user"))
    hub.route("none:*", Open)
    hub.route(
        "private:*",
        Open,
        presence=Presence(user_param="user"),
        permissions=Permissions(presence=Allow.AUTHENTICATED),
    )
    hub.actor("watcher", Watcher)
    return hub


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    Open.seen = []
    Watcher.received = []
    config = HubConfig(
        server=ServerConfig(port=0),
        presence=PresenceConfig(grace_seconds=GRACE, interval_seconds=INTERVAL),
    )
    running: HubRuntime = await nursery.start(serve_hub, app(), config)
    yield running


class Client:
    """A memory client that keeps every presence push it reads in a PresenceView."""

    def __init__(self, wire: MemoryClient, done: trio.Event) -> None:
        self.wire = wire
        self.done = done
        self.view = PresenceView()
        self.frames: list[Frame] = []
        self._ref = 0

    @classmethod
    async def open(
        cls, runtime: HubRuntime, nursery: trio.Nursery, *, identity: object = None
    ) -> Client:
        wire, done = await connect_memory(runtime, nursery, identity=identity, buffer=256)
        return cls(wire, done)

    def next_ref(self) -> int:
        self._ref += 1
        return self._ref

    async def join(
        self, topic: str, params: Mapping[str, Payload] | None = None, *, listen: bool = True
    ) -> Reply:
        """Join `topic`; with `listen`, asking for presence pushes (`$presence` param)."""
        params = dict(params or {})
        if listen:
            params.setdefault("$presence", {})
        ref = self.next_ref()
        self.wire.send(JSON.encode(Join(ref, topic, params)))
        return await self.reply(ref)

    async def reply(self, ref: int) -> Reply:
        """Read (keeping every push) until the Reply to `ref`."""
        while True:
            [frame] = await read_frames(self.wire, 1)
            if isinstance(frame, Reply) and frame.ref == ref:
                return frame
            self.keep(frame)

    def keep(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, Push):
            if frame.event == "$presence_state":
                self.view.sync_state(frame.payload)
            elif frame.event == "$presence_diff":
                self.view.sync_diff(frame.payload)
            elif frame.event == "$presence_count":
                self.view.sync_counts(frame.payload)

    async def barrier(self, topic: str) -> list[Frame]:
        """Every frame the topic sent before now (a call's Reply comes after them)."""
        before = len(self.frames)
        ref = self.next_ref()
        self.wire.send(JSON.encode(Call(ref, topic, "members" if "room" in topic else "x")))
        await self.reply(ref)
        return self.frames[before:]

    def diffs(self, frames: list[Frame] | None = None) -> list[Push]:
        return [
            frame
            for frame in (self.frames if frames is None else frames)
            if isinstance(frame, Push) and frame.event == "$presence_diff"
        ]


def entries(view: PresenceView, user: str) -> list[Mapping[str, Any]]:
    return view.users().get(user, [])


async def test_a_reconnect_within_the_grace_shows_no_leave_and_no_join(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:g", {"user": "bob"})).ok
        alice = await Client.open(runtime, nursery)
        assert (await alice.join("room:g", {"user": "alice"})).ok
        await bob.barrier("room:g")
        [first] = entries(bob.view, "alice")
        alice.wire.close()  # the connection drops, no Leave
        await alice.done.wait()
        await trio.sleep(GRACE / 2)
        again = await Client.open(runtime, nursery)
        assert (await again.join("room:g", {"user": "alice"})).ok
        seen = await bob.barrier("room:g")
        await trio.sleep(GRACE * 2)
        seen += await bob.barrier("room:g")
        # Bob saw alice neither leave nor join: no diff at all.
        assert bob.diffs(seen) == []
        assert entries(bob.view, "alice") == [first]
        # Alice's new session holds the same entry, of a newer generation.
        await again.barrier("room:g")
        [taken] = entries(again.view, "alice")
        assert taken["id"] == first["id"] and taken["gen"] > first["gen"]


async def test_an_ended_connection_leaves_after_the_grace(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:l", {"user": "bob"})).ok
        alice = await Client.open(runtime, nursery)
        assert (await alice.join("room:l", {"user": "alice"})).ok
        await bob.barrier("room:l")
        alice.wire.close()
        await alice.done.wait()
        ended = trio.current_time()
        await trio.sleep(GRACE - 0.5)
        assert bob.diffs(await bob.barrier("room:l")) == []
        assert "alice" in bob.view
        # The leave arrives when the grace ends, by itself.
        [frame] = await read_frames(bob.wire, 1)
        bob.keep(frame)
        assert isinstance(frame, Push) and frame.event == "$presence_diff"
        assert set(frame.payload["leaves"]) == {"alice"} and frame.payload["joins"] == {}
        assert trio.current_time() - ended == pytest.approx(GRACE, abs=0.1)
        assert "alice" not in bob.view and "bob" in bob.view


async def test_a_leave_goes_at_once_and_a_grace_of_zero_too(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:q", {"user": "bob"})).ok
        alice = await Client.open(runtime, nursery)
        assert (await alice.join("room:q", {"user": "alice"})).ok
        await bob.barrier("room:q")
        alice.wire.send(JSON.encode(Leave(9, "room:q")))
        await alice.reply(9)
        left = bob.diffs(await bob.barrier("room:q"))
        assert [set(diff.payload["leaves"]) for diff in left] == [{"alice"}]


async def test_a_late_leave_does_not_remove_a_newer_entry(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:z", {"user": "bob"})).ok
        device = {"user": "alice", "$presence": {"key": "tab-secret-1"}}
        old = await Client.open(runtime, nursery)
        assert (await old.join("room:z", device)).ok
        # The same tab reconnects before the hub knows its old connection is dead.
        new = await Client.open(runtime, nursery)
        assert (await new.join("room:z", device)).ok
        await bob.barrier("room:z")
        [newer] = entries(bob.view, "alice")
        # Now the old connection's end (its leave) comes, late.
        old.wire.close()
        await old.done.wait()
        await trio.sleep(GRACE * 2)
        await bob.barrier("room:z")
        assert [entry["id"] for entry in entries(bob.view, "alice")] == [newer["id"]]
        snapshot = await runtime.presence("room:z")
        [kept] = snapshot.users["alice"]
        assert kept.gen == newer["gen"] or kept.gen > newer["gen"]
        assert kept.id == newer["id"]


def test_a_removal_for_an_older_generation_removes_nothing() -> None:
    state = PresenceState()
    first, _ = state.track("a", Claim("alice", authenticated=True, key="k"))
    second, _ = state.track("b", Claim("alice", authenticated=True, key="k"))
    assert second.id == first.id and second.gen > first.gen
    assert not state.remove(first.id, first.gen)
    assert state.untrack("a", grace_until=None) is None  # a's entry is b's now
    assert state.entries("alice") == (second,)
    assert state.remove(second.id, second.gen)
    assert state.user_count == 0


async def test_two_devices_of_one_user_are_one_user_with_two_entries(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery, identity=Identity("bob"))
        assert (await bob.join("auth:d")).ok
        phone = await Client.open(runtime, nursery, identity=Identity("alice"))
        laptop = await Client.open(runtime, nursery, identity=Identity("alice"))
        assert (await phone.join("auth:d")).ok
        assert (await laptop.join("auth:d")).ok
        await bob.barrier("auth:d")
        assert sorted(bob.view.users()) == ["alice", "bob"]
        assert len(entries(bob.view, "alice")) == 2
        assert (await runtime.presence("auth:d")).count == 2
        # One device leaves: alice is still here, on the other.
        phone.wire.send(JSON.encode(Leave(50, "auth:d")))
        await phone.reply(50)
        await bob.barrier("auth:d")
        assert len(entries(bob.view, "alice")) == 1
        # The last device leaves: so does alice.
        laptop.wire.send(JSON.encode(Leave(51, "auth:d")))
        await laptop.reply(51)
        await bob.barrier("auth:d")
        assert list(bob.view.users()) == ["bob"]


async def test_a_members_meta_update_reaches_the_others(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:m", {"user": "bob"})).ok
        alice = await Client.open(runtime, nursery)
        params = {"user": "alice", "$presence": {"meta": {"status": "online"}}}
        assert (await alice.join("room:m", params)).ok
        await bob.barrier("room:m")
        assert entries(bob.view, "alice")[0]["meta"] == {"status": "online"}
        alice.wire.send(JSON.encode(Publish(7, "room:m", "$presence", {"typing": True})))
        assert (await alice.reply(7)).ok
        await bob.barrier("room:m")
        assert entries(bob.view, "alice")[0]["meta"] == {"status": "online", "typing": True}
        # A null removes a key.
        alice.wire.send(JSON.encode(Publish(8, "room:m", "$presence", {"typing": None})))
        assert (await alice.reply(8)).ok
        await bob.barrier("room:m")
        assert entries(bob.view, "alice")[0]["meta"] == {"status": "online"}
        # Meta is bounded, and must be a map.
        alice.wire.send(JSON.encode(Publish(9, "room:m", "$presence", {"x": "y" * 5000})))
        too_large = await alice.reply(9)
        assert not too_large.ok and too_large.payload["code"] == "too_large"
        alice.wire.send(JSON.encode(Publish(10, "room:m", "$presence", ["away"])))
        not_a_map = await alice.reply(10)
        assert not not_a_map.ok and not_a_map.payload["code"] == "bad_field"
        # Other '$' events are the hub's, and no service sees them.
        alice.wire.send(JSON.encode(Publish(11, "room:m", "$history", {})))
        refused = await alice.reply(11)
        assert not refused.ok and refused.payload["code"] == "unknown_event"


async def test_coalesced_diffs_keep_to_their_interval_whatever_the_churn(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    joiners = 1000
    with trio.fail_after(120):
        watcher = await Client.open(runtime, nursery)
        assert (await watcher.join("co:big", {"user": "watcher"})).ok
        arrivals: list[float] = []
        everyone = trio.Event()

        async def watch() -> None:
            while True:
                [frame] = await read_frames(watcher.wire, 1)
                watcher.keep(frame)
                if isinstance(frame, Push) and frame.event == "$presence_diff":
                    arrivals.append(trio.current_time())
                if len(watcher.view) == joiners + 1:
                    everyone.set()

        nursery.start_soon(watch)
        clients = []
        for index in range(joiners):
            client = await Client.open(runtime, nursery)
            params = {"user": f"u{index}", "$presence": {}}
            client.wire.send(JSON.encode(Join(1, "co:big", params)))
            clients.append(client)
            if index % 100 == 99:
                await trio.sleep(0.1)  # a burst spread over a second of arrivals
        await everyone.wait()
        # Every arrival is known, in a handful of pushes at most one per interval.
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert all(gap >= INTERVAL - 1e-9 for gap in gaps), gaps
        assert 1 <= len(arrivals) <= 5
        # A client that never read much is not evicted by them either.
        assert runtime.metrics.slow_consumers._value.get() == 0


async def test_counts_mode_pushes_counts_only(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        watcher = await Client.open(runtime, nursery)
        assert (await watcher.join("count:c", {"user": "watcher"})).ok
        for index in range(50):
            client = await Client.open(runtime, nursery)
            assert (await client.join("count:c", {"user": f"u{index}"})).ok
        await trio.sleep(INTERVAL * 2)
        await watcher.barrier("count:c")
        events = {frame.event for frame in watcher.frames if isinstance(frame, Push)}
        assert events == {"$presence_count"}
        assert watcher.view.counts == {"users": 51, "connections": 51}
        assert len(watcher.frames) <= 3  # its own count, then one per interval at most


async def test_an_impostor_is_refused(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        alice = await Client.open(runtime, nursery)
        assert (await alice.join("room:i", {"user": "alice"})).ok
        impostor = await Client.open(runtime, nursery)
        refused = await impostor.join("room:i", {"user": "alice"})
        assert not refused.ok and refused.payload["code"] == "name_taken"
        # Nor may it guess its way in with a device key.
        again = await impostor.join("room:i", {"user": "alice", "$presence": {"key": "guess"}})
        assert not again.ok and again.payload["code"] == "name_taken"
        # A user who authenticated as alice speaks as alice whatever its params say...
        real = await Client.open(runtime, nursery, identity=Identity("carol"))
        assert (await real.join("room:i", {"user": "alice"})).ok
        real.wire.send(JSON.encode(Publish(5, "room:i", "message", {"text": "hi"})))
        await real.reply(5)
        [said] = [f for f in real.frames if isinstance(f, Push) and f.event == "message"]
        assert said.payload["user"] == "carol"
        # ...and nobody may take that name from a param, even once she is gone (her ghost).
        squatter = await Client.open(runtime, nursery)
        taken = await squatter.join("room:i", {"user": "carol"})
        assert not taken.ok and taken.payload["code"] == "name_taken"


async def test_the_authenticated_user_displaces_a_name_taken_from_a_param(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        squatter = await Client.open(runtime, nursery)
        assert (await squatter.join("room:s", {"user": "dave"})).ok
        dave = await Client.open(runtime, nursery, identity=Identity("dave"))
        assert (await dave.join("room:s")).ok
        while True:
            [frame] = await read_frames(squatter.wire, 1)
            if isinstance(frame, Ended):
                break
        assert frame.code == "name_taken"
        await dave.barrier("room:s")
        [entry] = entries(dave.view, "dave")
        assert (await runtime.presence("room:s")).users["dave"][0].id == entry["id"]


async def test_a_backend_actor_lists_counts_and_subscribes(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(300):
        assert (await runtime.presence("room:b")).users == {}  # not live: nobody, not started
        assert runtime.topics.whereis("room:b") is None
        watcher = runtime.actor("watcher")
        snapshot = await runtime.subscribe_presence("room:b", watcher)
        assert snapshot == PresenceSnapshot("room:b", {})
        ann = await Client.open(runtime, nursery)
        assert (await ann.join("room:b", {"user": "ann"})).ok
        await ann.barrier("room:b")
        await trio.testing.wait_all_tasks_blocked()
        changes = [m for m in Watcher.received if isinstance(m, PresenceChanged)]
        assert [list(change.diff.joins) for change in changes] == [["ann"]]
        listed = await runtime.presence("room:b")
        assert listed.count == 1 and listed.users["ann"][0].meta == {}
        # A subscribed topic stays live with nobody in it; it stops once unsubscribed.
        ann.wire.send(JSON.encode(Leave(90, "room:b")))
        await ann.reply(90)
        await trio.sleep(60)
        assert runtime.topics.whereis("room:b") is not None
        await runtime.unsubscribe_presence("room:b", watcher)
        await trio.sleep(60)
        assert runtime.topics.whereis("room:b") is None
        # No presence on a route without it, said clearly.
        with pytest.raises(Exception, match="keeps no presence"):
            await runtime.subscribe_presence("none:x", watcher)


async def test_a_route_without_presence_pushes_none(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        ann = await Client.open(runtime, nursery)
        assert (await ann.join("none:n", {"user": "ann"})).ok
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("none:n", {"user": "bob"})).ok
        assert await ann.barrier("none:n") == []
        bob.wire.send(JSON.encode(Publish(3, "none:n", "$presence", {"a": 1})))
        refused = await bob.reply(3)
        assert not refused.ok and refused.payload["code"] == "unknown_event"
        assert Open.seen == []


async def test_a_member_that_did_not_ask_is_present_but_pushed_nothing(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        bot = await Client.open(runtime, nursery)
        assert (await bot.join("room:n", {"user": "bot"}, listen=False)).ok
        ann = await Client.open(runtime, nursery)
        assert (await ann.join("room:n", {"user": "ann"})).ok
        await ann.barrier("room:n")
        assert sorted(ann.view.users()) == ["ann", "bot"]  # the bot is present...
        ann.wire.send(JSON.encode(Publish(4, "room:n", "$presence", {"status": "away"})))
        await ann.reply(4)
        assert await bot.barrier("room:n") == []  # ...and is sent nothing of it


async def test_a_call_of_presence_answers_who_is_here(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        ann = await Client.open(runtime, nursery)
        assert (await ann.join("room:c", {"user": "ann"}, listen=False)).ok
        bob = await Client.open(runtime, nursery)
        assert (await bob.join("room:c", {"user": "bob"}, listen=False)).ok
        ann.wire.send(JSON.encode(Call(5, "room:c", "$presence")))
        answer = await ann.reply(5)
        assert answer.ok and sorted(answer.payload) == ["ann", "bob"]
        ann.wire.send(JSON.encode(Call(6, "room:c", "$nothing")))
        refused = await ann.reply(6)
        assert not refused.ok and refused.payload["code"] == "unknown_event"


async def test_the_routes_presence_permission_decides_who_is_sent_it(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        guest = await Client.open(runtime, nursery)
        assert (await guest.join("private:p", {"user": "guest"})).ok
        ann = await Client.open(runtime, nursery, identity=Identity("ann"))
        assert (await ann.join("private:p")).ok
        await ann.barrier("private:p")
        assert sorted(ann.view.users()) == ["ann", "guest"]  # the guest is present...
        # ...but is sent nobody, and may not ask.
        assert [f for f in await guest.barrier("private:p") if isinstance(f, Push)] == []
        guest.wire.send(JSON.encode(Call(9, "private:p", "$presence")))
        refused = await guest.reply(9)
        assert not refused.ok and refused.payload["code"] == "forbidden"
