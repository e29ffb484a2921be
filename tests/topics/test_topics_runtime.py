"""The topic side, driven through `hub.testing` (memory transports) on trio's autojump clock.

Contained services (SystemExit, KeyboardInterrupt, a hang), history that
outlives a room's idle stop and the epoch that tells a rejoin it is stale,
server-side publish, backend actors called with the client's deadline,
service timers, and the caps on topics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import pytest
import trio
import trio.testing
from memory_support import read_frames, read_until

import actors
from hub.app import Hub, HubRuntime
from hub.backplane import Recovery
from hub.config import HubConfig, TopicsConfig
from hub.protocol import JSON, Call, Ended, Join, Leave, Payload, Publish, Push, Reply
from hub.services import EchoService, RoomService, Service
from hub.testing import TestHub, open_test_hub
from hub.topics import Member

HOOK_TIMEOUT = 5.0
EMPTY_GRACE = 10.0
RETENTION = 300.0


class Misbehaving(Service):
    """Events named after what the service then does wrong."""

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        match event:
            case "exit":
                raise SystemExit(3)
            case "interrupt":
                raise KeyboardInterrupt
            case "hang":
                await trio.sleep_forever()
            case _:
                self.topic.broadcast(event, payload)


class Recorder(RoomService):
    """A room that keeps the Recovery each join was given."""

    recoveries: list[Recovery] = []

    async def joined(self, member: Member, recovery: Recovery) -> None:
        Recorder.recoveries.append(recovery)
        await super().joined(member, recovery)


class SlowBackend(actors.Actor):
    """A backend actor whose answer takes 5 s; it records what happened to each call."""

    outcomes: list[str] = []

    async def handle_call(self, request: object, call: actors.Call) -> object:
        SlowBackend.outcomes.append(f"deadline in {call.deadline - trio.current_time():.1f} s")
        try:
            await trio.sleep(5)
        except trio.Cancelled:
            SlowBackend.outcomes.append("cancelled")
            raise
        SlowBackend.outcomes.append("answered")
        return "late"


class AsksBackend(Service):
    """Calls the backend actor `slow` while answering a client's call."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        assert self.topic.hub is not None
        answer: Payload = await self.topic.hub.actor("slow").call("work", timeout=30)
        return answer


class Ticker(Service):
    """Broadcasts a tick every second once someone joins; the timer is the topic's."""

    async def joined(self, member: Member, recovery: Recovery) -> None:
        if len(self.topic.members) == 1:
            self.topic.every(1.0, "tick")

    async def handle_timer(self, event: str, payload: Payload) -> None:
        self.topic.broadcast(event, payload)


def app() -> Hub:
    hub = Hub("topics runtime")
    hub.route("bad:*", Misbehaving)
    hub.route("echo:*", EchoService)
    hub.route("room:*", Recorder)
    hub.route("asks:*", AsksBackend)
    hub.route("tick:*", Ticker)
    hub.actor("slow", SlowBackend)
    return hub


@pytest.fixture
async def hub() -> AsyncIterator[TestHub]:
    Recorder.recoveries = []
    SlowBackend.outcomes = []
    config = HubConfig(
        topics=TopicsConfig(
            empty_grace_seconds=EMPTY_GRACE,
            hook_timeout_seconds=HOOK_TIMEOUT,
            history_retention_seconds=RETENTION,
        ),
    )
    async with open_test_hub(app(), config) as test_hub:
        yield test_hub


@pytest.fixture
def runtime(hub: TestHub) -> HubRuntime:
    return hub.runtime


async def join(
    client: object,
    ref: int,
    topic: str,
    params: Mapping[str, Payload] | None = None,
    **fields: object,
) -> Reply:
    client.send(JSON.encode(Join(ref, topic, dict(params or {}), **fields)))  # type: ignore[attr-defined]
    [reply] = await read_frames(client, 1)  # type: ignore[arg-type]
    assert isinstance(reply, Reply), reply
    return reply


@pytest.mark.parametrize("event", ["exit", "interrupt"])
async def test_system_exit_or_keyboard_interrupt_from_a_service_crashes_only_its_topic(
    hub: TestHub,
    runtime: HubRuntime,
    autojump_clock: trio.testing.MockClock,
    event: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(30):
        client = hub.open_raw()
        assert (await join(client, 1, "bad:x")).ok
        assert (await join(client, 2, "echo:y")).ok
        client.send(JSON.encode(Publish(0, "bad:x", event)))
        [ended] = await read_frames(client, 1)
        assert isinstance(ended, Ended) and ended.code == "topic_crashed"
        # The hub, the session and its other topic carry on.
        client.send(JSON.encode(Call(3, "echo:y", "ping", "pong")))
        assert await read_frames(client, 1) == [Reply(3, "echo:y", True, "pong")]
        assert (await join(client, 4, "bad:x")).ok  # a fresh actor
        await trio.testing.wait_all_tasks_blocked()  # the supervisor logs the crash
    assert any(
        record.levelno == logging.ERROR and "bad:x" in record.getMessage()
        for record in caplog.records
    )


async def test_a_hook_past_its_deadline_crashes_its_topic_naming_the_hook(
    hub: TestHub,
    runtime: HubRuntime,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(60):
        client = hub.open_raw()
        assert (await join(client, 1, "bad:x")).ok
        assert (await join(client, 2, "echo:y")).ok
        started = trio.current_time()
        client.send(JSON.encode(Publish(0, "bad:x", "hang")))
        # Meanwhile the session's other topic answers at once.
        client.send(JSON.encode(Call(3, "echo:y", "ping", "pong")))
        assert await read_frames(client, 1) == [Reply(3, "echo:y", True, "pong")]
        [ended] = await read_frames(client, 1)
        assert isinstance(ended, Ended) and ended.code == "topic_crashed"
        assert trio.current_time() - started == pytest.approx(HOOK_TIMEOUT, abs=0.5)
        await trio.testing.wait_all_tasks_blocked()  # the supervisor logs the crash
    crash_logs = [record for record in caplog.records if record.exc_info]
    assert any("handle_event" in str(record.exc_info[1]) for record in crash_logs)  # type: ignore[index]


async def test_history_outlives_the_idle_stop_and_a_stale_epoch_is_told(
    hub: TestHub, runtime: HubRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(RETENTION * 3):
        ann = hub.open_raw()
        first = await join(ann, 1, "room:h", {"user": "ann"})
        epoch = first.payload["epoch"]
        for ref in range(2, 5):
            ann.send(JSON.encode(Publish(ref, "room:h", "message", {"text": f"m{ref}"})))
            pushed = await read_frames(ann, 2)
            assert isinstance(pushed[0], Push) and pushed[1] == Reply(ref, "room:h", True)
        ann.send(JSON.encode(Leave(5, "room:h")))
        assert await read_frames(ann, 1) == [Reply(5, "room:h", True)]
        # The room stops once it has been empty for the grace period...
        await trio.sleep(EMPTY_GRACE + 1)
        assert runtime.topics.whereis("room:h") is None
        # ...but a rejoin within the retention gets exactly what it missed.
        again = await join(ann, 6, "room:h", {"user": "ann"}, offset=1, epoch=epoch)
        assert (again.payload["epoch"], again.payload["offset"]) == (epoch, 3)
        missed = await read_frames(ann, 2)
        assert [(push.offset, push.payload["text"]) for push in missed] == [(2, "m3"), (3, "m4")]
        assert Recorder.recoveries[-1].recovered
        ann.send(JSON.encode(Leave(7, "room:h")))
        assert await read_frames(ann, 1) == [Reply(7, "room:h", True)]

        # Past the retention the history is dropped: a new epoch, offsets from 1,
        # and the rejoin with the old epoch is told it did not recover.
        await trio.sleep(EMPTY_GRACE + RETENTION + 1)
        late = await join(ann, 8, "room:h", {"user": "ann"}, offset=3, epoch=epoch)
        assert late.payload["epoch"] != epoch and late.payload["offset"] == 0
        await trio.testing.wait_all_tasks_blocked()  # `joined` runs after the Reply
        assert len(Recorder.recoveries) == 3
        assert not Recorder.recoveries[-1].recovered


async def test_the_server_publishes_to_a_topic_it_is_not_a_member_of(
    hub: TestHub, runtime: HubRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        ann = hub.open_raw()
        assert (await join(ann, 1, "room:news", {"user": "ann"})).ok
        offset = await runtime.publish("room:news", "message", {"text": "from the server"})
        assert offset == 1
        [push] = await read_frames(ann, 1)
        assert push == Push("room:news", "message", {"text": "from the server"}, 1)
        # A topic not live yet is started for it; its history keeps the event.
        assert await runtime.publish("room:later", "message", {"text": "kept"}) == 1
        bob = hub.open_raw()
        assert (await join(bob, 1, "room:later", {"user": "bob"})).ok
        [replayed] = await read_frames(bob, 1)
        assert isinstance(replayed, Push) and replayed.offset == 1


async def test_a_backend_call_inherits_what_is_left_of_the_clients_deadline(
    hub: TestHub, runtime: HubRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    # Backend actors are registered by name: services and other actors find them.
    assert runtime.system.registry.whereis("slow") is runtime.actor("slow")
    with trio.fail_after(60):
        client = hub.open_raw()
        assert (await join(client, 1, "asks:x")).ok
        started = trio.current_time()
        client.send(JSON.encode(Call(2, "asks:x", "work", None, 1.0)))
        [reply] = await read_frames(client, 1)
        assert isinstance(reply, Reply) and reply.error_code == "call_timeout"
        assert trio.current_time() - started == pytest.approx(1.0, abs=0.1)
        # The backend saw the client's deadline, not its own 30 s, and was
        # cancelled with it: it never answers, and nothing late arrives.
        await trio.sleep(10)
        assert SlowBackend.outcomes == ["deadline in 1.0 s", "cancelled"]
        client.send(JSON.encode(Call(3, "asks:x", "work", None, 1.0)))
        [second] = await read_frames(client, 1)
        assert isinstance(second, Reply) and second.ref == 3


async def test_a_services_timer_ticks_and_ends_with_its_topic(
    hub: TestHub, runtime: HubRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    timers = runtime.system.timers
    with trio.fail_after(120):
        client = hub.open_raw()
        assert (await join(client, 1, "tick:x")).ok
        started = trio.current_time()
        ticks = await read_frames(client, 3)
        assert [push.event for push in ticks] == ["tick"] * 3
        assert trio.current_time() - started == pytest.approx(3.0, abs=0.1)
        client.send(JSON.encode(Leave(2, "tick:x")))
        await read_until(client, Reply(2, "tick:x", True))
        await trio.sleep(EMPTY_GRACE + 1)
        assert runtime.topics.whereis("tick:x") is None
        assert len(timers) == 0


async def test_the_hub_wide_topic_cap_and_the_per_connection_join_rate(
    hub: TestHub, runtime: HubRuntime, autojump_clock: trio.testing.MockClock
) -> None:
    runtime.topics.max_live = 3
    with trio.fail_after(30):
        client = hub.open_raw()
        for ref in range(1, 4):
            assert (await join(client, ref, f"echo:{ref}")).ok
        refused = await join(client, 4, "echo:4")
        assert refused.error_code == "topic_limit"
        assert runtime.metrics.topic_limit_refusals._value.get() == 1
        # A join of a live topic is no new topic: allowed.
        other = hub.open_raw()
        assert (await join(other, 1, "echo:1")).ok

        # Joins in a burst past the per-connection rate are refused...
        runtime.topics.max_live = 1000
        burst = hub.open_raw()
        replies = []
        for ref in range(1, 31):
            replies.append(await join(burst, ref, f"echo:{ref}"))
        codes = [reply.error_code for reply in replies if not reply.ok]
        assert codes and set(codes) == {"rate_limited"}
        # ...and allowed again once the rate allows.
        await trio.sleep(2)
        assert (await join(burst, 99, "echo:99")).ok


async def test_a_topic_that_fails_to_start_gives_its_history_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failed start never runs `stopped`: the history must not stay owned for ever."""

    class Broken(Service):
        async def started(self) -> None:
            raise RuntimeError("no database")

    broken = Hub("broken")
    broken.route("broken:*", Broken)
    config = HubConfig(topics=TopicsConfig(history_retention_seconds=RETENTION))
    async with open_test_hub(broken, config) as hub:
        with trio.fail_after(RETENTION * 3):
            client = hub.open_raw()
            refused = await join(client, 1, "broken:x")
            assert refused.error_code == "service_error"
            assert hub.runtime.backplane.topics_kept == 1  # kept for the retention time...
            await trio.sleep(RETENTION + 1)
            assert hub.runtime.backplane.topics_kept == 0  # ...then dropped
