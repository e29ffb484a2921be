"""Long-polling in headless Chromium: where WebSockets fail, the JS client falls back.

A page whose WebSocket constructor is removed and a normal page chat in one
room of a real hub; the fallback also happens when the upgrade is refused
or does not open in time; a long-polling client reconnects and re-joins
after the hub drops it, as a WebSocket client does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from browser_pages import client_page, open_chat, run, send, unique_room, ws_url
from browser_support import HubProcess
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

NO_WEBSOCKET = "delete window.WebSocket;"


def test_a_long_polling_page_and_a_websocket_page_chat_in_one_room(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    websockets: list[str] = []
    polled: list[str] = []
    blocked = new_page()
    blocked.add_init_script(NO_WEBSOCKET)
    blocked.on("websocket", lambda websocket: websockets.append(websocket.url))
    blocked.on("request", lambda request: polled.append(request.url))

    bob = open_chat(blocked, hub_server, room, "bob")
    alice = open_chat(new_page(), hub_server, room, "alice")

    # Each says which transport it uses.
    expect(bob.locator("#status")).to_have_attribute("data-transport", "longpoll")
    expect(bob.locator("#status")).to_have_text(f"Online as bob in #{room} (long-polling)")
    expect(alice.locator("#status")).to_have_attribute("data-transport", "websocket")
    assert bob.evaluate("window.chatDemo.hub.transport") == "longpoll"

    send(alice, "hello from a websocket")
    send(bob, "hello from long-polling")
    for page in (alice, bob):
        expect(page.locator("#messages li .text")).to_have_text(
            ["hello from a websocket", "hello from long-polling"]
        )
        expect(page.locator("#messages li", has_text="long-polling").locator(".user")).to_have_text(
            "bob"
        )
    assert websockets == [], "the page without WebSocket opened one"
    assert any(re.search(r"/poll/[\w-]{40,}\?ack=\d+$", url) for url in polled), polled


def test_the_client_falls_back_when_the_upgrade_is_refused(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    result = run(
        page,
        """
        // No WebSocket route at /nowhere: the upgrade is answered 404.
        const hub = await TrioHub.connect(arg.url.replace("/ws", "/nowhere"));
        const topic = await hub.join("echo:fallback");
        const answer = await topic.call("ping", { over: hub.transport });
        hub.close();
        return { transport: hub.transport, answer };
        """,
        url=ws_url(hub_server),
    )
    assert result == {"transport": "longpoll", "answer": {"over": "longpoll"}}


def test_the_client_falls_back_when_the_websocket_does_not_open_in_time(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    result = run(
        page,
        """
        // A WebSocket that neither opens nor fails (a proxy that holds the upgrade).
        class Stuck { constructor() { Stuck.made += 1; } close() { Stuck.closed += 1; } }
        Stuck.made = 0;
        Stuck.closed = 0;
        const started = performance.now();
        const hub = await TrioHub.connect(arg.url, {
          WebSocket: Stuck, websocketTimeoutMs: 300, reconnectMinMs: 50,
        });
        const waited = performance.now() - started;
        const opens = [];
        hub.on("open", (event) => opens.push(event));
        const topic = await hub.join("echo:slow");
        const answer = await topic.call("ping", 1);
        // Dropped by the hub (a message over its size limit: 1009): the
        // reconnect goes straight to long-polling, since the WebSocket
        // failed where long-polling worked.
        const reopened = new Promise((resolve) =>
          hub.on("joined", (e) => e.rejoined && resolve(e)));
        topic.publish("big", "x".repeat(1100000));
        await reopened;
        hub.close();
        return { transport: hub.transport, answer, waited, made: Stuck.made, closed: Stuck.closed,
                 opens };
        """,
        url=ws_url(hub_server),
    )
    assert result["transport"] == "longpoll" and result["answer"] == 1
    assert result["waited"] >= 300
    assert result["made"] == 1 and result["closed"] == 1
    assert result["opens"] == [{"reconnected": True, "transport": "longpoll"}]


def test_a_long_polling_client_reconnects_and_rejoins_from_its_offset_when_dropped(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    page.add_init_script(NO_WEBSOCKET)
    page.reload()
    page.evaluate("async () => { window.triohub = await import('/triohub.js'); }")
    run(
        page,
        """
        // Full jitter below a 2 s ceiling, drawn at its top: 2 s away.
        Math.random = () => 1;
        const alice = await TrioHub.connect(arg.url, { reconnectMinMs: 2000 });
        const bob = await TrioHub.connect(arg.url);
        window.alice = alice;
        window.closes = [];
        alice.on("close", (event) => window.closes.push(event));
        window.states = [];
        alice.on("state", (state) => window.states.push(state));
        window.got = [];
        window.rejoins = [];
        alice.on("joined", (event) => event.rejoined && window.rejoins.push(event));
        const room = await alice.join(arg.topic, { user: "alice" });
        window.room = room;
        room.on("message", (payload, offset) => window.got.push([offset, payload.text]));
        window.bobRoom = await bob.join(arg.topic, { user: "bob" });
        await room.publish("message", { text: "seen" }, { ack: true });
        """,
        url=ws_url(hub_server),
        topic=f"room:{uuid.uuid4().hex[:10]}",
    )
    page.wait_for_function("window.got.length === 1")
    assert page.evaluate("window.alice.transport") == "longpoll"

    # Over the hub's 1 MiB limit: the hub closes the session with 1009.
    run(page, "window.room.publish('message', { text: 'x'.repeat(1100000) });")
    page.wait_for_function("window.states.includes('reconnecting')")
    run(
        page,
        """
        await window.bobRoom.publish("message", { text: "missed 1" }, { ack: true });
        await window.bobRoom.publish("message", { text: "missed 2" }, { ack: true });
        """,
    )
    page.wait_for_function("window.got.length >= 3 && window.rejoins.length === 1")

    dropped = page.evaluate("window.closes")[0]
    assert dropped["code"] == 1009, dropped
    assert dropped["reconnectInMs"] == 2000
    assert page.evaluate("window.rejoins[0].recovered") is True
    got = page.evaluate("window.got")
    assert [text for _offset, text in got] == ["seen", "missed 1", "missed 2"]
    assert page.evaluate("window.alice.transport") == "longpoll"
    run(page, "window.alice.close();")
