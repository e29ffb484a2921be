"""The demo chat page in headless Chromium, against a real `hub serve`."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from browser_pages import open_chat, send, unique_room
from browser_support import HubProcess
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


def test_a_newcomer_lands_in_the_lobby_with_a_name_and_nothing_external(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("websocket", lambda websocket: requested.append(websocket.url))

    page.goto(hub_server.url)

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "joined")
    expect(status).to_have_text(re.compile(r"Online as guest-\d{4} in #lobby"))
    expect(page.locator("#name")).to_have_value(re.compile(r"^guest-\d{4}$"))
    expect(page.locator("#room")).to_have_value("lobby")
    expect(page.locator("#room-label")).to_have_text("#lobby")
    expect(page.locator("#members")).to_have_text(re.compile(r"^\d+ members?$"))
    expect(page.get_by_role("textbox", name="Message", exact=True)).to_be_enabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("log", name="Messages")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()

    origin = hub_server.url.rstrip("/")
    websocket_url = origin.replace("http://", "ws://") + "/ws"
    assert requested, "the page made no requests"
    outside = [url for url in requested if not url.startswith(origin) and url != websocket_url]
    assert not outside, f"the page reached outside the hub: {outside}"
    assert websocket_url in requested


def test_a_message_from_one_page_appears_in_both(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    alice = open_chat(new_page(), hub_server, room, "alice")
    bob = open_chat(new_page(), hub_server, room, "bob")

    send(alice, "hello bob")

    for page in (alice, bob):
        item = page.locator("#messages li", has_text="hello bob")
        expect(item).to_have_count(1)
        expect(item.locator(".user")).to_have_text("alice")
        expect(item.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    mine = re.compile(r"\bmine\b")
    expect(alice.locator("#messages li", has_text="hello bob")).to_have_class(mine)
    expect(bob.locator("#messages li", has_text="hello bob")).not_to_have_class(mine)
    expect(alice.locator("#message")).to_have_value("")

    # And back, with the Enter key; markup is shown as text, never run.
    bob.locator("#message").fill('hi alice <img src=x onerror="window.pwned = 1">')
    bob.locator("#message").press("Enter")
    for page in (alice, bob):
        expect(page.locator("#messages li .text")).to_have_text(
            ["hello bob", 'hi alice <img src=x onerror="window.pwned = 1">']
        )
        expect(page.locator("#messages img")).to_have_count(0)
        assert page.evaluate("window.pwned") is None


def test_a_page_that_joins_later_sees_the_history(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    alice = open_chat(new_page(), hub_server, room, "alice")
    for text in ("one", "two", "three"):
        send(alice, text)
        expect(alice.locator("#messages li", has_text=text)).to_have_count(1)

    carol = open_chat(new_page(), hub_server, room, "carol")

    expect(carol.locator("#messages li .text")).to_have_text(["one", "two", "three"])
    expect(carol.locator("#messages li .user")).to_have_text(["alice", "alice", "alice"])
    expect(carol.locator("#members")).to_have_text("2 members")
    # The history carries the room's offsets, in order.
    offsets = carol.locator("#messages li").evaluate_all(
        "items => items.map(item => Number(item.dataset.offset))"
    )
    assert offsets == sorted(offsets) and len(set(offsets)) == 3

    # Live messages follow the history.
    send(carol, "four")
    for page in (alice, carol):
        expect(page.locator("#messages li .text")).to_have_text(["one", "two", "three", "four"])


def test_a_new_name_rejoins_the_room_without_repeating_its_history(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    page = open_chat(new_page(), hub_server, room, "dave")
    send(page, "as dave")
    expect(page.locator("#messages li .user")).to_have_text(["dave"])

    page.locator("#name").fill("david")
    page.locator("#join").click()

    expect(page.locator("#status")).to_have_text(f"Online as david in #{room}")
    send(page, "as david")
    expect(page.locator("#messages li .text")).to_have_text(["as dave", "as david"])
    expect(page.locator("#messages li .user")).to_have_text(["dave", "david"])


def test_the_hash_picks_the_room_and_rooms_are_apart(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    first, second = unique_room(), unique_room()
    erin = open_chat(new_page(), hub_server, first, "erin")
    frank = open_chat(new_page(), hub_server, first, "frank")

    frank.evaluate("room => { location.hash = room; }", second)
    expect(frank.locator("#room-label")).to_have_text(f"#{second}")
    expect(frank.locator("#status")).to_have_text(f"Online as frank in #{second}")
    expect(frank.locator("#room")).to_have_value(second)

    send(erin, f"only in {first}")
    expect(erin.locator("#messages li", has_text=f"only in {first}")).to_have_count(1)
    send(frank, f"only in {second}")
    # Frank's own message arrives after Erin's was broadcast: had Frank still
    # been in the first room, hers would have come before his.
    expect(frank.locator("#messages li .text")).to_have_text([f"only in {second}"])
    expect(erin.locator("#messages li .text")).to_have_text([f"only in {first}"])
