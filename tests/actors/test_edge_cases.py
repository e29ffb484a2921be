"""Edge cases found in review: failing stop hooks, dropped calls, stops and starts that overlap."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from actors_support import BoomError, idle

import actors


async def _never_reads(ctx: actors.Context) -> None:
    ctx.ready()
    await trio.sleep_forever()


class FailsOnStop(actors.Actor):
    async def stopped(self, reason: actors.ExitReason) -> None:
        raise BoomError("stop hook failed")


async def test_a_failing_stop_hook_is_the_actors_crash_not_its_supervisors(
    system: actors.System, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = await system.start_supervisor()
    sibling = await supervisor.start_child(actors.ChildSpec("sibling", idle))
    ref = await supervisor.start_child(
        actors.ChildSpec("fails", FailsOnStop, restart=actors.Restart.TEMPORARY)
    )
    system.registry.register("fails", ref)
    watcher = await system.spawn(_never_reads, shutdown=0)
    actors.monitor(watcher, ref)
    with caplog.at_level(logging.ERROR, logger="actors"):
        await supervisor.stop_child("fails")
    reason = ref.exit_reason
    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, BoomError)
    assert system.registry.whereis("fails") is None  # the name was freed
    assert watcher.mailbox_depth == 1  # the monitor fired
    assert sibling.alive  # the supervisor and its other children carry on
    assert supervisor.ctx.ref.alive
    assert [r.message for r in caplog.records if "crashed under" in r.message] == [
        f"{ref.name} crashed under {supervisor.ctx.ref.name} (temporary restart)"
    ]


async def _echo_calls(ctx: actors.Context) -> None:
    async for message in ctx:
        if isinstance(message, actors.Call):
            message.reply(message.request)


async def test_a_call_dropped_on_arrival_fails_at_once(
    system: actors.System, autojump_clock: trio.abc.Clock
) -> None:
    ref = await system.spawn(idle, mailbox_capacity=1, overflow=actors.Overflow.DROP_NEWEST)
    ref.send_nowait("fills it")
    started = trio.current_time()
    with pytest.raises(actors.MailboxFullError):
        await ref.call("dropped", timeout=30)
    assert trio.current_time() == started  # not at the timeout


async def test_a_queued_call_dropped_as_oldest_fails_at_once(
    system: actors.System, autojump_clock: trio.abc.Clock
) -> None:
    gate = trio.Event()

    async def blocked(ctx: actors.Context) -> None:
        ctx.ready()
        await gate.wait()
        async for _ in ctx:
            pass

    ref = await system.spawn(blocked, mailbox_capacity=1, overflow=actors.Overflow.DROP_OLDEST)
    outcome: list[Any] = []

    async def caller() -> None:
        try:
            await ref.call("first", timeout=30)
        except actors.MailboxFullError as error:
            outcome.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        started = trio.current_time()
        ref.send_nowait("pushes the call out")
    assert len(outcome) == 1
    assert trio.current_time() == started
    gate.set()


async def test_conflation_never_applies_the_users_key_to_a_call(system: actors.System) -> None:
    ref = await system.spawn(
        _echo_calls,
        overflow=actors.Overflow.CONFLATE,
        conflate_key=lambda message: message["player"],  # would fail on a Call
    )
    assert await ref.call({"player": 1}, timeout=5) == {"player": 1}


async def test_a_cancelled_stop_child_still_forgets_the_child(
    system: actors.System, autojump_clock: trio.abc.Clock
) -> None:
    async def deaf(ctx: actors.Context) -> None:
        ctx.ready()
        await trio.sleep_forever()

    supervisor = await system.start_supervisor()
    ref = await supervisor.start_child(actors.ChildSpec("w", deaf, shutdown=10))
    with trio.move_on_after(1):
        await supervisor.stop_child("w")  # cancelled while waiting out the shutdown time
    assert supervisor.which_children() == []
    await ref.wait_exit()
    # The id is free again.
    await supervisor.start_child(actors.ChildSpec("w", idle))


async def test_a_child_slow_to_start_holds_up_no_other_start(system: actors.System) -> None:
    release = trio.Event()

    class SlowStart(actors.Actor):
        async def started(self) -> None:
            await release.wait()

    supervisor = await system.start_supervisor()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.start_child, actors.ChildSpec("slow", SlowStart))
        await trio.testing.wait_all_tasks_blocked()
        quick = await supervisor.start_child(actors.ChildSpec("quick", idle))
        assert quick.alive
        assert [info.id for info in supervisor.which_children()] == ["slow", "quick"]
        release.set()
