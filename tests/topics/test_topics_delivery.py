"""Delivery made for games, per event: reliable, latest-value per key, volatile.

A client that stops reading (its memory transport's buffer full) is the
slow player: it must get every reliable event in order, only the newest
push per latest-value key, no volatile event pushed while it was behind,
and it must not be evicted for latest-value state however long it stalls,
while a reliable backlog past the write timeout still evicts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from memory_support import connect_memory, read_frames

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, ServerConfig, WebSocketConfig
from hub.identity import Identity
from hub.protocol import JSON, Join, Payload, Publish, Push, Reply
from hub.services import Service
from hub.topics import Member
from hub.transport import TransportClosed

WRITE_TIMEOUT = 1.0
SECRET = "a-test-secret-that-is-long-enough-0123456789"
# Messages a stalled client's transport takes before they queue in its outbox.
BUFFER = 2


class Feed(Service):
    """Publishes each event back to everyone with the delivery its name says."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        assert isinstance(payload, dict)
        match event:
            case "state":
                self.topic.broadcast("state", payload, key=str(payload["key"]))
            case "effect":
                self.topic.broadcast("effect", payload, volatile=True)
            case "log":
                self.topic.broadcast("log", payload)


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = Hub("delivery")
    app.route("feed:*", Feed)
    config = HubConfig(
        server=ServerConfig(port=0), websocket=WebSocketConfig(write_timeout=WRITE_TIMEOUT)
    )
    yield await nursery.start(serve_hub, app, config)


@pytest.fixture
async def runtime_with_tokens(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = Hub("delivery")
    app.route("feed:*", Feed)
    config = HubConfig.from_settings(
        {
            "server": {"port": 0},
            "websocket": {"write_timeout": WRITE_TIMEOUT},
            "auth": {"secret": SECRET, "refresh_lead_seconds": 0, "leeway_seconds": 0},
        }
    )
    yield await nursery.start(serve_hub, app, config)


async def _joined(
    runtime: HubRuntime, nursery: trio.Nursery, *, buffer: int = 64, identity: object = None
) -> object:
    client, _done = await connect_memory(runtime, nursery, buffer=buffer, identity=identity)
    client.send(JSON.encode(Join(1, "feed:x", {})))
    [reply] = await read_frames(client, 1)
    assert isinstance(reply, Reply) and reply.ok
    return client


def _drain(client: object) -> list[Push]:
    frames = []
    while (message := client.receive_nowait()) is not None:  # type: ignore[attr-defined]
        frames.extend(JSON.decode_strict(message))
    assert all(isinstance(frame, Push) for frame in frames), frames
    return frames


async def _publish_for(publisher: object, seconds: float, events: tuple[str, ...]) -> int:
    """Publish each of `events` every 50 ms for `seconds` (state in keys a and b); return steps."""
    steps = round(seconds / 0.05)
    for step in range(steps):
        for event in events:
            keys = ("a", "b") if event == "state" else ("",)
            for key in keys:
                frame = Publish(0, "feed:x", event, {"key": key, "n": step})
                publisher.send(JSON.encode(frame))  # type: ignore[attr-defined]
        await trio.sleep(0.05)
        _drain(publisher)
    return steps


async def _read_all(client: object) -> list[Push]:
    await trio.testing.wait_all_tasks_blocked()
    pushes = _drain(client)
    while True:
        await trio.testing.wait_all_tasks_blocked()
        more = _drain(client)
        if not more:
            return pushes
        pushes.extend(more)


async def test_a_client_stalled_for_2_s_gets_the_newest_state_per_key_and_is_not_evicted(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        publisher = await _joined(runtime, nursery)
        slow = await _joined(runtime, nursery, buffer=BUFFER)
        # The slow client reads nothing for 2 s, twice the write timeout,
        # while state in two keys (and effects) goes out every 50 ms.
        steps = await _publish_for(publisher, 2.0, ("state", "effect"))
        await trio.testing.wait_all_tasks_blocked()
        [session] = [c.session for c in runtime.connections() if c.session.transport.queued]
        assert not session.ended, "a client behind on latest-value state only stays"
        pushes = await _read_all(slow)
    assert not session.ended
    assert runtime.metrics.slow_consumers._value.get() == 0
    for key in ("a", "b"):
        states = [p.payload["n"] for p in pushes if p.event == "state" and p.payload["key"] == key]
        assert states[-1] == steps - 1, "the newest state of each key"
        assert len(states) <= BUFFER + 1, f"no backlog of key {key}: {states}"
    effects = [p for p in pushes if p.event == "effect"]
    # The first met a full socket with nothing queued (it waited, as state
    # does); every later one found the client behind and was dropped.
    assert [p.payload["n"] for p in effects] == [0]
    assert runtime.metrics.volatile_dropped._value.get() == steps - 1


async def test_a_client_stalled_on_latest_value_state_is_closed_when_its_token_expires(
    runtime_with_tokens: HubRuntime,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The stalled session goes on writing its state, but must still handle
    # its timers: an expired token is not served on by reading nothing.
    runtime = runtime_with_tokens
    assert runtime.tokens is not None
    ttl = 20
    identity = runtime.tokens.verify(runtime.tokens.mint("ann", ttl=ttl))
    assert isinstance(identity, Identity) and identity.expires_at is not None
    with trio.fail_after(120):
        slow = await _joined(runtime, nursery, buffer=BUFFER, identity=identity)
        start = trio.current_time()
        # It reads nothing, and sends its own state (no acknowledgement
        # asked), which every member, itself too, gets as latest-value.
        with pytest.raises(TransportClosed):
            for step in range(round(3 * ttl / 0.05)):
                frame = Publish(0, "feed:x", "state", {"key": "a", "n": step})
                slow.send(JSON.encode(frame))  # type: ignore[attr-defined]
                await trio.sleep(0.05)
        stopped = trio.current_time() - start
        with pytest.raises(TransportClosed) as closed:
            while True:
                await slow.receive()  # type: ignore[attr-defined]
    assert (closed.value.code, closed.value.reason) == (1008, "token expired")
    assert stopped <= ttl + WRITE_TIMEOUT
    assert runtime.metrics.slow_consumers._value.get() == 0


async def test_a_slow_client_gets_every_reliable_event_in_order_and_no_volatile_one(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        publisher = await _joined(runtime, nursery)
        slow = await _joined(runtime, nursery, buffer=BUFFER)
        # Within the write timeout: a reliable backlog is waited for.
        steps = await _publish_for(publisher, WRITE_TIMEOUT / 2, ("log", "effect"))
        pushes = await _read_all(slow)
    logs = [p.payload["n"] for p in pushes if p.event == "log"]
    assert logs == list(range(steps)), "reliable events: all of them, in order"
    effects = [p.payload["n"] for p in pushes if p.event == "effect"]
    # Only what the transport took before the client fell behind.
    assert len(effects) < BUFFER
    assert runtime.metrics.volatile_dropped._value.get() >= steps - BUFFER


async def test_a_client_behind_on_reliable_events_is_still_evicted_after_the_write_timeout(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        publisher = await _joined(runtime, nursery)
        slow = await _joined(runtime, nursery, buffer=BUFFER)
        for step in range(BUFFER + 2):
            publisher.send(JSON.encode(Publish(0, "feed:x", "log", {"n": step})))  # type: ignore[attr-defined]
        await trio.sleep(WRITE_TIMEOUT + 0.5)
        with pytest.raises(TransportClosed) as closed:
            while True:
                await slow.receive()  # type: ignore[attr-defined]
    assert closed.value.code == 1013


async def test_volatile_events_reach_a_client_that_keeps_up(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        publisher = await _joined(runtime, nursery)
        reader = await _joined(runtime, nursery)
        for step in range(20):
            publisher.send(JSON.encode(Publish(0, "feed:x", "effect", {"n": step})))  # type: ignore[attr-defined]
            [push] = await read_frames(reader, 1)  # type: ignore[arg-type]
            assert isinstance(push, Push) and push.payload == {"n": step}
    assert runtime.metrics.volatile_dropped._value.get() == 0


def test_a_kept_event_cannot_be_latest_value_or_volatile() -> None:
    from hub.topics import Topic

    topic = Topic("feed:x", lambda record: None)
    with pytest.raises(ValueError, match="reliably"):
        topic.broadcast("e", None, keep=True, key="k")
    with pytest.raises(ValueError, match="reliably"):
        topic.broadcast("e", None, keep=True, volatile=True)
