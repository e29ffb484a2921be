"""Notification inboxes in Redis: two hub nodes on one real Valkey share each user's inbox.

A notification made on one node reaches the user's devices on every node
at once, waits in Redis for a device that joins on either, and an ack on
one clears it for all.
"""

from __future__ import annotations

import trio
from running_hub import StartHub
from valkey_support import ValkeyServer, wait_for_nodes

from hub.app import Hub
from hub.backplane.redis import RedisBackplane
from hub.gateway import ConnectRequest
from hub.notifications import WAKE_TOPIC
from hub.protocol import Push
from hub.redis_inbox import RedisInbox, read_limits


def user_from_query(request: ConnectRequest) -> str | None:
    return request.query.get("user")


def app() -> Hub:
    return Hub("redis inbox", authenticate=user_from_query)


async def test_a_notification_on_one_node_reaches_the_users_devices_on_both(
    start_hub: StartHub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    redis = {"redis_url": valkey_server.url}
    one = await start_hub(app(), backplane=redis)
    two = await start_hub(app(), backplane=redis)
    plane = one.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    assert isinstance(one.runtime.notifications.inbox, RedisInbox)
    with trio.fail_after(30):
        await wait_for_nodes(plane, WAKE_TOPIC, 2)
        # Made while no device is joined: it waits in Redis.
        waiting = await one.runtime.notify("ada", "invite", {"room": "chess:7"})
        async with one.client(query="user=ada") as phone, two.client(query="user=ada") as laptop:
            for device in (phone, laptop):
                reply = await device.join_ok("user:ada")
                assert reply.payload["unread"] == 1
                assert reply.payload["offset"] == waiting.offset
                push = await device.next_push("user:ada")
                assert (push.event, push.payload, push.offset) == (
                    "invite",
                    {"room": "chess:7"},
                    waiting.offset,
                )
            # Made on node two, while both are joined: each device gets it at once.
            live = await two.runtime.notify("ada", "turn", {"n": 1})
            assert live.offset > waiting.offset
            for device in (phone, laptop):
                push = await device.next_push("user:ada")
                assert (push.event, push.offset) == ("turn", live.offset)
            # An ack on node one clears both for both devices.
            answer = await laptop.call("user:ada", "ack", {"offset": live.offset})
            assert answer.ok, answer
            assert answer.payload["unread"] == 0
            assert answer.payload["acked"] == live.offset
            status = await two.runtime.notifications.inbox.status("ada")
            assert (status.unread, status.acked) == (0, live.offset)
            # A third device, on the other node, has nothing to catch up on.
            async with one.client(query="user=ada") as tablet:
                reply = await tablet.join_ok("user:ada")
                assert reply.payload["unread"] == 0
                assert reply.payload["epoch"] == status.epoch
                assert await tablet.call("user:ada", "unread") is not None
                assert not any(isinstance(frame, Push) for frame in tablet.take_unread())
            # Exactly once: nothing else reached the first two.
            marker = await two.runtime.notify("ada", "end")
            for device in (phone, laptop):
                push = await device.wait_for(
                    lambda frame: isinstance(frame, Push) and frame.event in ("turn", "end")
                )
                assert (push.event, push.offset) == ("end", marker.offset)


async def test_redis_inboxes_keep_their_limits_and_say_what_they_dropped(
    valkey_server: ValkeyServer,
) -> None:
    valkey_server.flush()
    plane = RedisBackplane(valkey_server.url)
    now = [1000.0]
    dropped: list[tuple[str, int, str]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        with trio.fail_after(20):
            await plane.wait_healthy()
            inbox = RedisInbox(
                plane.run_script,
                max_per_user=3,
                max_age=60.0,
                clock=lambda: now[0],
                on_dropped=lambda user, count, reason: dropped.append((user, count, reason)),
            )
            offsets = [(await inbox.add("bo", "n", k)).offset for k in range(5)]
            assert offsets == sorted(offsets)
            assert dropped == [("bo", 1, "full"), ("bo", 1, "full")]
            pending = await inbox.pending("bo")
            assert [n.data for n in pending] == [2, 3, 4]
            assert [n.data for n in await inbox.pending("bo", after=offsets[3])] == [4]
            status = await inbox.status("bo")
            assert (status.unread, status.dropped, status.offset) == (3, 2, offsets[-1])
            # Older than the age limit: the sweep drops it and names the user.
            now[0] += 61.0
            assert await inbox.expire() == ["bo"]
            assert dropped[-1] == ("bo", 3, "expired")
            status = await inbox.status("bo")
            assert (status.unread, status.dropped) == (0, 5)
            # Acknowledging clears the dropped count; an offset never given is refused.
            status = await inbox.ack("bo", offsets[-1])
            assert (status.acked, status.dropped) == (offsets[-1], 0)
            try:
                await inbox.ack("bo", offsets[-1] + 100)
            except Exception as error:
                assert "was never given" in str(error)
            else:
                raise AssertionError("an offset never given was acknowledged")
            # The sweep wrote the limits for `hub.publisher`.
            assert await read_limits(plane.run_script, "triohub") == (3, 60.0)
            await plane.aclose()
