"""Refs and calls: sending to ended actors, replies, deadlines, late replies, cancellation."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from actors_support import TEST_SECONDS, BoomError, idle

import actors
from actors import NO_REPLY, ActorExitedError, Call, CallTimeoutError, Overflow


async def ended_actor(system: actors.System) -> actors.ActorRef:
    ref = await system.spawn(idle)
    ref.send_nowait("queued")  # a closed mailbox with a message still in it
    await system.root.stop_child(system.root.which_children()[-1].id)
    assert ref.exit_reason is actors.SHUTDOWN
    return ref


# --- sending to an actor that has ended ---------------------------------------------


async def test_send_to_an_ended_actor_raises_at_once(system: actors.System) -> None:
    ref = await ended_actor(system)

    with trio.fail_after(1):
        with pytest.raises(ActorExitedError) as caught:
            await ref.send("hello")
        assert caught.value.reason is actors.SHUTDOWN
        assert ref.label in str(caught.value)
        with pytest.raises(ActorExitedError):
            ref.send_nowait("hello")


async def test_cast_to_an_ended_actor_returns_false_and_never_raises(
    system: actors.System,
) -> None:
    ref = await ended_actor(system)
    assert ref.cast("hello") is False


async def test_cast_reports_a_refused_message_with_false(system: actors.System) -> None:
    gate = trio.Event()

    async def stuck(ctx: actors.Context) -> None:
        ctx.ready()
        await gate.wait()

    ref = await system.spawn(stuck, mailbox_capacity=1, overflow=Overflow.FAIL)
    assert ref.cast("first") is True
    assert ref.cast("second") is False  # full, FAIL: refused, not raised
    wait = await system.spawn(stuck, mailbox_capacity=1, overflow=Overflow.WAIT)
    assert wait.cast("first") is True
    assert wait.cast("second") is False  # full, WAIT: cast never waits
    gate.set()


async def test_send_to_a_stopping_actor_raises(system: actors.System) -> None:
    release = trio.Event()

    class Slow(actors.Actor):
        async def handle(self, message: Any) -> None:
            await release.wait()

    ref = await system.spawn(Slow, id="slow")
    ref.send_nowait("busy")
    await trio.testing.wait_all_tasks_blocked()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(system.root.stop_child, "slow")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.alive  # still finishing its message
        with pytest.raises(ActorExitedError):
            await ref.send("more")
        assert ref.cast("more") is False
        release.set()
    assert ref.exit_reason is actors.SHUTDOWN


# --- calls ---------------------------------------------------------------------------


class Echo(actors.Actor):
    async def handle_call(self, request: Any, call: Call) -> Any:
        return ("echo", request)


async def test_call_returns_the_reply(system: actors.System) -> None:
    ref = await system.spawn(Echo)
    assert await ref.call("hi") == ("echo", "hi")
    assert await ref.call(2, timeout=1) == ("echo", 2)


async def test_a_function_actor_answers_calls_with_reply_and_fail(system: actors.System) -> None:
    async def server(ctx: actors.Context) -> None:
        async for message in ctx:
            match message:
                case Call(request="bad"):
                    message.fail(ValueError("bad request"))
                case Call(request=request):
                    message.reply(request * 2)

    ref = await system.spawn(server)
    assert await ref.call(21) == 42
    with pytest.raises(ValueError, match="bad request"):
        await ref.call("bad")
    assert ref.alive  # failing a call is the caller's error, not the callee's


async def test_call_timeout_raises_and_the_late_reply_goes_nowhere(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            calls, held = trio.open_memory_channel[Call](10)

            async def holder(ctx: actors.Context) -> None:
                async for call in ctx:
                    await calls.send(call)  # answered by the test, when it likes

            ref = await system.spawn(holder)
            start = trio.current_time()
            with pytest.raises(CallTimeoutError) as caught:
                await ref.call("first", timeout=30)
            assert trio.current_time() - start == pytest.approx(30)
            assert caught.value.request == "first"
            assert caught.value.timeout == 30

            stale = held.receive_nowait()
            assert stale.request == "first"
            assert stale.abandoned

            async def answer_second() -> None:
                second = await held.receive()
                # The late reply to the first call is refused...
                assert stale.reply("stale") is False
                assert second.reply("fresh") is True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_second)
                # ...and the next call gets its own reply, not the stale one.
                assert await ref.call("second", timeout=30) == "fresh"


async def test_a_call_waiting_for_room_counts_against_its_timeout(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:

            async def stuck(ctx: actors.Context) -> None:
                ctx.ready()
                await trio.sleep_forever()

            ref = await system.spawn(stuck, mailbox_capacity=1, shutdown=0)
            ref.send_nowait("fills the mailbox")
            start = trio.current_time()
            with pytest.raises(CallTimeoutError):
                await ref.call("never sent", timeout=2)
            assert trio.current_time() - start == pytest.approx(2)
            assert ref.mailbox_depth == 1  # the call never got in


async def test_call_to_an_ended_actor_raises_at_once(system: actors.System) -> None:
    ref = await ended_actor(system)
    with trio.fail_after(1), pytest.raises(ActorExitedError):
        await ref.call("anyone?")


async def test_a_callee_that_ends_while_a_call_is_pending_fails_it_at_once(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:

            async def forgetful(ctx: actors.Context) -> None:
                await ctx.receive()  # takes the call, then returns without replying

            ref = await system.spawn(forgetful)
            start = trio.current_time()
            with pytest.raises(ActorExitedError) as caught:
                await ref.call("hello", timeout=30)
            assert trio.current_time() == start  # not after the timeout
            assert caught.value.reason is actors.NORMAL


async def test_a_callee_that_crashes_on_the_call_fails_it_with_the_reason(
    system: actors.System,
) -> None:
    class Fragile(actors.Actor):
        async def handle_call(self, request: Any, call: Call) -> Any:
            raise BoomError(request)

    ref = await system.spawn(Fragile)
    with trio.fail_after(5), pytest.raises(ActorExitedError) as caught:
        await ref.call("x")
    reason = caught.value.reason
    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, BoomError)


async def test_the_callee_sees_the_deadline_and_when_the_caller_gives_up(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            seen: list[tuple[float, bool]] = []
            gave_up = trio.Event()

            async def watcher(ctx: actors.Context) -> None:
                async for call in ctx:
                    seen.append((call.deadline, call.abandoned))
                    await gave_up.wait()
                    seen.append((call.deadline, call.abandoned))

            ref = await system.spawn(watcher)
            start = trio.current_time()
            with pytest.raises(CallTimeoutError):
                await ref.call("slow", timeout=7)
            gave_up.set()
            await trio.testing.wait_all_tasks_blocked()

            assert seen == [(start + 7, False), (start + 7, True)]


async def test_handle_call_is_cancelled_when_the_deadline_passes(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            events: list[tuple[str, float]] = []

            class Worker(actors.Actor):
                async def handle_call(self, request: Any, call: Call) -> Any:
                    if request == "quick":
                        return "done"
                    try:
                        await trio.sleep(100)
                        events.append(("finished", trio.current_time()))
                    except trio.Cancelled:
                        events.append(("cancelled", trio.current_time()))
                        raise
                    return "too late"

            ref = await system.spawn(Worker)
            start = trio.current_time()
            with pytest.raises(CallTimeoutError):
                await ref.call("slow", timeout=3)
            await trio.testing.wait_all_tasks_blocked()

            assert events == [("cancelled", start + 3)]
            assert ref.alive  # the actor carries on with its next message
            assert await ref.call("quick") == "done"


async def test_handle_call_is_cancelled_when_the_caller_is_cancelled(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            started = trio.Event()
            outcome: list[str] = []

            class Worker(actors.Actor):
                async def handle_call(self, request: Any, call: Call) -> Any:
                    started.set()
                    try:
                        await trio.sleep(100)
                    except trio.Cancelled:
                        outcome.append(f"cancelled at {trio.current_time()}")
                        raise
                    outcome.append("finished")

            ref = await system.spawn(Worker)
            async with trio.open_nursery() as nursery:

                async def caller(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        await ref.call("work", timeout=60)

                scope = await nursery.start(caller)
                await started.wait()
                now = trio.current_time()
                scope.cancel()  # the caller gives up well before its deadline

            await trio.testing.wait_all_tasks_blocked()
            assert outcome == [f"cancelled at {now}"]


async def test_a_call_given_up_before_the_callee_reaches_it_is_skipped(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            release = trio.Event()
            handled: list[Any] = []

            class Worker(actors.Actor):
                async def handle(self, message: Any) -> None:
                    await release.wait()

                async def handle_call(self, request: Any, call: Call) -> Any:
                    handled.append(request)
                    return request

            ref = await system.spawn(Worker)
            ref.send_nowait("keeps it busy")
            with pytest.raises(CallTimeoutError):
                await ref.call("given up", timeout=1)
            release.set()
            assert await ref.call("later") == "later"
            assert handled == ["later"]


async def test_no_reply_then_a_later_reply(system: actors.System) -> None:
    class Deferred(actors.Actor):
        async def started(self) -> None:
            self.waiting: list[Call] = []

        async def handle_call(self, request: Any, call: Call) -> Any:
            if request == "wait":
                self.waiting.append(call)
                return NO_REPLY
            for waiting in self.waiting:
                assert waiting.reply(f"released by {request}") is True
            self.waiting.clear()
            return "released"

    ref = await system.spawn(Deferred)
    async with trio.open_nursery() as nursery:
        replies: list[Any] = []

        async def wait_call() -> None:
            replies.append(await ref.call("wait"))

        nursery.start_soon(wait_call)
        await trio.testing.wait_all_tasks_blocked()
        assert replies == []  # NO_REPLY: the caller is still waiting
        assert await ref.call("go") == "released"
    assert replies == ["released by go"]


async def test_a_call_is_answered_at_most_once(system: actors.System) -> None:
    answers: list[bool] = []

    async def twice(ctx: actors.Context) -> None:
        async for call in ctx:
            answers.append(call.reply(1))
            answers.append(call.reply(2))
            answers.append(call.fail(ValueError("no")))

    ref = await system.spawn(twice)
    assert await ref.call("x") == 1
    await trio.testing.wait_all_tasks_blocked()
    assert answers == [True, False, False]


async def test_wait_exit_returns_the_reason_at_once_for_an_ended_actor(
    system: actors.System,
) -> None:
    ref = await ended_actor(system)
    assert not ref.alive
    assert await ref.wait_exit() is actors.SHUTDOWN
    assert "exited: shutdown" in repr(ref)


async def test_kill_ends_an_actor_whatever_it_is_doing(system: actors.System) -> None:
    class Busy(actors.Actor):
        async def handle(self, message: Any) -> None:
            await trio.sleep_forever()

        async def stopped(self, reason: actors.ExitReason) -> None:
            stopped_with.append(reason)

    stopped_with: list[actors.ExitReason] = []
    busy = await system.spawn(Busy)
    busy.send_nowait("work")
    await trio.testing.wait_all_tasks_blocked()
    busy.kill(BoomError("enough"))
    reason = await busy.wait_exit()
    assert isinstance(reason, actors.Crashed)
    assert isinstance(reason.error, BoomError)
    assert stopped_with == [reason]

    other = await system.spawn(Busy)
    other.kill()
    assert await other.wait_exit() is actors.SHUTDOWN
    other.kill()  # killing an ended actor does nothing
    assert other.exit_reason is actors.SHUTDOWN
