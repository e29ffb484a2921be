"""The JS client (hub/static/triohub.js) in headless Chromium, against a real `hub serve`.

Each test loads the module in a page of the hub's origin and drives it with
`page.evaluate`; the demo page is not involved.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import pytest
from browser_pages import client_page, run, ws_url
from browser_support import HubProcess
from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


@pytest.fixture
def page(hub_server: HubProcess, new_page: Callable[[], Page]) -> Page:
    return client_page(hub_server, new_page)


def test_call_on_echo_returns_the_payload(page: Page, hub_server: HubProcess) -> None:
    payload = {
        "text": "héllo 😀",
        "numbers": [0, 1, -3, 2.5, 9007199254740991],
        "nested": {"list": [None, True, False, {"empty": {}}], "s": ""},
    }
    result = run(
        page,
        """
        const hub = await connect(arg.url);
        const topic = await hub.join("echo:test");
        const answer = await topic.call("anything", arg.payload);
        const scalar = await topic.call("scalar", 42, { timeout: 2000 });
        const nothing = await topic.call("nothing");
        // Values JSON cannot carry are refused here, not sent as null.
        const nan = await topic.call("nan", { x: NaN }).then(() => "sent", (err) => err.name);
        hub.close();
        return { answer, scalar, nothing, nan, state: hub.state };
        """,
        url=ws_url(hub_server),
        payload=payload,
    )
    assert result["answer"] == payload
    assert result["scalar"] == 42
    assert result["nothing"] is None
    assert result["nan"] == "TypeError"
    assert result["state"] == "closed"


def test_publish_on_echo_comes_back_as_a_push(page: Page, hub_server: HubProcess) -> None:
    result = run(
        page,
        """
        const hub = await TrioHub.connect(arg.url);
        const topic = await hub.join("echo:pushes");
        const got = [];
        const both = new Promise((resolve) => {
          topic.on("ping", (payload, offset, event) => {
            got.push({ payload, offset, event });
            if (got.length === 2) resolve();
          });
        });
        const ack = await topic.publish("ping", { n: 1 }, { ack: true });
        const noAck = await topic.publish("ping", { n: 2 });
        await both;
        hub.close();
        return { got, ack: ack ?? null, noAck: noAck ?? null };
        """,
        url=ws_url(hub_server),
    )
    assert result["got"] == [
        {"payload": {"n": 1}, "offset": None, "event": "ping"},
        {"payload": {"n": 2}, "offset": None, "event": "ping"},
    ]
    assert result["ack"] is None and result["noAck"] is None


def test_an_oversize_publish_with_ack_rejects_with_bad_field(
    page: Page, hub_server: HubProcess
) -> None:
    result = run(
        page,
        """
        const hub = await TrioHub.connect(arg.url);
        const room = await hub.join(arg.topic, { user: "big" });
        const fits = await room.publish("message", { text: "x".repeat(2000) }, { ack: true });
        let error = null;
        try {
          await room.publish("message", { text: "x".repeat(2001) }, { ack: true });
        } catch (err) {
          error = { isHubError: err instanceof HubError, isError: err instanceof Error,
                    code: err.code, message: err.message, topic: err.topic };
        }
        // The connection and the membership survive the refusal.
        const after = await room.publish("message", { text: "still here" }, { ack: true });
        hub.close();
        return { fits: fits ?? null, error, after: after ?? null, members: room.reply.members };
        """,
        url=ws_url(hub_server),
        topic=f"room:{uuid.uuid4().hex[:10]}",
    )
    assert result["fits"] is None and result["after"] is None
    error = result["error"]
    assert error is not None, "the oversize publish was accepted"
    assert error["isHubError"] and error["isError"]
    assert error["code"] == "bad_field"
    assert "2000" in error["message"]
    assert error["topic"].startswith("room:")
    assert result["members"] == 1


def test_refused_joins_reject_with_the_server_code(page: Page, hub_server: HubProcess) -> None:
    result = run(
        page,
        """
        const hub = await TrioHub.connect(arg.url);
        const outcome = async (promise) => {
          try {
            await promise;
            return "joined";
          } catch (err) {
            return { code: err.code, message: err.message };
          }
        };
        const noUser = await outcome(hub.join(arg.room, {}));
        const unknown = await outcome(hub.join("nowhere:1"));
        const first = hub.join(arg.room, { user: "ok" });
        const twice = await outcome(hub.join(arg.room, { user: "again" }));
        await first;
        hub.close();
        return { noUser, unknown, twice };
        """,
        url=ws_url(hub_server),
        room=f"room:{uuid.uuid4().hex[:10]}",
    )
    assert result["noUser"]["code"] == "bad_field"
    assert "user" in result["noUser"]["message"]
    assert result["unknown"]["code"] == "unknown_topic"
    assert result["twice"]["code"] == "already_joined"


def test_connect_params_go_in_the_query_string(page: Page, hub_server: HubProcess) -> None:
    result = run(
        page,
        """
        const seen = [];
        class Spy extends WebSocket {
          constructor(url, protocols) { seen.push({ url, protocols }); super(url, protocols); }
        }
        const params = { token: "a b&c", v: 1 };
        const hub = await TrioHub.connect(arg.url, { params, WebSocket: Spy });
        const protocol = hub._ws.protocol;
        hub.close();
        return { seen, protocol };
        """,
        url=ws_url(hub_server),
    )
    assert result["seen"] == [
        {"url": ws_url(hub_server) + "?token=a+b%26c&v=1", "protocols": ["triohub.v1.json"]}
    ]
    assert result["protocol"] == "triohub.v1.json"


def test_a_first_connect_that_fails_rejects(page: Page) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now.
    result = run(
        page,
        """
        try {
          await TrioHub.connect(arg.url);
          return "connected";
        } catch (err) {
          return { code: err.code, closeCode: err.closeCode };
        }
        """,
        url=f"ws://127.0.0.1:{port}/ws",
    )
    assert result == {"code": "connect_failed", "closeCode": 1006}
