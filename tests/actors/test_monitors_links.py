"""Monitors and links: Down and Exit messages, demonitor, shared fates, trapping exits."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from actors_support import BoomError, crash_on_message, idle, take_queued

import actors
from actors import (
    ActorExitedError,
    Crashed,
    Down,
    Exit,
    LinkedActorExitedError,
    Overflow,
    demonitor,
    link,
    monitor,
    unlink,
)


class Inbox(actors.Actor):
    """An actor that keeps what it receives, for the test to look at."""

    def __init__(self, inbox: list[Any] | None = None) -> None:
        self.inbox: list[Any] = [] if inbox is None else inbox

    async def handle(self, message: Any) -> None:
        self.inbox.append(message)


async def paused(ctx: actors.Context, gate: trio.Event) -> None:
    """A function actor that does not read its mailbox until `gate` is set."""
    ctx.ready()
    await gate.wait()
    async for _message in ctx:
        pass


async def test_monitor_delivers_down_with_the_reason(system: actors.System) -> None:
    inbox: list[Any] = []
    watcher = await system.spawn(Inbox, inbox)
    normal = await system.spawn(idle)
    crashing = await system.spawn(crash_on_message)
    stopped = await system.spawn(idle, id="stopped")
    handles = [monitor(watcher, target) for target in (normal, crashing, stopped)]
    assert inbox == []

    normal.send_nowait("ignored")
    crashing.send_nowait("boom")
    await crashing.wait_exit()
    await system.root.stop_child("stopped")
    await trio.testing.wait_all_tasks_blocked()

    assert [(down.ref, down.monitor) for down in inbox] == [
        (crashing, handles[1]),
        (stopped, handles[2]),
    ]
    assert isinstance(inbox[0].reason, Crashed) and isinstance(inbox[0].reason.error, BoomError)
    assert inbox[1].reason is actors.SHUTDOWN
    assert normal.alive  # and no Down for it yet

    normal_ends = await system.spawn(normal_after_one)
    handle = monitor(watcher, normal_ends)
    normal_ends.send_nowait("go")
    await normal_ends.wait_exit()
    await trio.testing.wait_all_tasks_blocked()
    assert inbox[-1] == Down(normal_ends, actors.NORMAL, handle)


async def normal_after_one(ctx: actors.Context) -> None:
    await ctx.receive()


async def test_monitoring_an_ended_actor_delivers_down_at_once(system: actors.System) -> None:
    gate = trio.Event()
    watcher = await system.spawn(paused, gate, shutdown=0)
    target = await system.spawn(crash_on_message)
    target.send_nowait("boom")
    reason = await target.wait_exit()

    handle = monitor(watcher, target)

    assert watcher.mailbox_depth == 1  # already there, no waiting
    (down,) = take_queued(watcher._mailbox)
    assert down == Down(target, reason, handle)
    assert down.reason is reason


async def test_monitoring_twice_gives_two_downs(system: actors.System) -> None:
    inbox: list[Any] = []
    watcher = await system.spawn(Inbox, inbox)
    target = await system.spawn(idle, id="target")
    first = monitor(watcher, target)
    second = monitor(watcher, target)

    await system.root.stop_child("target")
    await trio.testing.wait_all_tasks_blocked()

    assert [down.monitor for down in inbox] == [first, second]


async def test_demonitor_stops_delivery(system: actors.System) -> None:
    inbox: list[Any] = []
    watcher = await system.spawn(Inbox, inbox)
    target = await system.spawn(idle, id="target")
    kept = await system.spawn(idle, id="kept")
    handle = monitor(watcher, target)
    monitor(watcher, kept)

    demonitor(handle)
    await system.root.stop_child("target")
    await system.root.stop_child("kept")
    await trio.testing.wait_all_tasks_blocked()

    assert [down.ref for down in inbox] == [kept]


async def test_demonitor_with_flush_removes_a_queued_down(system: actors.System) -> None:
    gate = trio.Event()
    watcher = await system.spawn(paused, gate, shutdown=0)
    target = await system.spawn(idle, id="target")
    other = await system.spawn(idle, id="other")
    handle = monitor(watcher, target)
    other_handle = monitor(watcher, other)
    await watcher.send("before")
    await system.root.stop_child("target")
    await system.root.stop_child("other")
    await watcher.send("after")
    assert watcher.mailbox_depth == 4

    demonitor(handle, flush=True)

    assert take_queued(watcher._mailbox) == [
        "before",
        Down(other, actors.SHUTDOWN, other_handle),
        "after",
    ]


async def test_ctx_monitor_and_demonitor_with_flush(system: actors.System) -> None:
    downs: list[Any] = []
    handles: dict[str, actors.Monitor] = {}
    gate = trio.Event()
    flushed = await system.spawn(idle, id="flushed")
    target = await system.spawn(idle, id="target")

    async def watcher(ctx: actors.Context) -> None:
        handles["flushed"] = ctx.monitor(flushed)
        handles["target"] = ctx.monitor(target)
        ctx.ready()
        await gate.wait()
        ctx.demonitor(handles["flushed"], flush=True)
        async for message in ctx:
            downs.append(message)

    watcher_ref = await system.spawn(watcher)
    await system.root.stop_child("flushed")
    await system.root.stop_child("target")
    assert watcher_ref.mailbox_depth == 2  # both Downs are queued

    gate.set()
    await trio.testing.wait_all_tasks_blocked()

    assert downs == [Down(target, actors.SHUTDOWN, handles["target"])]


@pytest.mark.parametrize("overflow", list(Overflow))
async def test_down_is_delivered_into_a_full_mailbox(
    system: actors.System, overflow: Overflow
) -> None:
    gate = trio.Event()
    watcher = await system.spawn(
        paused,
        gate,
        shutdown=0,
        mailbox_capacity=2,
        overflow=overflow,
        conflate_key=lambda message: message if isinstance(message, str) else None,
    )
    target = await system.spawn(idle, id="target")
    handle = monitor(watcher, target)
    watcher.send_nowait("a")
    watcher.send_nowait("b")

    await system.root.stop_child("target")
    assert watcher.mailbox_depth == 3  # past the capacity
    for message in ("c", "d", "e"):
        watcher.cast(message)  # refused or dropped, per policy: never the Down

    assert Down(target, actors.SHUTDOWN, handle) in take_queued(watcher._mailbox)
    assert (
        watcher.dropped
        == {
            Overflow.WAIT: 0,
            Overflow.FAIL: 0,
            Overflow.DROP_NEWEST: 3,
            Overflow.DROP_OLDEST: 3,
            Overflow.CONFLATE: 3,
        }[overflow]
    )


# --- links ------------------------------------------------------------------------------


async def test_a_crash_ends_the_linked_peer(system: actors.System) -> None:
    log: list[actors.ExitReason] = []

    class Peer(actors.Actor):
        async def stopped(self, reason: actors.ExitReason) -> None:
            log.append(reason)

    peer = await system.spawn(Peer)
    crasher = await system.spawn(crash_on_message)
    link(peer, crasher)

    crasher.send_nowait("boom")
    reason = await peer.wait_exit()

    assert isinstance(reason, Crashed)
    error = reason.error
    assert isinstance(error, LinkedActorExitedError)
    assert error.peer == crasher.name
    assert isinstance(error.reason, Crashed) and isinstance(error.reason.error, BoomError)
    assert log == [reason]  # its stop hook saw the same reason


async def test_a_link_works_both_ways_and_ends_a_busy_peer(system: actors.System) -> None:
    class Busy(actors.Actor):
        async def handle(self, message: Any) -> None:
            if message == "boom":
                raise BoomError(message)
            await trio.sleep_forever()

    busy = await system.spawn(Busy)
    crasher = await system.spawn(Busy)
    link(crasher, busy)  # the crasher is `a`, the peer `b`: the other way round
    busy.send_nowait("work")
    await trio.testing.wait_all_tasks_blocked()

    crasher.send_nowait("boom")
    reason = await busy.wait_exit()

    assert isinstance(reason, Crashed)
    assert isinstance(reason.error, LinkedActorExitedError)


async def test_a_shutdown_also_ends_the_linked_peer(system: actors.System) -> None:
    peer = await system.spawn(idle)
    stopped = await system.spawn(idle, id="stopped")
    link(peer, stopped)

    await system.root.stop_child("stopped")
    reason = await peer.wait_exit()

    assert isinstance(reason, Crashed)
    assert isinstance(reason.error, LinkedActorExitedError)
    assert reason.error.reason is actors.SHUTDOWN


async def test_a_normal_exit_does_not_end_the_linked_peer(system: actors.System) -> None:
    peer = await system.spawn(idle)
    brief = await system.spawn(normal_after_one)
    link(peer, brief)

    brief.send_nowait("go")
    assert await brief.wait_exit() is actors.NORMAL
    await trio.testing.wait_all_tasks_blocked()

    assert peer.alive
    assert peer._links == set()  # the link went with it


async def test_trapping_exits_turns_a_linked_end_into_an_exit_message(
    system: actors.System,
) -> None:
    inbox: list[Any] = []

    class Trapper(Inbox):
        async def started(self) -> None:
            self.ctx.trap_exits = True

    trapper = await system.spawn(Trapper, inbox)
    assert trapper.trap_exits
    crasher = await system.spawn(crash_on_message)
    brief = await system.spawn(normal_after_one)
    link(trapper, crasher)
    link(brief, trapper)

    crasher.send_nowait("boom")
    await crasher.wait_exit()
    brief.send_nowait("go")
    await brief.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    assert trapper.alive
    assert inbox == [Exit(crasher, crasher.exit_reason), Exit(brief, actors.NORMAL)]
    assert isinstance(inbox[0].reason, Crashed)


async def test_ctx_link_and_trap_exits_from_a_function_actor(system: actors.System) -> None:
    exits: list[Any] = []
    crasher = await system.spawn(crash_on_message)

    async def linked(ctx: actors.Context) -> None:
        ctx.trap_exits = True
        ctx.link(crasher)
        async for message in ctx:
            exits.append(message)

    ref = await system.spawn(linked)
    crasher.send_nowait("boom")
    await crasher.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    assert ref.alive
    assert [type(message) for message in exits] == [Exit]
    assert exits[0].ref is crasher


async def test_unlink_unties_the_fates(system: actors.System) -> None:
    peer = await system.spawn(idle)
    crasher = await system.spawn(crash_on_message)
    link(peer, crasher)
    unlink(crasher, peer)

    crasher.send_nowait("boom")
    await crasher.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    assert peer.alive


async def test_linking_to_an_ended_actor_raises(system: actors.System) -> None:
    peer = await system.spawn(idle)
    ended = await system.spawn(idle, id="ended")
    await system.root.stop_child("ended")

    with pytest.raises(ActorExitedError) as caught:
        link(peer, ended)
    assert caught.value.reason is actors.SHUTDOWN
    with pytest.raises(ActorExitedError):
        link(ended, peer)

    async def links_from_inside(ctx: actors.Context) -> None:
        ctx.link(ended)  # raises before the actor is ready: a failed start

    with pytest.raises(actors.StartError) as start_error:
        await system.spawn(links_from_inside)
    assert isinstance(start_error.value.cause, ActorExitedError)
    assert peer.alive


async def test_a_linked_crash_restarts_the_supervised_peer(system: actors.System) -> None:
    supervisor = await system.start_supervisor(
        [actors.ChildSpec("worker", idle, restart=actors.Restart.PERMANENT)]
    )
    worker = supervisor.which_children()[0].ref
    assert worker is not None
    crasher = await system.spawn(crash_on_message)
    link(worker, crasher)

    crasher.send_nowait("boom")
    await worker.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    info = supervisor.which_children()[0]
    assert info.ref is not None and info.ref is not worker
    assert info.restarts == 1
