"""Behaviours: class actors' hooks, function actors, readiness and exit reasons."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from actors_support import TEST_SECONDS, BoomError, Log, Recorder, idle, recorder

import actors
from actors import StartError

# --- class actors ----------------------------------------------------------------------


async def test_hooks_run_in_order_and_ctx_stop_ends_with_normal(system: actors.System) -> None:
    log: Log = []
    ref = await system.spawn(Recorder, "worker", log)
    for message in ("a", "b", "stop", "never handled"):
        ref.send_nowait(message)

    assert await ref.wait_exit() is actors.NORMAL
    assert log == [
        ("start", "worker"),
        ("handle", "worker", "a"),
        ("handle", "worker", "b"),
        ("stop", "worker", actors.NORMAL),
    ]


async def test_stopped_by_its_supervisor_it_drains_then_ends_with_shutdown(
    system: actors.System,
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("worker", log)])
    ref = supervisor.which_children()[0].ref
    assert ref is not None
    for message in ("a", "b"):
        ref.send_nowait(message)

    await supervisor.stop_child("worker")

    assert ref.exit_reason is actors.SHUTDOWN
    assert log == [
        ("start", "worker"),
        ("handle", "worker", "a"),  # what was queued before the stop is handled
        ("handle", "worker", "b"),
        ("stop", "worker", actors.SHUTDOWN),
    ]


async def test_an_exception_ends_it_with_crashed(system: actors.System) -> None:
    log: Log = []
    ref = await system.spawn(Recorder, "worker", log)
    ref.send_nowait("a")
    ref.send_nowait("crash")
    ref.send_nowait("never handled")

    reason = await ref.wait_exit()

    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, BoomError)
    assert ref.exit_reason is reason
    assert log == [("start", "worker"), ("handle", "worker", "a"), ("stop", "worker", reason)]
    assert log[-1][2].error is reason.error


async def test_an_unexpected_message_crashes_it(system: actors.System) -> None:
    class Quiet(actors.Actor):
        pass

    ref = await system.spawn(Quiet)
    ref.send_nowait("what?")
    reason = await ref.wait_exit()
    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, actors.UnexpectedMessageError)
    assert reason.error.message == "what?"


async def test_self_ref_and_ctx_are_set_before_started(system: actors.System) -> None:
    seen: list[Any] = []

    class Introspective(actors.Actor):
        async def started(self) -> None:
            seen.append((self.ref, self.ctx.name, self.ctx.system))

    ref = await system.spawn(Introspective, label="intro")
    assert seen == [(ref, ref.name, system)]
    assert ref.name.startswith("intro#")


async def test_stopped_runs_shielded_but_bounded_by_the_shutdown_time(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            ended: list[str] = []

            class Lingering(actors.Actor):
                async def stopped(self, reason: actors.ExitReason) -> None:
                    try:
                        await trio.sleep_forever()
                    finally:
                        ended.append(f"hook ended at {trio.current_time()}")

            ref = await system.spawn(Lingering, id="lingering", shutdown=2)
            start = trio.current_time()
            await system.root.stop_child("lingering")

            assert ended == [f"hook ended at {start + 2}"]
            assert ref.exit_reason is actors.SHUTDOWN


# --- function actors --------------------------------------------------------------------


async def test_a_function_actor_reads_its_mailbox_with_async_for(system: actors.System) -> None:
    received: list[Any] = []

    async def collector(ctx: actors.Context, prefix: str) -> None:
        async for message in ctx:
            if message == "done":
                return
            received.append(f"{prefix}{message}")

    ref = await system.spawn(collector, "got ")
    for message in ("a", "b", "done", "ignored"):
        ref.send_nowait(message)

    assert await ref.wait_exit() is actors.NORMAL
    assert received == ["got a", "got b"]


async def test_a_function_actor_ends_with_shutdown_when_asked_to_stop(
    system: actors.System,
) -> None:
    ref = await system.spawn(idle, id="idle")
    await system.root.stop_child("idle")
    assert ref.exit_reason is actors.SHUTDOWN


async def test_end_of_channel_from_receive_on_a_stop_is_a_shutdown(system: actors.System) -> None:
    async def receiver(ctx: actors.Context) -> None:
        while True:
            await ctx.receive()  # raises trio.EndOfChannel once stopped and drained

    ref = await system.spawn(receiver, id="receiver")
    await system.root.stop_child("receiver")
    assert ref.exit_reason is actors.SHUTDOWN


async def test_a_function_actor_that_raises_ends_with_crashed(system: actors.System) -> None:
    async def fragile(ctx: actors.Context) -> None:
        async for message in ctx:
            raise BoomError(message)

    ref = await system.spawn(fragile)
    ref.send_nowait("x")
    reason = await ref.wait_exit()
    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, BoomError)
    assert reason.error.args == ("x",)


async def test_a_function_actor_that_returns_at_once_ends_normal(system: actors.System) -> None:
    async def brief(ctx: actors.Context) -> None:
        pass

    ref = await system.spawn(brief)  # ready when it returns
    assert ref.exit_reason is actors.NORMAL
    await trio.testing.wait_all_tasks_blocked()  # the root handles the exit report
    assert system.root.count_children() == 0  # temporary: reported, not kept


# --- readiness ------------------------------------------------------------------------


async def test_a_function_actor_is_ready_at_its_first_receive(system: actors.System) -> None:
    proceed = trio.Event()
    spawned: list[actors.ActorRef] = []

    async def slow_to_start(ctx: actors.Context) -> None:
        await proceed.wait()
        async for _message in ctx:
            pass

    async with trio.open_nursery() as nursery:

        async def spawn() -> None:
            spawned.append(await system.spawn(slow_to_start))

        nursery.start_soon(spawn)
        await trio.testing.wait_all_tasks_blocked()
        assert spawned == [], "not ready before its first receive"
        proceed.set()
    assert len(spawned) == 1 and spawned[0].alive


async def test_a_function_actor_is_ready_when_it_calls_ready(system: actors.System) -> None:
    proceed = trio.Event()

    async def announces(ctx: actors.Context) -> None:
        ctx.ready()
        ctx.ready()  # idempotent
        await proceed.wait()

    with trio.fail_after(5):
        ref = await system.spawn(announces)
    assert ref.alive
    proceed.set()
    assert await ref.wait_exit() is actors.NORMAL


async def test_a_class_actor_is_ready_when_started_returns(system: actors.System) -> None:
    proceed = trio.Event()
    spawned: list[actors.ActorRef] = []

    class Preparing(actors.Actor):
        async def started(self) -> None:
            await proceed.wait()

    async with trio.open_nursery() as nursery:

        async def spawn() -> None:
            spawned.append(await system.spawn(Preparing))

        nursery.start_soon(spawn)
        await trio.testing.wait_all_tasks_blocked()
        assert spawned == []
        proceed.set()
    assert spawned[0].alive


class FailsToStart(actors.Actor):
    def __init__(self, log: Log) -> None:
        self.log = log

    async def started(self) -> None:
        self.log.append("started")
        raise BoomError("cannot start")

    async def stopped(self, reason: actors.ExitReason) -> None:
        self.log.append("stopped")


async def test_an_exception_in_started_fails_spawn_and_the_child_is_not_kept(
    system: actors.System,
) -> None:
    log: Log = []
    with pytest.raises(StartError) as caught:
        await system.spawn(FailsToStart, log, id="bad")

    assert caught.value.child_id == "bad"
    assert isinstance(caught.value.cause, BoomError)
    assert isinstance(caught.value.__cause__, BoomError)
    assert log == ["started"]  # the stop hook of an actor that never started does not run
    assert system.root.which_children() == []
    # The id is free again.
    ref = await system.spawn(idle, id="bad")
    assert ref.alive


async def test_an_exception_in_started_fails_start_child(system: actors.System) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("first", log)])

    with pytest.raises(StartError) as caught:
        await supervisor.start_child(actors.ChildSpec("bad", FailsToStart, args=(log,)))

    assert caught.value.child_id == "bad"
    assert [info.id for info in supervisor.which_children()] == ["first"]
    assert supervisor.which_children()[0].restarts == 0  # a sibling's failure touched nothing


async def test_a_function_actor_raising_before_ready_fails_the_start(
    system: actors.System,
) -> None:
    async def broken(ctx: actors.Context) -> None:
        raise BoomError("before ready")

    with pytest.raises(StartError, match="before ready"):
        await system.spawn(broken)
    assert system.root.count_children() == 0


async def test_a_start_that_is_not_an_actor_fails_with_a_type_error(
    system: actors.System,
) -> None:
    with pytest.raises(StartError) as caught:
        await system.spawn(lambda: "not an actor", id="oops")
    assert isinstance(caught.value.cause, TypeError)
    assert "not an Actor" in str(caught.value.cause)


async def test_an_initial_child_that_fails_to_start_fails_its_supervisor(
    system: actors.System,
) -> None:
    log: Log = []
    with pytest.raises(StartError):
        await system.start_supervisor(
            [
                recorder("first", log),
                actors.ChildSpec("bad", FailsToStart, args=(log,)),
                recorder("never", log),
            ]
        )
    # The first child was started and is stopped again; the third never starts.
    assert log == [("start", "first"), "started", ("stop", "first", actors.SHUTDOWN)]
    assert system.root.count_children() == 0


# --- exit reasons ---------------------------------------------------------------------


async def test_exit_reasons_print_and_compare() -> None:
    error = BoomError("x")
    assert str(actors.NORMAL) == "normal"
    assert str(actors.SHUTDOWN) == "shutdown"
    assert str(actors.Crashed(error)) == "crashed: BoomError('x')"
    assert actors.Normal() == actors.NORMAL
    assert actors.Shutdown() == actors.SHUTDOWN
    assert actors.NORMAL != actors.SHUTDOWN


async def test_ctx_stop_ends_a_function_actor_with_normal_after_the_message(
    system: actors.System,
) -> None:
    handled: list[Any] = []

    async def stops_itself(ctx: actors.Context) -> None:
        async for message in ctx:
            handled.append(message)
            if message == "stop":
                ctx.stop()

    ref = await system.spawn(stops_itself)
    for message in ("a", "stop", "never handled"):
        ref.send_nowait(message)

    with trio.fail_after(5):
        assert await ref.wait_exit() is actors.NORMAL
    assert handled == ["a", "stop"]
