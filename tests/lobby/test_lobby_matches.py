"""Match actors: a fixed tick rate, late ticks counted, slow players, coming back, crashes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from lobby_support import Player, config

from examples.lobby.app import make_app
from examples.lobby.match import MatchService
from hub import Member, Payload
from hub.app import HubRuntime, serve_hub
from hub.protocol import Push

GRACE = 10.0
WRITE_TIMEOUT = 1.0


class CrashableMatch(MatchService):
    """A match whose `boom` input is a bug, and whose `stall` makes its next ticks slow."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        if event == "boom":
            raise RuntimeError("a bug in this match")
        if event == "stall":
            self.stalls = int(payload)  # type: ignore[arg-type]
            return
        await super().handle_event(member, event, payload)

    async def handle_timer(self, event: str, payload: Payload) -> None:
        if event == "tick" and getattr(self, "stalls", 0):
            self.stalls -= 1
            await trio.sleep(0.05)  # three ticks' time at 60 Hz
        await super().handle_timer(event, payload)


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = make_app(grace=GRACE)
    app.routes.pop()
    app.route("match:*", functools.partial(CrashableMatch, grace=GRACE))
    yield await nursery.start(serve_hub, app, config(write_timeout=WRITE_TIMEOUT))


async def match(runtime: HubRuntime, topic: str, players: list[str], **init: object) -> None:
    await runtime.start_topic(topic, {"players": players, **init})


async def test_a_60_hz_match_runs_exactly_600_ticks_in_10_s(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        started = trio.current_time()
        await match(runtime, "match:hz", ["ada"], tick_hz=60)
        ada = await Player.connect(runtime, nursery, "ada", buffer=1)
        assert (await ada.join("match:hz")).payload["tick_hz"] == 60
        # 10 s on: the match's first tick came within its first interval (its
        # own phase), so 600 have run and the 601st is still ahead. Ada reads
        # nothing meanwhile (latest-value state).
        await trio.sleep_until(started + 10)
        await trio.testing.wait_all_tasks_blocked()
        ada.drain_nowait()
        await trio.testing.wait_all_tasks_blocked()
        ada.drain_nowait()
        states = ada.pushes("match:hz", "state")
    assert states[-1]["tick"] == 600
    assert states[-1]["missed"] == 0


async def test_late_ticks_are_counted_and_the_rate_kept(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        started = trio.current_time()
        await match(runtime, "match:late", ["ada"], tick_hz=60)
        ada = await Player.connect(runtime, nursery, "ada", buffer=1)
        assert (await ada.join("match:late")).ok
        await trio.sleep(0.5)
        # Two ticks take 50 ms each: three ticks' time at 60 Hz.
        assert (await ada.publish("match:late", "stall", 2)).ok
        await trio.sleep_until(started + 2 + 1 / 120)
        await trio.testing.wait_all_tasks_blocked()
        ada.drain_nowait()
        await trio.testing.wait_all_tasks_blocked()
        ada.drain_nowait()
        last = ada.pushes("match:late", "state")[-1]
    # Every tick of the schedule is either run or counted as missed.
    assert last["missed"] > 0
    assert last["tick"] + last["missed"] == 120
    assert runtime.metrics.ticks_missed._value.get() == last["missed"]


async def test_a_player_stalled_for_2_s_gets_the_newest_state_and_is_not_evicted(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        await match(runtime, "match:slow", ["ada", "bob"])
        ada = await Player.connect(runtime, nursery, "ada")
        bob = await Player.connect(runtime, nursery, "bob", buffer=4)
        assert (await ada.join("match:slow")).ok
        assert (await bob.join("match:slow")).ok
        # bob reads nothing for 2 s (twice the write timeout); ada plays on.
        for seq in range(40):
            ada.publish_nowait("match:slow", "input", {"dx": 1, "dy": 0, "seq": seq})
            await trio.sleep(0.05)
            ada.drain_nowait()
            ada.unread.clear()
        await trio.testing.wait_all_tasks_blocked()
        assert runtime.metrics.slow_consumers._value.get() == 0
        # bob reads: a handful of states, the newest last, and is still in.
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()
            bob.drain_nowait()
        states = bob.pushes("match:slow", "state")
        ada_states = [frame for frame in [await ada.next_push("match:slow", "state")]]
        assert len(states) <= 4 + 1
        assert states[-1]["tick"] >= ada_states[-1]["tick"] - 1
        [ada_seen] = [p for p in states[-1]["players"] if p["name"] == "ada"]
        assert ada_seen["seq"] >= 38, "the newest state carries ada's latest inputs"
        assert (await bob.publish("match:slow", "input", {"dx": 0, "dy": 1, "seq": 1})).ok


async def test_a_player_back_within_the_grace_takes_its_slot_and_after_it_may_not(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        await match(runtime, "match:back", ["ada", "bob"])
        ada = await Player.connect(runtime, nursery, "ada")
        bob = await Player.connect(runtime, nursery, "bob")
        assert (await ada.join("match:back")).ok
        first = await bob.join("match:back")
        slot = first.payload["slot"]
        for seq in range(10):
            bob.publish_nowait("match:back", "input", {"dx": 1, "dy": 1, "seq": seq})
            await trio.sleep(0.05)
        bob.drain_nowait()
        seen = bob.last_offset("match:back")
        assert seen is not None  # the arrivals, kept
        bob.client.close()
        away = await ada.next_push("match:back", "player_away")
        assert away == {"name": "bob", "grace": GRACE}
        await trio.sleep(0.1)  # two ticks
        state = await ada.latest("match:back")
        before = next(p for p in state["players"] if p["name"] == "bob")
        assert before["present"] is False
        await ada.wait(GRACE - 1)
        # Back in time, from a new connection: the same slot, where it was.
        bob = await Player.connect(runtime, nursery, "bob")
        position = await runtime.backplane.position("match:back")
        again = await bob.join("match:back", offset=seen, epoch=position.epoch)
        assert again.ok and again.payload["slot"] == slot
        # What bob missed that was kept comes first: its own going away.
        missed = await bob.next(lambda frame: isinstance(frame, Push) and frame.offset is not None)
        assert isinstance(missed, Push) and missed.offset == seen + 1
        assert (missed.event, missed.payload["name"]) == ("player_away", "bob")
        [mine] = [p for p in again.payload["state"]["players"] if p["name"] == "bob"]
        assert (mine["x"], mine["y"], mine["seq"]) == (before["x"], before["y"], 9)
        assert await ada.next_push("match:back", "player_back") == {"name": "bob"}
        # Away again, past the grace: the match goes on without bob.
        bob.client.close()
        await ada.next_push("match:back", "player_away")
        await ada.wait(GRACE + 0.5)
        left = await ada.next_push("match:back", "player_left")
        assert left["name"] == "bob"
        bob = await Player.connect(runtime, nursery, "bob")
        refused = await bob.join("match:back")
        assert not refused.ok and refused.error_code == "slot_lost"
        state = await ada.latest("match:back")
        await trio.sleep(0.5)
        later = await ada.latest("match:back")
        assert later["tick"] > state["tick"]
        assert [p["name"] for p in later["players"]] == ["ada"]


async def test_one_match_crashing_ends_it_with_match_crashed_and_another_goes_on(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        await match(runtime, "match:one", ["ada", "bob"])
        await match(runtime, "match:two", ["cy"])
        ada = await Player.connect(runtime, nursery, "ada")
        bob = await Player.connect(runtime, nursery, "bob")
        cy = await Player.connect(runtime, nursery, "cy")
        for player, topic in ((ada, "match:one"), (bob, "match:one"), (cy, "match:two")):
            assert (await player.join(topic)).ok
        await trio.sleep(1)
        before = await cy.latest("match:two")
        ada.publish_nowait("match:one", "boom")
        for player in (ada, bob):
            ended = await player.ended("match:one")
            assert (ended.code, ended.reason) == ("match_crashed", "the match crashed; it is over")
        await trio.sleep(1)
        assert runtime.topics.whereis("match:one") is None
        after = await cy.latest("match:two")
        assert after["tick"] >= before["tick"] + 19
        assert (await cy.publish("match:two", "input", {"dx": 1, "dy": 0, "seq": 1})).ok


async def test_a_match_nobody_made_refuses_joins(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        ada = await Player.connect(runtime, nursery, "ada")
        refused = await ada.join("match:made-up")
        assert not refused.ok and refused.error_code == "no_such_match"


async def test_the_inputs_since_the_last_tick_are_applied_in_order_within_a_budget(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        await match(runtime, "match:in", ["ada"])
        ada = await Player.connect(runtime, nursery, "ada")
        assert (await ada.join("match:in")).ok
        await trio.sleep(0.5)
        [before] = (await ada.latest("match:in"))["players"]
        # Twelve inputs before the next tick (more than the budget of 8):
        # left, left, ..., then right last. The last one received wins.
        for seq in range(1, 13):
            ada.publish_nowait("match:in", "input", {"dx": 1 if seq == 12 else -1, "seq": seq})
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.05)
        [after] = (await ada.latest("match:in"))["players"]
    assert after["seq"] == 12
    assert after["x"] > before["x"], "the inputs were applied in the order they came"
