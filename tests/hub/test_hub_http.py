"""Plain HTTP and the echo WebSocket, on the hub's one port."""

from __future__ import annotations

import json
import re

import trio
import trio_websocket
from hub_support import wait_until
from wire_support import http_get

from hub.metrics import live_tasks


async def test_healthz_reports_status_and_counts(hub):
    with trio.fail_after(10):
        response = await http_get(hub.port, "/healthz")
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert json.loads(response.body) == {
            "status": "ok",
            "connections": 0,
            "topics": 0,
            "backplane": {"kind": "local", "connected": True},
        }

        async with hub.client() as ann, hub.client("msgpack") as bob:
            await ann.join_ok("room:a", {"user": "ann"})
            await bob.join_ok("echo:b")
            response = await http_get(hub.port, "/healthz")
            body = json.loads(response.body)
            assert (body["status"], body["connections"], body["topics"]) == ("ok", 2, 2)


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


async def test_metrics_are_prometheus_text_with_the_hubs_counters(hub):
    with trio.fail_after(10):
        async with hub.client() as ann:
            await ann.join_ok("room:m", {"user": "ann"})
            await ann.publish_acked("room:m", "message", {"text": "hi"})
            response = await http_get(hub.port, "/metrics")
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = response.body.decode()
            assert _sample(text, "triohub_connections") == 1
            assert _sample(text, "triohub_joins_total") == 1
            assert _sample(text, "triohub_messages_in_total") == 2
            assert _sample(text, "triohub_connections_accepted_total") == 1
            for name in (
                "triohub_messages_out_total",
                "triohub_frames_out_total",
                "triohub_slow_consumers_total",
                "triohub_actors",
                "triohub_mailbox_depth",
            ):
                _sample(text, name)
            tasks_with_ann = _sample(text, "triohub_tasks")
        # Ann's tasks (her connection's, her session's) end with her connection.
        await wait_until(lambda: live_tasks() < tasks_with_ann)
        response = await http_get(hub.port, "/metrics")
        assert _sample(response.body.decode(), "triohub_tasks") < tasks_with_ann
        assert "# TYPE triohub_joins_total counter" in text


async def test_root_serves_the_demo_page(hub):
    with trio.fail_after(10):
        response = await http_get(hub.port, "/")
        assert response.status == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.body


async def test_unknown_path_is_404(hub):
    with trio.fail_after(10):
        response = await http_get(hub.port, "/no/such/thing")
        assert response.status == 404


async def test_echo_endpoint_echoes_text_as_text_and_binary_as_binary(hub):
    url = f"ws://127.0.0.1:{hub.port}/echo"
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(url) as websocket:
            assert websocket.subprotocol is None
            await websocket.send_message("héllo")
            echoed = await websocket.get_message()
            assert (type(echoed), echoed) == (str, "héllo")
            await websocket.send_message(b"\x00\x01\xff")
            echoed = await websocket.get_message()
            assert (type(echoed), echoed) == (bytes, b"\x00\x01\xff")


async def test_plain_get_on_the_websocket_path_is_426_not_a_static_404(hub):
    with trio.fail_after(10):
        response = await http_get(hub.port, "/ws")
        assert response.status == 426
        assert response.headers["upgrade"] == "websocket"
