"""Notifications, personal topics and the users registry, on trio's autojump clock.

A notification sent while its user is offline waits in the inbox, comes on
the next connect, again on a reconnect until acknowledged, and an ack from
one device clears it on all; the inbox's limits are counted and told;
the offline hook fires once per absence, after the grace period.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
import trio.testing
from memory_support import connect_memory, read_frames

import actors
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, NotificationsConfig, ServerConfig, UsersConfig
from hub.errors import InvalidNotificationError
from hub.identity import Identity
from hub.notifications import NOTIFIER, Notify, notify_via
from hub.protocol import JSON, Call, Join, Payload, Push, Reply
from hub.services import RoomService
from hub.transport import MemoryClient
from hub.users import UserOffline

GRACE = 30.0
MAX_PER_USER = 3
MAX_AGE = 600.0


@pytest.fixture
def offline() -> list[UserOffline]:
    return []


@pytest.fixture
async def runtime(nursery: trio.Nursery, offline: list[UserOffline]) -> AsyncIterator[HubRuntime]:
    app = Hub("notifications", on_offline=offline.append)
    app.route("room:*", RoomService)
    config = HubConfig(
        server=ServerConfig(port=0),
        users=UsersConfig(offline_grace_seconds=GRACE),
        notifications=NotificationsConfig(max_per_user=MAX_PER_USER, max_age_seconds=MAX_AGE),
    )
    running: HubRuntime = await nursery.start(serve_hub, app, config)
    yield running


async def request(client: MemoryClient, frame: Join | Call) -> tuple[Reply, list[Any]]:
    """Send `frame`; return its Reply and the frames that came before it."""
    client.send(JSON.encode(frame))
    before: list[Any] = []
    while True:
        [received] = await read_frames(client, 1)
        if isinstance(received, Reply) and received.ref == frame.ref:
            return received, before
        before.append(received)


async def join_inbox(client: MemoryClient, ref: int, user: str) -> tuple[Reply, list[Push]]:
    """Join `user:<user>`; return the Reply and the notifications pushed right after it.

    The pushes after the Reply are read up to the answer of an `unread`
    call sent once the Reply came: the topic pushes them before it handles
    anything else, so they all come before that answer.
    """
    reply, before = await request(client, Join(ref, f"user:{user}", {}))
    assert before == []
    if not reply.ok:
        return reply, []
    status, pushed = await request(client, Call(ref + 1, f"user:{user}", "unread", None))
    assert status.ok, status
    return reply, pushed


def payloads(pushes: list[Push]) -> list[tuple[str, Payload, int | None]]:
    return [(push.event, push.payload, push.offset) for push in pushes]


def metric(runtime: HubRuntime, name: str, labels: Mapping[str, str] | None = None) -> float:
    value = runtime.metrics.registry.get_sample_value(name, dict(labels or {}))
    return 0.0 if value is None else value


async def test_a_notification_sent_offline_comes_on_connect_and_one_ack_clears_it_on_every_device(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        sent = await runtime.notify("ada", "invite", {"room": "chess:7"})
        assert runtime.where("ada") == ()

        phone, _ = await connect_memory(runtime, nursery, identity="ada")
        reply, pushed = await join_inbox(phone, 1, "ada")
        assert reply.ok and reply.payload["unread"] == 1 and reply.payload["dropped"] == 0
        assert payloads(pushed) == [("invite", {"room": "chess:7"}, sent.offset)]

        # A second device of the same user gets it too: it is not acknowledged.
        laptop, _ = await connect_memory(runtime, nursery, identity=Identity("ada"))
        _reply, pushed = await join_inbox(laptop, 1, "ada")
        assert payloads(pushed) == [("invite", {"room": "chess:7"}, sent.offset)]

        # While both are joined, a new one reaches both at once.
        later = await runtime.notify("ada", "message", {"text": "hi"})
        for device in (phone, laptop):
            [push] = await read_frames(device, 1)
            assert payloads([push]) == [("message", {"text": "hi"}, later.offset)]

        # The phone acknowledges both: the laptop is told, and both see 0 unread.
        answer, before = await request(phone, Call(3, "user:ada", "ack", {"offset": later.offset}))
        assert answer.ok and answer.payload["unread"] == 0
        assert answer.payload["acked"] == later.offset
        [phone_unread] = before
        [laptop_unread] = await read_frames(laptop, 1)
        for unread in (phone_unread, laptop_unread):
            assert isinstance(unread, Push) and unread.event == "$unread"
            assert unread.payload["unread"] == 0 and unread.payload["acked"] == later.offset

        # A reconnect gets nothing again: acknowledged once, cleared for all.
        laptop.close()
        again, _ = await connect_memory(runtime, nursery, identity="ada")
        reply, pushed = await join_inbox(again, 1, "ada")
        assert reply.payload["unread"] == 0 and pushed == []


async def test_what_is_not_acknowledged_comes_again_on_reconnect(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        device, _ = await connect_memory(runtime, nursery, identity="bo")
        await join_inbox(device, 1, "bo")
        first = await runtime.notify("bo", "ping", 1)
        second = await runtime.notify("bo", "ping", 2)
        assert len(await read_frames(device, 2)) == 2
        # Only the first is acknowledged before the connection drops.
        answer, _ = await request(device, Call(3, "user:bo", "ack", {"offset": first.offset}))
        assert answer.payload["unread"] == 1
        device.close()
        device, _ = await connect_memory(runtime, nursery, identity="bo")
        _reply, pushed = await join_inbox(device, 1, "bo")
        assert payloads(pushed) == [("ping", 2, second.offset)]


async def test_only_the_users_own_connections_may_join_a_personal_topic(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        await runtime.notify("ada", "secret", {"pin": 1234})
        for identity in ("eve", None):
            eve, _ = await connect_memory(runtime, nursery, identity=identity)
            reply, before = await request(eve, Join(1, "user:ada", {}))
            assert not reply.ok and reply.error_code == "forbidden" and before == []
            # Nor can anyone publish there, or acknowledge what is not theirs.
            reply, _ = await request(eve, Call(2, "user:ada", "ack", {"offset": 1}))
            assert reply.error_code == "not_joined"
        assert len(await runtime.notifications.inbox.pending("ada")) == 1


async def test_bad_acks_and_notifications_get_clear_errors(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        device, _ = await connect_memory(runtime, nursery, identity="cy")
        await join_inbox(device, 1, "cy")
        for ref, payload in enumerate(
            [None, {"offset": -1}, {"offset": "3"}, {"offset": 10**9}, {"offset": 0, "epoch": "x"}],
            start=3,
        ):
            reply, _ = await request(device, Call(ref, "user:cy", "ack", payload))
            assert not reply.ok and reply.error_code == "bad_field", (payload, reply)
        for event, data in [("$unread", None), ("has space", None), ("bin", b"\x00")]:
            with pytest.raises(InvalidNotificationError):
                await runtime.notify("cy", event, data)
        with pytest.raises(InvalidNotificationError):
            await runtime.notify("", "ping", None)


async def test_inbox_limits_drop_the_oldest_and_say_so_in_the_metric_and_to_the_client(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(MAX_AGE * 4):
        sent = [await runtime.notify("di", "n", index) for index in range(MAX_PER_USER + 2)]
        assert metric(runtime, "triohub_notifications_dropped_total", {"reason": "full"}) == 2

        device, _ = await connect_memory(runtime, nursery, identity="di")
        reply, pushed = await join_inbox(device, 1, "di")
        assert reply.payload["dropped"] == 2 and reply.payload["recovered"] is False
        assert [push.offset for push in pushed] == [n.offset for n in sent[2:]]

        # Acknowledging what it saw clears the flag.
        ack = Call(3, "user:di", "ack", {"offset": sent[-1].offset})
        answer, before = await request(device, ack)
        assert answer.payload["dropped"] == 0
        [unread] = before
        assert unread.event == "$unread" and unread.payload["dropped"] == 0

        # Past the age limit, what is not acknowledged is dropped too, and a
        # device joined is pushed the new count as it happens.
        await runtime.notify("di", "old", None)
        [push] = await read_frames(device, 1)
        assert push.event == "old"
        await trio.sleep(MAX_AGE + 60)
        [unread] = await read_frames(device, 1)
        assert unread.event == "$unread"
        assert unread.payload["dropped"] == 1 and unread.payload["unread"] == 0
        assert metric(runtime, "triohub_notifications_dropped_total", {"reason": "expired"}) == 1


async def test_the_offline_hook_fires_once_per_absence_after_the_grace_period(
    runtime: HubRuntime,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    offline: list[UserOffline],
) -> None:
    with trio.fail_after(GRACE * 20):
        phone, _ = await connect_memory(runtime, nursery, identity="ed")
        laptop, laptop_done = await connect_memory(runtime, nursery, identity="ed")
        await join_inbox(phone, 1, "ed")
        await join_inbox(laptop, 1, "ed")
        # One device leaving is no absence.
        laptop.close()
        await laptop_done.wait()
        await trio.sleep(GRACE * 2)
        assert offline == [] and len(runtime.where("ed")) == 1

        # Back within the grace period: still no absence.
        phone.close()
        await trio.sleep(GRACE / 2)
        assert runtime.users.leaving("ed")
        phone, phone_done = await connect_memory(runtime, nursery, identity="ed")
        await join_inbox(phone, 1, "ed")
        await trio.sleep(GRACE * 2)
        assert offline == []

        note = await runtime.notify("ed", "reminder", {"at": "noon"})
        [_push] = await read_frames(phone, 1)
        phone.close()
        await phone_done.wait()
        await trio.sleep(GRACE - 1)
        assert offline == []
        await trio.sleep(2)
        [report] = offline
        assert report.user == "ed" and report.dropped == 0
        assert [(n.offset, n.event, n.data) for n in report.unacknowledged] == [
            (note.offset, "reminder", {"at": "noon"})
        ]
        assert report.hub is runtime
        # Exactly once: nothing more, however long it stays away.
        await trio.sleep(GRACE * 5)
        assert len(offline) == 1
        assert metric(runtime, "triohub_users_offline_total") == 1


class Reminder(actors.Actor):
    """A backend actor that notifies through the hub's notifier when called."""

    async def handle_call(self, request: object, call: actors.Call) -> object:
        user, event = request  # type: ignore[misc]
        try:
            notification = await notify_via(self.ctx.system, user, event, {"from": "backend"})
        except InvalidNotificationError as error:
            return f"refused: {error}"
        return notification.offset


async def test_a_backend_actor_notifies_through_the_hubs_notifier(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    app = Hub("backend notifies")
    app.actor("reminder", Reminder)
    runtime: HubRuntime = await nursery.start(
        serve_hub, app, HubConfig(server=ServerConfig(port=0))
    )
    with trio.fail_after(30):
        device, _ = await connect_memory(runtime, nursery, identity="fay")
        await join_inbox(device, 1, "fay")
        offset = await runtime.actor("reminder").call(("fay", "due"))
        [push] = await read_frames(device, 1)
        assert payloads([push]) == [("due", {"from": "backend"}, offset)]
        refused = await runtime.actor("reminder").call(("fay", "$nope"))
        assert refused.startswith("refused: ") and "'$'" in refused
        # A plain send goes on at once; the notification still arrives.
        notifier = runtime.system.registry.whereis(NOTIFIER)
        assert notifier is not None
        await notifier.send(Notify("fay", "later", None))
        [push] = await read_frames(device, 1)
        assert push.event == "later"
