"""The demo page's presence in headless Chromium: two pages, a real `hub serve`.

Members by name with their status, join and leave notices, the typing
indicator, the same count on both pages, and a name that is taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from browser_pages import open_chat, send, unique_room
from browser_support import HubProcess, running_hub
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

# Short, so that a closed page's leave shows within the test.
GRACE_SECONDS = 1.0


@pytest.fixture(scope="module")
def presence_hub() -> Iterator[HubProcess]:
    with running_hub(arguments=["--set", f"presence.grace_seconds={GRACE_SECONDS}"]) as hub:
        yield hub


def members(page: Page) -> list[str]:
    return page.locator("#member-list li .presence-name").all_text_contents()


def test_two_pages_see_each_other_by_name_with_status_notices_and_typing(
    presence_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    alice = open_chat(new_page(), presence_hub, room, "alice")
    expect(alice.locator("#member-list li")).to_have_count(1)
    bob = open_chat(new_page(), presence_hub, room, "bob")

    for page in (alice, bob):
        expect(page.locator("#member-list li .presence-name")).to_have_text(["alice", "bob"])
        expect(page.locator("#members")).to_have_text("2 members")
        expect(page.locator("#member-list li[data-user=bob] .presence-status")).to_have_text(
            re.compile("online|away")
        )
    expect(alice.locator("#messages li.notice", has_text="bob joined")).to_have_count(1)
    # Bob saw alice in the state, not arriving: no notice for those already there.
    expect(bob.locator("#messages li.notice")).to_have_count(0)

    # Bob types: alice sees it, and it stops when he sends.
    bob.locator("#message").press_sequentially("hel")
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    expect(bob.locator("#typing")).to_have_text("")
    bob.locator("#message").press_sequentially("lo")
    bob.locator("#send").click()
    expect(alice.locator("#messages li .text")).to_have_text(["hello"])
    expect(alice.locator("#typing")).to_have_text("")

    # Bob's page hides: he shows away, from his own meta.
    bob.evaluate("""() => window.chatDemo.presence.update({ status: "away" })""")
    expect(alice.locator("#member-list li[data-user=bob]")).to_have_attribute("data-status", "away")

    # Bob's page closes: after the grace, he leaves alice's list, with a notice.
    bob.close()
    expect(alice.locator("#messages li.notice", has_text="bob left")).to_have_count(1)
    expect(alice.locator("#member-list li .presence-name")).to_have_text(["alice"])
    expect(alice.locator("#members")).to_have_text("1 member")


def test_a_reloaded_page_comes_back_without_a_leave_or_a_join(
    presence_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    carol = open_chat(new_page(), presence_hub, room, "carol")
    dan = open_chat(new_page(), presence_hub, room, "dan")
    expect(carol.locator("#messages li.notice", has_text="dan joined")).to_have_count(1)

    dan.reload()
    expect(dan.locator("#status")).to_have_attribute("data-state", "joined")
    expect(dan.locator("#member-list li .presence-name")).to_have_text(["carol", "dan"])
    send(carol, "after the reload")
    expect(dan.locator("#messages li", has_text="after the reload")).to_have_count(1)
    # Carol saw dan neither leave nor come back.
    expect(carol.locator("#messages li.notice")).to_have_text(["dan joined"])
    expect(carol.locator("#member-list li .presence-name")).to_have_text(["carol", "dan"])


def test_a_name_in_use_is_refused_and_nobody_speaks_as_someone_else(
    presence_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    erin = open_chat(new_page(), presence_hub, room, "erin")
    impostor = new_page()
    impostor.goto(f"{presence_hub.url}?name=erin#{room}")
    expect(impostor.locator("#error")).to_have_text(re.compile("the name erin is taken"))
    expect(impostor.locator("#message")).to_be_disabled()
    expect(erin.locator("#member-list li")).to_have_count(1)
    # Under a name of its own, it joins.
    impostor.locator("#name").fill("not-erin")
    impostor.locator("#join").click()
    expect(impostor.locator("#status")).to_have_text(f"Online as not-erin in #{room}")
    expect(erin.locator("#member-list li .presence-name")).to_have_text(["erin", "not-erin"])


def test_a_second_tab_with_the_remembered_name_takes_a_new_one(
    presence_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    first = new_page()
    first.goto(f"{presence_hub.url}#{room}")
    expect(first.locator("#status")).to_have_attribute("data-state", "joined")
    remembered = first.locator("#name").input_value()
    # A second tab of the same browser: the same remembered name, which is taken.
    second = first.context.new_page()
    second.goto(f"{presence_hub.url}#{room}")
    expect(second.locator("#status")).to_have_attribute("data-state", "joined")
    renamed = second.locator("#name").input_value()
    assert renamed != remembered and re.fullmatch(r"guest-\d{4}", renamed)
    for page in (first, second):
        expect(page.locator("#member-list li .presence-name")).to_have_text([remembered, renamed])
