"""The application's connection hooks, `where` and `disconnect`, over memory transports.

`on_connect` runs after authentication with the identity and a data bag
that services see; it may refuse a client; `on_disconnect` gets the close
code and reason; a hook that fails is logged and contained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from memory_support import connect_memory, read_frames

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, ServerConfig, UsersConfig
from hub.connections import Connection
from hub.errors import ConnectRefusedError
from hub.identity import Identity
from hub.protocol import JSON, Call, Join, Payload, Reply
from hub.services import Service
from hub.topics import Member
from hub.transport import MemoryClient, TransportClosed

HOOK_TIMEOUT = 5.0


class WhoAmI(Service):
    """Answers a call with what the connection's data bag holds."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return dict(member.data)


class Recorder:
    """Connection hooks that record what they were called with; `refuse` / `fail` users."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, object, str]] = []
        self.disconnected: list[tuple[str, int | None, str]] = []

    async def on_connect(self, connection: Connection) -> None:
        await trio.lowlevel.checkpoint()  # an async hook, awaited
        user = connection.user
        self.connected.append((connection.id, connection.identity, connection.transport))
        if user == "banned":
            raise ConnectRefusedError("this account is suspended", code=4003)
        if user == "buggy":
            raise RuntimeError("the application's bug")
        if user == "slow":
            await trio.sleep_forever()
        connection.data["plan"] = "pro" if user == "ada" else "free"

    def on_disconnect(self, connection: Connection, code: int | None, reason: str) -> None:
        self.disconnected.append((connection.id, code, reason))


async def start(nursery: trio.Nursery, recorder: Recorder) -> HubRuntime:
    app = Hub("hooks", on_connect=recorder.on_connect, on_disconnect=recorder.on_disconnect)
    app.route("who:*", WhoAmI)
    config = HubConfig(
        server=ServerConfig(port=0), users=UsersConfig(hook_timeout_seconds=HOOK_TIMEOUT)
    )
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    return runtime


async def call(client: MemoryClient, ref: int, topic: str, event: str = "x") -> Reply:
    client.send(JSON.encode(Join(ref, topic, {})))
    [joined] = await read_frames(client, 1)
    assert isinstance(joined, Reply) and joined.ok, joined
    client.send(JSON.encode(Call(ref + 1, topic, event, None)))
    [reply] = await read_frames(client, 1)
    assert isinstance(reply, Reply)
    return reply


async def closed_with(client: MemoryClient) -> TransportClosed:
    with pytest.raises(TransportClosed) as closed:
        while True:
            await client.receive()
    return closed.value


async def test_on_connect_sees_the_identity_and_fills_a_data_bag_services_see(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    runtime = await start(nursery, recorder)
    with trio.fail_after(30):
        ada, ada_done = await connect_memory(runtime, nursery, identity=Identity("ada"))
        bo, _ = await connect_memory(runtime, nursery, identity="bo")
        assert (await call(ada, 1, "who:1")).payload == {"plan": "pro"}
        assert (await call(bo, 1, "who:1")).payload == {"plan": "free"}
        seen = {repr(identity): (id_, kind) for id_, identity, kind in recorder.connected}
        assert set(seen) == {repr(Identity("ada")), repr("bo")}
        ada_id, kind = seen[repr(Identity("ada"))]
        assert kind == "memory"
        # The client goes away: on_disconnect gets how its connection ended.
        ada.close()
        await ada_done.wait()
        assert recorder.disconnected == [(ada_id, 1006, "client went away")]


async def test_disconnect_ends_every_connection_of_a_user_with_the_code_and_reason(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    runtime = await start(nursery, recorder)
    with trio.fail_after(30):
        phone, phone_done = await connect_memory(runtime, nursery, identity="ada")
        laptop, laptop_done = await connect_memory(runtime, nursery, identity="ada")
        other, _ = await connect_memory(runtime, nursery, identity="bo")
        await call(phone, 1, "who:1")
        await call(laptop, 1, "who:2")
        await call(other, 1, "who:1")
        where = runtime.where("ada")
        assert sorted((w.transport, w.topics) for w in where) == [
            ("memory", ("who:1",)),
            ("memory", ("who:2",)),
        ]
        assert all(w.connected_at > 0 for w in where)

        assert runtime.disconnect("ada", 4001, "signed out everywhere") == 2
        for client, done in ((phone, phone_done), (laptop, laptop_done)):
            closed = await closed_with(client)
            assert (closed.code, closed.reason) == (4001, "signed out everywhere")
            await done.wait()
        ended = sorted(recorder.disconnected)
        assert [(code, reason) for _id, code, reason in ended] == [
            (4001, "signed out everywhere")
        ] * 2
        assert runtime.where("ada") == () and len(runtime.where("bo")) == 1
        # The other user carries on.
        assert (await call(other, 3, "who:3")).ok


async def test_on_connect_may_refuse_a_client_with_a_close_code(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    runtime = await start(nursery, recorder)
    with trio.fail_after(30):
        banned, done = await connect_memory(runtime, nursery, identity="banned")
        closed = await closed_with(banned)
        assert (closed.code, closed.reason) == (4003, "this account is suspended")
        await done.wait()
        # Never accepted: no user entry, no on_disconnect.
        assert recorder.disconnected == [] and runtime.where("banned") == ()
        assert runtime.metrics.registry.get_sample_value("triohub_connects_refused_total") == 1


@pytest.mark.parametrize(("user", "message"), [("buggy", "raised"), ("slow", "did not return")])
async def test_a_failing_on_connect_closes_its_client_1011_is_logged_and_the_hub_carries_on(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    user: str,
    message: str,
) -> None:
    recorder = Recorder()
    runtime = await start(nursery, recorder)
    with trio.fail_after(30):
        client, done = await connect_memory(runtime, nursery, identity=user)
        closed = await closed_with(client)
        assert closed.code == 1011
        await done.wait()
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(failures) == 1 and message in failures[0].getMessage()
        labels: Mapping[str, Any] = {"hook": "on_connect"}
        assert runtime.metrics.registry.get_sample_value("triohub_hook_failures_total", labels) == 1
        fine, _ = await connect_memory(runtime, nursery, identity="bo")
        assert (await call(fine, 1, "who:1")).payload == {"plan": "free"}


async def test_a_failing_on_disconnect_or_on_offline_is_logged_once_and_contained(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object) -> None:
        raise ValueError("oops")

    app = Hub("broken hooks", on_disconnect=broken, on_offline=broken)
    app.route("who:*", WhoAmI)
    config = HubConfig(server=ServerConfig(port=0), users=UsersConfig(offline_grace_seconds=1))
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    with trio.fail_after(30):
        client, done = await connect_memory(runtime, nursery, identity="ada")
        await call(client, 1, "who:1")
        client.close()
        await done.wait()
        await trio.sleep(2)
        logged = sorted(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
        assert logged == [
            "the application's on_disconnect hook raised",
            "the application's on_offline hook raised",
        ]
        again, _ = await connect_memory(runtime, nursery, identity="ada")
        assert (await call(again, 1, "who:1")).ok
