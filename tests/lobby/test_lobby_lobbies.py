"""Lobbies: a capacity and a clear refusal when full, kicks, a ready check and its timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from lobby_support import Player, config

from examples.lobby.app import make_app
from hub.app import HubRuntime, serve_hub

READY_TIMEOUT = 15.0


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    yield await nursery.start(serve_hub, make_app(ready_timeout=READY_TIMEOUT), config())


async def players(runtime: HubRuntime, nursery: trio.Nursery, *names: str) -> list[Player]:
    return [await Player.connect(runtime, nursery, name) for name in names]


async def test_a_full_lobby_refuses_a_join_with_lobby_full(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        ada, bob, cy = await players(runtime, nursery, "ada", "bob", "cy")
        assert (await ada.join("lobby:a", {"capacity": 2})).payload["host"] == "ada"
        assert (await bob.join("lobby:a")).ok
        refused = await cy.join("lobby:a")
        assert not refused.ok and refused.error_code == "lobby_full"
        state = await bob.next_push("lobby:a", "lobby")
        while [p["name"] for p in state["players"]] != ["ada", "bob"]:
            state = await bob.next_push("lobby:a", "lobby")
        assert state["capacity"] == 2 and state["host"] == "ada"
        # One leaves: there is room again.
        assert (await bob.leave("lobby:a")).ok
        assert (await cy.join("lobby:a")).ok


async def test_a_bad_capacity_is_refused_and_an_anonymous_player_too(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        [ada] = await players(runtime, nursery, "ada")
        refused = await ada.join("lobby:b", {"capacity": 100})
        assert not refused.ok and refused.error_code == "bad_settings"
        nobody = await Player.connect(runtime, nursery, "")
        refused = await nobody.join("lobby:b")
        assert not refused.ok and refused.error_code == "anonymous"


async def test_only_the_host_kicks_and_the_kicked_player_is_told(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        ada, bob, cy = await players(runtime, nursery, "ada", "bob", "cy")
        for player in (ada, bob, cy):
            assert (await player.join("lobby:k")).ok
        refused = await bob.publish("lobby:k", "kick", {"player": "cy"})
        assert not refused.ok and refused.error_code == "not_host"
        assert (await ada.publish("lobby:k", "kick", {"player": "cy"})).ok
        ended = await cy.ended("lobby:k")
        assert ended.code == "kicked"


async def test_a_ready_check_removes_who_is_not_ready_when_its_time_is_up(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        ada, bob, cy = await players(runtime, nursery, "ada", "bob", "cy")
        for player in (ada, bob, cy):
            assert (await player.join("lobby:r")).ok
        assert (await ada.publish("lobby:r", "ready", {"ready": True})).ok
        assert (await bob.publish("lobby:r", "ready", {"ready": True})).ok
        started = trio.current_time()
        assert (await ada.publish("lobby:r", "start")).ok
        assert (await cy.next_push("lobby:r", "ready_check")) == {"seconds": READY_TIMEOUT}
        # Nothing happens before the timeout...
        await trio.sleep(READY_TIMEOUT - 0.5)
        cy.drain_nowait()
        assert not any(getattr(frame, "code", None) for frame in cy.unread)
        # ...then cy, not ready, is out, and the lobby waits again.
        ended = await cy.ended("lobby:r")
        assert ended.code == "not_ready"
        assert trio.current_time() - started == pytest.approx(READY_TIMEOUT, abs=0.01)
        failed = await ada.next_push("lobby:r", "ready_check_failed")
        assert failed == {"not_ready": ["cy"]}
        state = await ada.next_push("lobby:r", "lobby")
        while state["ready_check"] or len(state["players"]) != 2:
            state = await ada.next_push("lobby:r", "lobby")
        assert [p["name"] for p in state["players"]] == ["ada", "bob"]


async def test_everyone_ready_within_the_check_starts_a_match_they_can_join(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        ada, bob = await players(runtime, nursery, "ada", "bob")
        assert (await ada.join("lobby:m", {"settings": {"target": 3}})).ok
        assert (await bob.join("lobby:m")).ok
        assert (await ada.publish("lobby:m", "start")).ok
        await trio.sleep(READY_TIMEOUT / 2)
        assert (await ada.publish("lobby:m", "ready")).ok
        assert (await bob.publish("lobby:m", "ready")).ok
        found = await bob.next_push("lobby:m", "match_found")
        assert found["players"] == ["ada", "bob"]
        topic = found["topic"]
        assert topic.startswith("match:") and runtime.topics.whereis(topic) is not None
        joined = await bob.join(topic)
        assert joined.ok and joined.payload["slot"] == 1
        # An outsider may not join the match.
        [cy] = await players(runtime, nursery, "cy")
        refused = await cy.join(topic)
        assert not refused.ok and refused.error_code == "not_in_match"


async def test_who_is_in_a_lobby_is_its_presence_and_a_reload_is_no_leave(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ada, bob = await players(runtime, nursery, "ada", "bob")
        assert (await ada.join("lobby:p", {"$presence": {}})).ok
        assert set(await ada.next_push("lobby:p", "$presence_state")) == {"ada"}
        assert (await bob.join("lobby:p", {"$presence": {}})).ok
        assert set(await bob.next_push("lobby:p", "$presence_state")) == {"ada", "bob"}
        joined = await ada.next_push("lobby:p", "$presence_diff")
        while "bob" not in joined["joins"]:
            joined = await ada.next_push("lobby:p", "$presence_diff")
        assert not joined["leaves"]
        # bob's connection drops and comes back within the presence grace:
        # ada sees no leave, and the lobby has bob again.
        bob.client.close()
        await trio.sleep(1)
        bob = await Player.connect(runtime, nursery, "bob")
        assert (await bob.join("lobby:p", {"$presence": {}})).ok
        assert set(await bob.next_push("lobby:p", "$presence_state")) == {"ada", "bob"}
        await trio.sleep(10)
        ada.drain_nowait()
        diffs = ada.pushes("lobby:p", "$presence_diff")
        assert not any("bob" in diff["leaves"] for diff in diffs)
        state = await ada.latest("lobby:p", "lobby")
        assert [p["name"] for p in state["players"]] == ["ada", "bob"]
