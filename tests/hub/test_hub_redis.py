"""Hubs on one Redis: two hub nodes in this process, each with its own RedisBackplane.

A real Valkey server (tests/support/valkey_support.py), real sockets, real
clients. One node runs each topic, the other relays to it (tests/hub/test_hub_cluster.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping

import trio
from running_hub import RunningHub
from valkey_support import ValkeyServer, wait_for_nodes
from wire_support import http_get

from hub.app import Hub
from hub.backplane.redis import RedisBackplane
from hub.protocol import Payload
from hub.services import Service
from hub.topics import Member


class ShoutService(Service):
    """Every event a member publishes goes to every member, on every node, not kept."""

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        return None

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.broadcast(event, payload)


def shout_app() -> Hub:
    app = Hub("redis test")
    app.route("shout:*", ShoutService)
    return app


async def test_a_broadcast_reaches_clients_of_both_nodes_once_and_in_order(
    start_hub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    backplane = {"redis_url": valkey_server.url}
    one = await start_hub(shout_app(), backplane=backplane)
    two = await start_hub(shout_app(), backplane=backplane)
    plane = one.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    with trio.fail_after(20):
        async with one.client() as ann, two.client("msgpack") as bob:
            await ann.join_ok("shout:x")
            await bob.join_ok("shout:x")
            await wait_for_nodes(plane, "shout:x", 2)
            for n in range(30):
                await ann.publish("shout:x", "n", n)
            for client in (ann, bob):
                got = [(await client.next_push("shout:x")).payload for _ in range(30)]
                assert got == list(range(30))
            # Exactly once: nothing more arrives after a final marker.
            await bob.publish("shout:x", "end", None)
            for client in (ann, bob):
                assert (await client.next_push("shout:x")).event == "end"
                assert client.take_unread() == []


def metrics_of(running: RunningHub) -> str:
    return running.runtime.metrics.render().decode()


async def test_healthz_says_when_redis_is_away_and_the_node_keeps_serving(
    start_hub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    running = await start_hub(shout_app(), backplane={"redis_url": valkey_server.url})
    plane = running.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    with trio.fail_after(30):
        await plane.wait_healthy(True)
        body = json.loads((await http_get(running.port, "/healthz")).body)
        assert body["status"] == "ok"
        assert body["backplane"] == {"kind": "redis", "connected": True}
        assert 'triohub_backplane_connected{kind="redis"} 1.0' in metrics_of(running)
        async with running.client() as ann:
            await ann.join_ok("shout:y")
            valkey_server.stop()
            try:
                await plane.wait_healthy(False)
                response = await http_get(running.port, "/healthz")
                body = json.loads(response.body)
                assert response.status == 200  # it still serves its own clients
                assert body["status"] == "degraded"
                assert body["backplane"] == {"kind": "redis", "connected": False}
                assert 'triohub_backplane_connected{kind="redis"} 0.0' in metrics_of(running)
                # Its own clients still hear each other.
                await ann.publish("shout:y", "alone", 1)
                assert (await ann.next_push("shout:y")).payload == 1
            finally:
                valkey_server.start()
            await plane.wait_healthy(True)
            body = json.loads((await http_get(running.port, "/healthz")).body)
            assert body["status"] == "ok"
            # Subscribed again: another node's client hears this one's.
            other = await start_hub(shout_app(), backplane={"redis_url": valkey_server.url})
            async with other.client() as bob:
                await bob.join_ok("shout:y")
                await wait_for_nodes(plane, "shout:y", 2)
                await ann.publish("shout:y", "back", 2)
                assert (await bob.next_push("shout:y")).payload == 2


async def test_a_history_read_while_redis_is_away_is_answered_and_the_topic_goes_on(
    start_hub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    running = await start_hub(shout_app(), backplane={"redis_url": valkey_server.url})
    plane = running.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    with trio.fail_after(30):
        async with running.client() as ann:
            await ann.join_ok("shout:h")
            valkey_server.stop()
            try:
                await plane.wait_healthy(False)
                # The topic must neither wait for Redis (its members would
                # hear nothing meanwhile) nor crash: the reader is told.
                reply = await ann.call("shout:h", "$history", {}, timeout=20)
                assert not reply.ok
                assert reply.error_code == "overloaded"
                assert "history" in (reply.error_message or "")
                await ann.publish("shout:h", "still", 1)
                assert (await ann.next_push("shout:h")).payload == 1
                assert running.runtime.topics.count() == 1
            finally:
                valkey_server.start()
            await plane.wait_healthy(True)
            # Back: the topic reads its history again.
            reply = await ann.call("shout:h", "$history", {})
            assert reply.ok, reply


async def test_a_hub_whose_redis_is_away_at_start_serves_degraded_and_stops_promptly(
    start_hub,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = await start_hub(shout_app(), backplane={"redis_url": f"redis://127.0.0.1:{port}/0"})
    with trio.fail_after(30):
        body = json.loads((await http_get(running.port, "/healthz")).body)
        assert body["status"] == "degraded"
        assert body["backplane"] == {"kind": "redis", "connected": False}
        async with running.client() as ann:
            # A topic needs its history's position from Redis: refused at once.
            reply = await ann.join("shout:z")
            assert reply.error_code == "service_error"
        running.runtime.request_shutdown()
        await running.returned.wait()  # not held by the retries
