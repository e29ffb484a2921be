"""Losing the connection, in headless Chromium: reconnects, re-joins, close codes.

Every path the real hub can produce is tested against it: a restart (close
1001), an oversize message (1009), a flood of malformed frames (1008), and a
frozen server (SIGSTOP: heartbeats go unanswered). Only what the demo hub
cannot be made to do, crash a topic, and the exact backoff schedule, is
tested against a fake WebSocket inside the page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_pages import FAKE_SOCKET, client_page, open_chat, run, send, unique_room, ws_url
from browser_support import HubProcess, running_hub
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


def closes(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("window.closes ?? window.chatDemo.closes")
    return result


def test_the_page_reconnects_and_rejoins_when_the_server_restarts(
    own_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    room = unique_room()
    alice = open_chat(new_page(), own_hub, room, "alice")
    send(alice, "before the restart")
    expect(alice.locator("#messages li", has_text="before the restart")).to_have_count(1)
    port = own_hub.port
    assert port is not None

    assert own_hub.stop() == 0, "the hub exited with an error" + own_hub.describe_output()

    # The hub said it was going away (1001), and the page will be back.
    alice.wait_for_function("window.chatDemo.closes.length > 0")
    going_away = closes(alice)[0]
    assert going_away["code"] == 1001, going_away
    assert going_away["reconnectInMs"] is not None
    expect(alice.locator("#status")).to_have_attribute(
        "data-state", re.compile("^(reconnecting|connecting)$")
    )
    expect(alice.locator("#send")).to_be_disabled()

    own_hub.start(port)

    expect(alice.locator("#status")).to_have_attribute("data-state", "joined")
    expect(alice.locator("#status")).to_have_text(f"Online as alice in #{room}")
    # The restarted hub kept no history (a new epoch): the re-join could not
    # recover what was said meanwhile, and the page says so.
    expect(alice.locator("#messages li.notice")).to_have_text(
        ["Reconnected.", "Some messages were missed while offline."]
    )
    bob = open_chat(new_page(), own_hub, room, "bob")
    send(bob, "after the restart")
    expect(alice.locator("#messages li .text")).to_have_text(
        ["before the restart", "after the restart"]
    )
    send(alice, "still here")
    expect(bob.locator("#messages li .text")).to_have_text(["after the restart", "still here"])


def test_a_dropped_connection_rejoins_from_the_last_offset(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    run(
        page,
        """
        // A backoff of 2 s (full jitter drawn at its top) leaves time to
        // publish while alice is away.
        Math.random = () => 1;
        const slow = { reconnectMinMs: 2000, reconnectMaxMs: 4000 };
        const alice = await TrioHub.connect(arg.url, slow);
        const bob = await TrioHub.connect(arg.url);
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
        window.alice = alice;
        window.bobRoom = await bob.join(arg.topic, { user: "bob" });
        await room.publish("message", { text: "seen" }, { ack: true });
        """,
        url=ws_url(hub_server),
        topic=f"room:{uuid.uuid4().hex[:10]}",
    )
    page.wait_for_function("window.got.length === 1")

    # A message over the hub's 1 MiB limit: the hub closes with 1009.
    run(page, "await window.room.publish('message', { text: 'x'.repeat(1100000) });")
    page.wait_for_function("window.states.includes('reconnecting')")
    run(
        page,
        """
        await window.bobRoom.publish("message", { text: "missed 1" }, { ack: true });
        await window.bobRoom.publish("message", { text: "missed 2" }, { ack: true });
        """,
    )
    page.wait_for_function("window.got.length >= 3 && window.rejoins.length === 1")

    dropped = closes(page)[0]
    assert dropped["code"] == 1009, dropped
    assert dropped["reconnectInMs"] == 2000
    # The hub recovered the gap: the re-join's Reply says so.
    assert page.evaluate("window.rejoins[0].recovered") is True
    got = page.evaluate("window.got")
    # Rejoining with the offset of "seen" brings what was missed, and only that.
    assert [text for _offset, text in got] == ["seen", "missed 1", "missed 2"]
    offsets = [offset for offset, _text in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    run(page, "window.alice.close();")


def test_a_policy_violation_is_reported_and_not_retried(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    result = run(
        page,
        """
        const hub = await TrioHub.connect(arg.url);
        const errors = [];
        hub.on("error", (err) => errors.push(err.code));
        const topic = await hub.join("echo:flood");
        const closed = new Promise((resolve) => hub.on("close", resolve));
        // Malformed frames, more than the flood allowance of 10.
        for (let i = 0; i < 12; i++) hub._ws.send("not json");
        const close = await closed;
        const call = await topic.call("x").then(() => "answered", (err) => err.code);
        return { close, state: hub.state, topicState: topic.state, errors, call };
        """,
        url=ws_url(hub_server),
    )
    assert result["close"]["code"] == 1008
    assert result["close"]["reason"] == "too many malformed frames"
    assert result["close"]["reconnectInMs"] is None
    # No reconnect timer: the hub is closed for good, and so is the topic.
    assert result["state"] == "closed"
    assert result["topicState"] == "ended"
    assert result["call"] == "disconnected"
    assert len(result["errors"]) >= 10
    assert set(result["errors"]) == {"bad_encoding"}


def test_an_unanswered_heartbeat_drops_the_connection_and_reconnects(
    own_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(own_hub, new_page)
    run(
        page,
        """
        const hub = await TrioHub.connect(arg.url, {
          heartbeatIntervalMs: 300, heartbeatTimeoutMs: 800, connectTimeoutMs: 1000,
          reconnectMinMs: 200, reconnectMaxMs: 800,
        });
        window.hub = hub;
        window.closes = [];
        window.rejoins = [];
        hub.on("close", (event) => window.closes.push(event));
        hub.on("joined", (event) => event.rejoined && window.rejoins.push(event.topic));
        window.topic = await hub.join("echo:heartbeat");
        """,
        url=ws_url(own_hub),
    )
    own_hub.freeze()
    try:
        page.wait_for_function("window.closes.some((event) => event.code === 4000)")
    finally:
        own_hub.thaw()
    page.wait_for_function("window.rejoins.length === 1 && window.topic.state === 'joined'")

    dead = next(event for event in closes(page) if event["code"] == 4000)
    assert dead["reason"] == "heartbeat timeout"
    assert dead["reconnectInMs"] is not None
    answer = run(page, "return await window.topic.call('ping', { back: true });")
    assert answer == {"back": True}
    run(page, "window.hub.close();")


# What follows cannot be made to happen with the demo hub (its topics do not
# crash on demand), so it runs against a fake WebSocket inside the page.


@pytest.fixture
def page(hub_server: HubProcess, new_page: Callable[[], Page]) -> Page:
    return client_page(hub_server, new_page)


def test_a_crashed_topic_is_joined_again_from_its_offset(page: Page) -> None:
    result = run(
        page,
        FAKE_SOCKET
        + """
        const options = { WebSocket: FakeSocket, transports: ["websocket"], rejoinDelayMs: 50 };
        const hub = await TrioHub.connect("ws://fake/ws", options);
        const ws = latest();
        const events = [];
        for (const name of ["ended", "joined"]) hub.on(name, (event) => events.push([name, event]));

        const joining = hub.join("room:x", { user: "a" });
        const join = await ws.nextSent(1);
        // The Reply and the history in one batch: handlers added after the
        // await still get the history.
        ws.receive([
          [6, join[1], "room:x", true, { members: 1 }],
          [7, "room:x", "message", { text: "old" }, 7],
        ]);
        const topic = await joining;
        const got = [];
        topic.on("message", (payload, offset) => got.push(offset));
        await nextTask();

        const rejoin = ws.nextSent(1);
        ws.receive([9, "room:x", "the topic actor crashed", "topic_crashed"]);
        const stateAfterCrash = topic.state;
        const again = await rejoin;
        ws.receive([6, again[1], "room:x", true, { members: 1 }]);

        ws.receive([9, "room:x", "kicked by a moderator", "kicked"]);
        await nextTask(); // frames after a Join Reply wait for the next task
        return { join, again, got, stateAfterCrash, state: topic.state, events,
                 known: hub._topics.has("room:x"), sent: ws.sent.length };
        """,
    )
    assert result["join"] == [1, 1, "room:x", {"user": "a"}]
    assert result["got"] == [7]
    assert result["stateAfterCrash"] == "rejoining"
    # The second Join carries the last offset seen, so nothing is missed.
    assert result["again"][0] == 1 and result["again"][2:] == ["room:x", {"user": "a"}, 7]
    names = [name for name, _event in result["events"]]
    assert names == ["joined", "ended", "joined", "ended"]
    crashed = result["events"][1][1]
    assert crashed["code"] == "topic_crashed" and 25 <= crashed["rejoinInMs"] <= 50
    assert result["events"][2][1]["rejoined"] is True
    kicked = result["events"][3][1]
    assert kicked["code"] == "kicked" and kicked["rejoinInMs"] is None
    assert result["state"] == "ended" and result["known"] is False


def test_reconnect_delays_back_off_with_jitter_and_stop_at_1008(page: Page) -> None:
    result = run(
        page,
        FAKE_SOCKET
        + """
        // Full jitter: each delay is the ceiling times Math.random(), here a known sequence.
        const draws = [0.25, 0.5, 1, 0, 0.75];
        const random = Math.random;
        Math.random = () => (draws.length ? draws.shift() : random());
        const hub = await TrioHub.connect("ws://fake/ws", {
          WebSocket: FakeSocket, transports: ["websocket"], reconnectMinMs: 40, reconnectMaxMs: 200,
        });
        const delays = [];
        const next = () => once(hub, "close");

        // The server goes away (1001), then refuses four attempts in a row.
        FakeSocket.refuse = true;
        let closing = next();
        latest().serverClose(1001, "server shutting down");
        for (let i = 0; i < 5; i++) {
          const event = await closing;
          delays.push(event.reconnectInMs);
          if (i < 4) closing = next();
        }
        FakeSocket.refuse = false;
        await once(hub, "open");
        const afterOpen = hub.state;
        closing = next();
        latest().serverClose(1008, "too many malformed frames");
        const policy = await closing;
        return { delays, afterOpen, policy, state: hub.state };
        """,
    )
    # min * 2^attempt, at most max, times a random draw (full jitter).
    assert result["delays"] == [10, 40, 160, 0, 150]
    assert result["afterOpen"] == "open"
    assert result["policy"]["reconnectInMs"] is None
    assert result["state"] == "closed"


@pytest.fixture
def crashable_hub() -> Iterator[HubProcess]:
    """The demo plus `crash:*` rooms that crash when asked (tests/browser/crash_app.py)."""
    with running_hub(app="tests.browser.crash_app:app") as hub:
        yield hub


def test_a_topic_crashed_for_real_is_joined_again_and_keeps_working(
    crashable_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(crashable_hub, new_page)
    result = run(
        page,
        """
        const hub = await TrioHub.connect(arg.url, { rejoinDelayMs: 50 });
        const events = [];
        for (const name of ["ended", "joined"]) hub.on(name, (e) => events.push([name, e]));
        const topic = await hub.join("crash:room", { user: "ann" });
        const got = [];
        topic.on("message", (payload, offset) => got.push([payload.text, offset]));
        await topic.publish("message", { text: "before" }, { ack: true });
        const rejoined = new Promise((resolve) =>
          hub.on("joined", (e) => { if (e.rejoined) resolve(e); }));
        await topic.publish("crash", {});
        const again = await rejoined;
        await topic.publish("message", { text: "after" }, { ack: true });
        const members = await topic.call("members", null, { timeout: 5000 });
        hub.close();
        return { events, got, again, members };
        """,
        url=ws_url(crashable_hub),
    )
    names = [name for name, _event in result["events"]]
    assert names == ["joined", "ended", "joined"]
    assert result["events"][1][1]["code"] == "topic_crashed"
    assert result["again"]["payload"]["members"] == 1
    # A fresh actor, but the topic's history outlives it: its offsets carry
    # on in the same epoch, and it serves calls.
    assert result["got"] == [["before", 1], ["after", 2]]
    assert result["members"] == ["ann"]
    assert "crashed on request, for the test" in crashable_hub.describe_output()
