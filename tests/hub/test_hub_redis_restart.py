"""Redis stopped and restarted (losing its data) while clients of two hub nodes talk.

One room, a client on each node; the client on node one publishes
throughout, before, during and after the outage. Node one runs the room
(its client joined first: it holds the room's lease), node two relays to it
(docs/deployment.md#ownership-one-node-per-topic). Afterwards the client on
node two comes back (to node one) with the epoch and offset it last saw and
gets every message it missed, recovered; /healthz said degraded during the
outage, ok after.
"""

from __future__ import annotations

import json

import pytest
import trio
from hub_support import HubClient
from running_hub import StartHub
from valkey_support import ValkeyServer, wait_for_nodes
from wire_support import http_get

from hub.app import Hub
from hub.backplane.redis import RedisBackplane
from hub.protocol import Join, Push
from hub.services import RoomService

pytestmark = pytest.mark.timeout(90)


def app() -> Hub:
    hub = Hub("restart")
    hub.route("room:*", RoomService)
    return hub


async def health(port: int) -> str:
    status: str = json.loads((await http_get(port, "/healthz")).body)["status"]
    return status


async def say(client: HubClient, texts: range) -> None:
    for n in texts:
        reply = await client.publish_acked("room:r", "message", {"text": str(n)})
        assert reply.ok, reply


def offsets(pushes: list[Push]) -> list[int | None]:
    return [push.offset for push in pushes if push.event == "message"]


def texts(pushes: list[Push]) -> list[int]:
    return [int(push.payload["text"]) for push in pushes if push.event == "message"]  # type: ignore[index]


async def test_clients_recover_every_message_after_redis_restarts_empty(
    start_hub: StartHub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    redis = {"redis_url": valkey_server.url}
    one = await start_hub(app(), backplane=redis)
    two = await start_hub(app(), backplane=redis)
    planes = [one.runtime.backplane, two.runtime.backplane]
    assert all(isinstance(plane, RedisBackplane) for plane in planes)
    with trio.fail_after(60):
        async with one.client() as ann, two.client() as bob:
            joined = await ann.join_ok("room:r", {"user": "ann"})
            epoch = joined.payload["epoch"]  # type: ignore[index]
            await bob.join_ok("room:r", {"user": "bob"})
            await wait_for_nodes(one.runtime.backplane, "room:r", 2)
            await say(ann, range(0, 10))
            seen: list[Push] = [await bob.next_push("room:r") for _ in range(10)]
            assert texts(seen) == list(range(10))
            last = seen[-1].offset

            valkey_server.stop()
            try:
                for plane in planes:
                    await plane.wait_healthy(False)  # type: ignore[union-attr]
                assert await health(one.port) == "degraded"
                assert await health(two.port) == "degraded"
                # Node one's clients still hear each other meanwhile.
                await say(ann, range(10, 20))
            finally:
                valkey_server.start()
            for plane in planes:
                await plane.wait_healthy(True)  # type: ignore[union-attr]
            assert await health(one.port) == "ok"
            assert await health(two.port) == "ok"
            await say(ann, range(20, 30))

            # Bob comes back, to node one (a client reconnects to any node),
            # with where he was: what he missed comes, all of it, from Redis.
            await bob.leave("room:r")
            seen += [frame for frame in bob.take_unread() if isinstance(frame, Push)]
            # His leave crosses to the room's node through Redis: once it is
            # there, his name is free for his next connection.
            while "bob" in (await one.runtime.presence("room:r")).users:
                await trio.lowlevel.checkpoint()
        async with one.client() as bob:
            ref = bob.next_ref()
            await bob.send(Join(ref, "room:r", {"user": "bob"}, last, epoch))
            reply = await bob.reply_to(ref)
            assert reply.ok, reply
            assert reply.payload["recovered"] is True, reply  # type: ignore[index]
            assert reply.payload["epoch"] == epoch  # type: ignore[index]
            while True:
                push = await bob.next_push("room:r")
                seen.append(push)
                if push.event == "message" and push.payload["text"] == "29":  # type: ignore[index]
                    break
            by_offset = {offset: n for offset, n in zip(offsets(seen), texts(seen), strict=True)}
            assert sorted(by_offset.values()) == list(range(30))
            assert sorted(by_offset) == list(range(1, 31))
