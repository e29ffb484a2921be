"""Matchmaking: by size and a rating band that widens with waiting; parties; leaving."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from lobby_support import Player, config

from examples.lobby.app import make_app
from examples.lobby.matchmaking import BAND_PER_SECOND, BASE_BAND, Ticket, band, form_matches
from hub.app import HubRuntime, serve_hub
from hub.protocol import Ended

MATCH_INTERVAL = 0.5


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = make_app(match_interval=MATCH_INTERVAL)
    yield await nursery.start(serve_hub, app, config())


async def queue(
    runtime: HubRuntime, nursery: trio.Nursery, topic: str, ratings: dict[str, int]
) -> dict[str, Player]:
    queued = {}
    for name, rating in ratings.items():
        player = queued[name] = await Player.connect(runtime, nursery, name)
        reply = await player.join(topic, {"rating": rating})
        assert reply.ok, reply
    return queued


def found(player: Player, topic: str) -> dict | None:
    """The match_found `player` was pushed so far, if any."""
    player.drain_nowait()
    pushes = player.pushes(topic, "match_found")
    return pushes[0] if pushes else None


async def test_ten_queued_players_make_two_four_player_matches_and_two_wait(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        names = [f"p{i}" for i in range(10)]
        queued = await queue(runtime, nursery, "queue:4p", dict.fromkeys(names, 1500))
        await trio.sleep(MATCH_INTERVAL * 3)
        await trio.testing.wait_all_tasks_blocked()
        matches: dict[str, list[str]] = {}
        waiting = []
        for name, player in queued.items():
            match = found(player, "queue:4p")
            if match is None:
                waiting.append(name)
            else:
                matches.setdefault(match["topic"], []).append(name)
                assert name in match["players"]
        assert len(matches) == 2 and all(len(players) == 4 for players in matches.values())
        # The first eight in, in two matches, each of them live; the last two wait.
        assert sorted(name for players in matches.values() for name in players) == names[:8]
        assert waiting == names[8:]
        for topic in matches:
            assert runtime.topics.whereis(topic) is not None
        for name in names[:8]:
            assert (await queued[name].ended("queue:4p")).code == "matched"
        for name in waiting:
            queued[name].drain_nowait()
            assert not any(isinstance(frame, Ended) for frame in queued[name].unread)
        # Matched players join their match and take the slots they were made for.
        topic, players = next(iter(matches.items()))
        for name in players:
            assert (await queued[name].join(topic)).ok


def test_a_rating_band_widens_with_waiting_up_to_its_maximum() -> None:
    assert band(0) == BASE_BAND
    assert band(4) == BASE_BAND + 4 * BAND_PER_SECOND
    assert band(10_000) == band(20_000)
    tickets = [
        Ticket("a", 1, since=0.0, ratings={"a": 1000}),
        Ticket("b", 1, since=0.0, ratings={"b": 1400}),
    ]
    for ticket in tickets:
        ticket.members[next(iter(ticket.ratings))] = object()  # type: ignore[assignment]
    assert form_matches(tickets, 2, now=1.0) == []
    assert form_matches(tickets, 2, now=6.0) == [tickets]


async def test_players_far_apart_in_rating_meet_once_the_band_has_widened_enough(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        # 400 apart: the band (100 + 50/s) reaches it after 6 s of waiting.
        start = trio.current_time()
        queued = await queue(runtime, nursery, "queue:2p", {"low": 1000, "high": 1400})
        await trio.sleep(5.0)
        assert found(queued["low"], "queue:2p") is None
        # A player close in rating who comes now is matched with the first at once.
        near = await queue(runtime, nursery, "queue:2p", {"near": 1050})
        await trio.sleep(MATCH_INTERVAL * 2)
        match = found(near["near"], "queue:2p")
        assert match is not None and sorted(match["players"]) == ["low", "near"]
        assert found(queued["high"], "queue:2p") is None
        # high waits alone; another far one meets it once the band is wide enough.
        far = await queue(runtime, nursery, "queue:2p", {"far": 1800})
        match = await far["far"].next_push("queue:2p", "match_found")
        assert match["players"] == ["high", "far"]
        # high, the longest waiting, anchors: its band reaches 400 after 6 s.
        assert 6.0 <= trio.current_time() - start <= 6.0 + MATCH_INTERVAL + 0.1


async def test_a_party_is_matched_together_and_leaves_the_queue_together(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        party = {"party": "friends", "party_size": 2, "rating": 1500}
        ann = await Player.connect(runtime, nursery, "ann")
        ben = await Player.connect(runtime, nursery, "ben")
        assert (await ann.join("queue:4p", party)).ok
        solos = await queue(runtime, nursery, "queue:4p", {"s1": 1500, "s2": 1500})
        await trio.sleep(MATCH_INTERVAL * 3)
        # Half a party is not matched.
        assert found(ann, "queue:4p") is None and found(solos["s1"], "queue:4p") is None
        assert (await ben.join("queue:4p", party)).ok
        await trio.sleep(MATCH_INTERVAL * 3)
        match = found(ann, "queue:4p")
        assert match is not None and sorted(match["players"]) == ["ann", "ben", "s1", "s2"]
        # Another party: one member leaving takes the other out too.
        cat = await Player.connect(runtime, nursery, "cat")
        dan = await Player.connect(runtime, nursery, "dan")
        other = {"party": "pals", "party_size": 2}
        assert (await cat.join("queue:4p", other)).ok
        assert (await dan.join("queue:4p", other)).ok
        assert (await cat.leave("queue:4p")).ok
        assert (await dan.ended("queue:4p")).code == "party_left"


async def test_leaving_or_disconnecting_while_queued_takes_a_player_out(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        queued = await queue(runtime, nursery, "queue:4p", {"a": 1500, "b": 1500, "c": 1500})
        queued["b"].client.close()  # disconnects while queued
        assert (await queued["c"].leave("queue:4p")).ok  # leaves
        await queued["b"].done.wait()
        more = await queue(runtime, nursery, "queue:4p", {"d": 1500, "e": 1500})
        await trio.sleep(MATCH_INTERVAL * 3)
        assert found(queued["a"], "queue:4p") is None, "a, d and e are three: no match yet"
        last = await queue(runtime, nursery, "queue:4p", {"f": 1500})
        await trio.sleep(MATCH_INTERVAL * 3)
        match = found(last["f"], "queue:4p")
        assert match is not None and sorted(match["players"]) == ["a", "d", "e", "f"]
        assert found(more["d"], "queue:4p") == match


async def test_an_unknown_mode_and_a_second_ticket_are_refused_with_their_codes(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        ada = await Player.connect(runtime, nursery, "ada")
        refused = await ada.join("queue:9p")
        assert not refused.ok and refused.error_code == "unknown_mode"
        refused = await ada.join("queue:4p", {"rating": "high"})
        assert not refused.ok and refused.error_code == "bad_rating"


async def test_players_stay_queued_while_the_hub_cannot_start_their_match(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = make_app(match_interval=MATCH_INTERVAL)
    # Room for two topics: the queue, and one match.
    runtime = await nursery.start(serve_hub, app, config(max_live=2))
    with trio.fail_after(30):
        ratings = dict.fromkeys("abcd", 1500)
        queued = await queue(runtime, nursery, "queue:2p", ratings)
        await trio.sleep(MATCH_INTERVAL * 3)
        first = found(queued["a"], "queue:2p")
        assert first is not None and first["players"] == ["a", "b"]
        for name in ("c", "d"):
            assert found(queued[name], "queue:2p") is None
            queued[name].drain_nowait()
            assert not any(isinstance(frame, Ended) for frame in queued[name].unread)
        # Nobody joins the first match: it stops once empty for the topics'
        # grace (10 s), and a round after that starts theirs.
        second = await queued["c"].next_push("queue:2p", "match_found")
        assert second["players"] == ["c", "d"]
        assert runtime.topics.whereis(first["topic"]) is None
