"""Plain HTTP and the echo WebSocket, on the hub's one port."""

from __future__ import annotations

import json
import os
import re
import resource

import trio
import trio_websocket
from hub_support import wait_until
from wire_support import RawConnection, RawResponse, http_get, upgrade_request

from hub.app import Hub
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


async def test_metrics_are_off_unless_asked_for(hub):
    with trio.fail_after(10):
        assert (await http_get(hub.port, "/metrics")).status == 404


async def test_metrics_are_prometheus_text_with_the_hubs_counters(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(admin={"metrics": True})
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
                "triohub_backplane_dropped_total",
                "triohub_backplane_failed_writes_total",
                "triohub_node_messages_held",
                "triohub_node_messages_dropped_total",
                "triohub_node_messages_refused_total",
            ):
                _sample(text, name)
            assert 'triohub_backplane_connected{kind="local"} 1.0' in text
            tasks_with_ann = _sample(text, "triohub_tasks")
        # Ann's tasks (her connection's, her session's) end with her connection.
        await wait_until(lambda: live_tasks() < tasks_with_ann)
        response = await http_get(hub.port, "/metrics")
        assert _sample(response.body.decode(), "triohub_tasks") < tasks_with_ann
        assert "# TYPE triohub_joins_total counter" in text


async def test_root_serves_the_demo_page_where_the_app_asks_for_it(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(Hub("demo", demo_page=True))
        response = await http_get(hub.port, "/")
        assert response.status == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.body


async def test_an_app_that_asks_for_nothing_has_no_page_no_echo_and_the_js_client(hub):
    with trio.fail_after(10):
        for path in ("/", "/index.html", "/chat.js"):
            assert (await http_get(hub.port, path)).status == 404, path
        script = await http_get(hub.port, "/triohub.js")
        assert script.status == 200
        assert b"export class TrioHub" in script.body
        assert (await _response(hub.port, upgrade_request("/echo"))).status == 404


async def _response(port: int, request: bytes) -> RawResponse:
    connection = await RawConnection.open(port)
    await connection.send_bytes(request)
    response = await connection.read_response()
    await connection.aclose()
    return response


async def test_metrics_can_be_turned_off(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(admin={"metrics": False})
        assert (await http_get(hub.port, "/metrics")).status == 404


async def test_metrics_on_an_address_of_their_own_and_not_on_the_hubs_port(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(admin={"metrics": True, "metrics_address": "127.0.0.1:0"})
        assert (await http_get(hub.port, "/metrics")).status == 404
        metrics_port = hub.runtime.metrics_gateway.port
        assert metrics_port != hub.port
        response = await http_get(metrics_port, "/metrics")
        assert response.status == 200
        assert b"triohub_connections " in response.body
        # Nothing else is on that listener.
        assert (await http_get(metrics_port, "/healthz")).status == 404
        assert (await _response(metrics_port, upgrade_request("/ws"))).status == 404


async def test_unknown_path_is_404(hub):
    with trio.fail_after(10):
        response = await http_get(hub.port, "/no/such/thing")
        assert response.status == 404


async def test_echo_endpoint_echoes_text_as_text_and_binary_as_binary(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(Hub("echo", echo=True))
        url = f"ws://127.0.0.1:{hub.port}/echo"
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


async def _healthz_on(connection: RawConnection) -> tuple[int, dict[str, object]]:
    await connection.send_bytes(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await connection.read_response()
    return response.status, json.loads(response.body)


async def test_healthz_says_full_while_the_hub_is_out_of_files(hub):
    """The accept loop at the file limit: a load balancer's kept-alive check learns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with trio.fail_after(30):
        checker = await RawConnection.open(hub.port)
        assert (await _healthz_on(checker))[0] == 200
        clients = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
            try:
                for _ in range(4):
                    clients.append(await trio.open_tcp_stream("127.0.0.1", hub.port))
            except OSError:
                pass  # this process ran out first: the hub's accepts fail all the same
            await wait_until(lambda: hub.runtime.gateway.full is not None)
            status, body = await _healthz_on(checker)
            assert status == 503
            assert body["status"] == "full"
            assert body["reason"] == "cannot accept connections: Too many open files"
        finally:
            for client in clients:
                await client.aclose()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        # Accepting works again (the connections that waited are taken): ok.
        await wait_until(lambda: hub.runtime.gateway.full is None)
        status, body = await _healthz_on(checker)
        assert (status, body["status"], body["connections"]) == (200, "ok", 0)
        await checker.aclose()


async def test_healthz_says_full_at_max_connections(start_hub):
    with trio.fail_after(10):
        hub = await start_hub(limits={"max_connections": 2})
        checker = await RawConnection.open(hub.port)
        other = await RawConnection.open(hub.port)
        await wait_until(lambda: hub.runtime.gateway.connection_count == 2)
        status, body = await _healthz_on(checker)
        assert (status, body["status"]) == (503, "full")
        assert body["reason"] == "2 connections open (max_connections)"
        await other.aclose()
        await wait_until(lambda: hub.runtime.gateway.full is None)
        assert (await _healthz_on(checker))[0] == 200
        await checker.aclose()
