"""While the JS client reconnects: publishes and calls held, and recovery on re-join.

Against a real hub that is stopped and started again (its port kept): what
is published during the outage goes out once the topic is joined again, and
fails with `timeout` when the outage outlasts `bufferTimeoutMs`. How the
client reads the hub's recovery answer (`recovered: false`: an event for
the app to refetch) is checked against a fake WebSocket in the page.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from browser_pages import FAKE_SOCKET, client_page, run, ws_url
from browser_support import HubProcess
from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

SETUP = """
const hub = await TrioHub.connect(arg.url, {
  reconnectMinMs: 100, reconnectMaxMs: 300, bufferTimeoutMs: arg.bufferTimeoutMs,
});
window.hub = hub;
window.states = [];
hub.on("state", (state) => window.states.push(state));
window.room = await hub.join(arg.topic, { user: "alice" });
window.outcomes = [];
window.settle = (name, promise) => promise.then(
  (value) => window.outcomes.push([name, "ok", value]),
  (err) => window.outcomes.push([name, err.code, err.message]),
);
"""


def _stopped(own_hub: HubProcess, page: Page) -> int:
    port = own_hub.port
    assert port is not None
    assert own_hub.stop() == 0, own_hub.describe_output()
    page.wait_for_function("window.hub.state === 'reconnecting'")
    return port


def test_publishes_and_calls_made_while_reconnecting_go_out_after_the_rejoin(
    own_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(own_hub, new_page)
    topic = f"room:{uuid.uuid4().hex[:10]}"
    run(page, SETUP, url=ws_url(own_hub), topic=topic, bufferTimeoutMs=20000)
    port = _stopped(own_hub, page)

    run(
        page,
        """
        const room = window.room;
        window.settle("acked", room.publish("message", { text: "while away" }, { ack: true }));
        window.settle("plain", room.publish("message", { text: "and this" }));
        window.settle("call", room.call("members"));
        """,
    )
    # Nothing is lost or refused while the hub is down: all three wait.
    assert page.evaluate("window.outcomes") == []
    assert page.evaluate("window.hub._buffered.length") == 3

    own_hub.start(port)
    page.wait_for_function("window.outcomes.length === 3", timeout=20000)
    outcomes = {name: (status, value) for name, status, value in page.evaluate("window.outcomes")}
    assert outcomes["acked"][0] == "ok" and outcomes["plain"][0] == "ok"
    # Sent in order after the re-join: the call sees alice back in the room.
    assert outcomes["call"] == ("ok", ["alice"])

    # They reached the room: a newcomer finds both in its history, in order.
    newcomer = client_page(own_hub, new_page)
    texts = run(
        newcomer,
        """
        const hub = await TrioHub.connect(arg.url);
        const got = [];
        const room = hub.topic(arg.topic);
        room.on("message", (payload) => got.push(payload.text));
        await room.join({ user: "bob" });
        await room.call("members");
        hub.close();
        return got;
        """,
        url=ws_url(own_hub),
        topic=topic,
    )
    assert texts == ["while away", "and this"]
    run(page, "window.hub.close();")


def test_held_requests_time_out_when_the_outage_is_longer(
    own_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(own_hub, new_page)
    topic = f"room:{uuid.uuid4().hex[:10]}"
    run(page, SETUP, url=ws_url(own_hub), topic=topic, bufferTimeoutMs=300)
    port = _stopped(own_hub, page)

    run(
        page,
        """
        window.started = performance.now();
        window.settle("acked", window.room.publish("message", { text: "too late" }, { ack: true }));
        window.settle("call", window.room.call("members"));
        """,
    )
    page.wait_for_function("window.outcomes.length === 2")
    outcomes = page.evaluate("window.outcomes")
    assert [(name, code) for name, code, _message in outcomes] == [
        ("acked", "timeout"),
        ("call", "timeout"),
    ]
    assert "still disconnected after 300 ms" in outcomes[0][2]
    assert page.evaluate("window.hub._buffered.length") == 0

    # Once back, the timed-out publish is not sent after all.
    own_hub.start(port)
    page.wait_for_function("window.room.state === 'joined' && window.hub.connected")
    history = run(
        page,
        """
        const got = [];
        const hub = await TrioHub.connect(arg.url);
        const room = hub.topic(arg.topic);
        room.on("message", (payload) => got.push(payload.text));
        await room.join({ user: "bob" });
        await room.call("members");
        hub.close();
        window.hub.close();
        return got;
        """,
        url=ws_url(own_hub),
        topic=topic,
    )
    assert history == []


def test_the_buffer_is_bounded(own_hub: HubProcess, new_page: Callable[[], Page]) -> None:
    page = client_page(own_hub, new_page)
    run(
        page,
        SETUP.replace("bufferTimeoutMs: arg", "bufferSize: 2, bufferTimeoutMs: arg"),
        url=ws_url(own_hub),
        topic=f"room:{uuid.uuid4().hex[:10]}",
        bufferTimeoutMs=20000,
    )
    _stopped(own_hub, page)
    codes = run(
        page,
        """
        const room = window.room;
        const all = [1, 2, 3].map((n) => room.publish("message", { text: `${n}` }));
        const third = await all[2].then(() => "sent", (err) => err.code);
        window.hub.close();  // the two held ones fail as the hub closes for good
        const outcome = (p) => p.then(() => "sent", (e) => e.code);
        const held = await Promise.all(all.slice(0, 2).map(outcome));
        return [third, ...held];
        """,
    )
    assert codes == ["buffer_full", "closed", "closed"]


def test_a_rejoin_sends_the_epoch_and_offset_and_reports_what_could_not_be_recovered(
    hub_server: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(hub_server, new_page)
    result = run(
        page,
        FAKE_SOCKET
        + """
        const hub = await TrioHub.connect("ws://fake/ws", {
          WebSocket: FakeSocket, transports: ["websocket"], reconnectMinMs: 10,
        });
        const events = [];
        for (const name of ["joined", "unrecovered"]) hub.on(name, (e) => events.push([name, e]));
        let ws = latest();
        const joining = hub.join("room:x", { user: "a" });
        const join = await ws.nextSent(1);
        ws.receive([6, join[1], "room:x", true, { members: 1, epoch: "e1", offset: 4 }]);
        const topic = await joining;
        ws.receive([7, "room:x", "message", { text: "new" }, 5]);

        // Dropped; the re-join names epoch e1 and offset 5; all was recovered.
        let reopened = once(hub, "open");
        ws.serverClose(1001, "restart");
        await reopened;
        ws = latest();
        const rejoin = await ws.nextSent(1);
        ws.receive([
          [6, rejoin[1], "room:x", true, { members: 1, epoch: "e1", offset: 6, recovered: true }],
          [7, "room:x", "message", { text: "missed" }, 6],
        ]);
        await nextTask();
        const afterRecovery = [topic.offset, topic.epoch, topic.recovered];

        // Dropped again, and this time the history is gone (a new epoch).
        reopened = once(hub, "open");
        ws.serverClose(1001, "restart");
        await reopened;
        ws = latest();
        const again = await ws.nextSent(1);
        ws.receive([6, again[1], "room:x", true,
                    { members: 1, epoch: "e2", offset: 2, recovered: false }]);
        await nextTask();
        hub.close();
        return { join, rejoin, again, afterRecovery, events,
                 end: [topic.offset, topic.epoch, topic.recovered] };
        """,
    )
    # The first join names no position; each re-join names the last seen.
    assert result["join"] == [1, 1, "room:x", {"user": "a"}]
    assert result["rejoin"][2:] == ["room:x", {"user": "a"}, 5, "e1"]
    assert result["afterRecovery"] == [6, "e1", True]
    assert result["again"][2:] == ["room:x", {"user": "a"}, 6, "e1"]
    names = [(name, event.get("recovered")) for name, event in result["events"]]
    assert names == [
        ("joined", None),
        ("joined", True),
        ("joined", False),
        ("unrecovered", None),
    ]
    assert result["events"][3][1]["topic"] == "room:x"
    # What was missed is lost: the topic carries on from the hub's position now.
    assert result["end"] == [2, "e2", False]
