"""The lobby example's page in headless Chromium: two players and bots, against a real hub."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import trio
from browser_support import REPO, HubProcess, running_hub
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from examples.lobby.bot import BotStats, run_bots  # noqa: E402


@pytest.fixture(scope="module")
def lobby_hub() -> Iterator[HubProcess]:
    with running_hub(app="examples.lobby.app:quick") as hub:
        yield hub


def open_player(page: Page, hub: HubProcess, name: str) -> Page:
    page.goto(f"{hub.url}lobby/?name={name}")
    page.locator("#connect").click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    return page


def tick_of(page: Page) -> int:
    return int(page.locator("#match-panel").get_attribute("data-tick") or 0)


def expect_ticking(page: Page, topic: str) -> None:
    """The page is in `topic` and its canvas follows the match's ticks."""
    expect(page.locator("#match-panel")).to_have_attribute("data-match", topic)
    expect(page.locator("#match-panel")).to_have_attribute("data-tick", re.compile(r"^\d+$"))
    first = tick_of(page)
    page.wait_for_function(
        f"Number(document.querySelector('#match-panel').dataset.tick) > {first + 5}"
    )
    expect(page.locator("#match-status")).to_have_text(re.compile(r"tick \d+ · tick lateness"))


def test_two_players_in_a_lobby_ready_up_and_play_their_match(
    lobby_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    ada = open_player(new_page(), lobby_hub, "ada")
    bob = open_player(new_page(), lobby_hub, "bob")
    cy = open_player(new_page(), lobby_hub, "cy")
    ada.locator("#lobby-id").fill("browsers")
    ada.locator("#capacity").fill("2")
    ada.locator("#target").fill("2")
    ada.locator("#join-lobby").click()
    bob.locator("#lobby-id").fill("browsers")
    bob.locator("#join-lobby").click()
    for page in (ada, bob):
        expect(page.locator("#players li")).to_have_count(2)
        expect(page.locator("#players li[data-host=true]")).to_have_attribute("data-player", "ada")
    # A third player finds the lobby full, and is told so.
    cy.locator("#lobby-id").fill("browsers")
    cy.locator("#join-lobby").click()
    expect(cy.locator("#lobby-status")).to_have_text(re.compile(r"^lobby_full: "))
    # Both ready, the host starts: both pages go to the same match.
    ada.locator("#ready").click()
    bob.locator("#ready").click()
    expect(ada.locator("#players li[data-ready=true]")).to_have_count(2)
    ada.locator("#start").click()
    expect(ada.locator("#match-panel")).to_have_attribute("data-match", re.compile(r"^match:"))
    topic = ada.locator("#match-panel").get_attribute("data-match")
    assert topic is not None
    for page in (ada, bob):
        expect_ticking(page, topic)
    # Then both steer for the coin (not before: the match could be over by then).
    for page in (ada, bob):
        page.locator("#autopilot").check()
    # Someone takes the two coins the host asked for: the match is over on both pages.
    for page in (ada, bob):
        expect(page.locator("#result")).to_have_text(re.compile(r"^Match over: \w+ won"))
        expect(page.locator("#scores li").first).to_have_attribute("data-score", "2")


def test_two_pages_and_two_bots_are_matched_from_the_queue_and_play(
    lobby_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    ann = open_player(new_page(), lobby_hub, "ann")
    ben = open_player(new_page(), lobby_hub, "ben")
    for page in (ann, ben):
        page.locator("#mode").select_option("4p")
        page.locator("#queue").click()
        expect(page.locator("#queue-status")).to_have_text(re.compile(r"queued: \d+ waiting"))
    results: list[BotStats] = []
    websocket_url = lobby_hub.url.replace("http://", "ws://") + "ws"

    def bots() -> None:
        results.extend(trio.run(lambda: run_bots(websocket_url, 2, mode="4p", matches=1)))

    thread = threading.Thread(target=bots, name="lobby-bots")
    thread.start()
    try:
        expect(ann.locator("#match-panel")).to_have_attribute("data-match", re.compile(r"^match:"))
        topic = ann.locator("#match-panel").get_attribute("data-match")
        assert topic is not None
        for page in (ann, ben):
            expect_ticking(page, topic)
            expect(page.locator("#queue-status")).to_have_text(re.compile(r"^matched with "))
        for page in (ann, ben):
            expect(page.locator("#result")).to_have_text(re.compile(r"^Match over: [\w-]+ won"))
    finally:
        thread.join(timeout=40)
    assert not thread.is_alive()
    assert [stats.matches for stats in results] == [1, 1]
    assert all(stats.states > 0 for stats in results)
    # The bots played the pages' match, to its end.
    assert [stats.topics for stats in results] == [[topic], [topic]]
    assert all(ending.endswith("won") for stats in results for ending in stats.endings)


def test_a_player_who_reloads_within_the_grace_is_back_in_its_slot(
    lobby_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    cat = open_player(new_page(), lobby_hub, "cat")
    dan = open_player(new_page(), lobby_hub, "dan")
    for page, capacity in ((cat, "2"), (dan, None)):
        page.locator("#lobby-id").fill("reloads")
        if capacity:
            page.locator("#capacity").fill(capacity)
        page.locator("#join-lobby").click()
        expect(page.locator("#players li")).to_have_count(2 if page is dan else 1)
    for page in (cat, dan):
        page.locator("#ready").click()
    cat.locator("#start").click()
    expect(dan.locator("#match-panel")).to_have_attribute("data-match", re.compile(r"^match:"))
    topic = dan.locator("#match-panel").get_attribute("data-match")
    assert topic is not None
    # dan reloads: its connection ends, cat sees it away...
    dan.reload()
    expect(cat.locator("#events li", has_text="dan: away")).to_have_count(1)
    # ...and dan, connecting again, is back in the same match, which ticks on.
    dan.locator("#connect").click()
    expect_ticking(dan, topic)
    expect(cat.locator("#events li", has_text="dan: back")).to_have_count(1)
