"""Timers: send_after and every, fixed rate, missed ticks, cancelling, and what they cost."""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from actors_support import TEST_SECONDS, live_tasks

import actors
from actors import ActorExitedError, MailboxFullError, Overflow

# What the test actors below write down: (message, when it was received).
Received = list[tuple[Any, float]]


class Payload:
    """A message object of its own, so that a weak reference can tell when it is freed."""


async def test_send_after_delivers_once_at_its_deadline(autojump_clock: Any) -> None:
    later, sooner = Payload(), Payload()
    received: Received = []
    timers: list[actors.Timer] = []

    async def worker(ctx: actors.Context) -> None:
        timers.append(ctx.send_after(3, later))
        # Set second but due first: the timer service must wake early for it.
        timers.append(ctx.send_after(1, sooner))
        async for message in ctx:
            received.append((message, trio.current_time()))

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            await system.spawn(worker)
            assert len(system.timers) == 2
            await trio.sleep(10)

            assert received == [(sooner, start + 1), (later, start + 3)]
            assert received[0][0] is sooner  # the very object given, not a copy or a wrapper
            assert [timer.delivered for timer in timers] == [1, 1]
            assert not any(timer.active for timer in timers)
            assert len(system.timers) == 0


async def test_every_keeps_a_fixed_rate_when_each_tick_takes_time(autojump_clock: Any) -> None:
    received: Received = []

    class Ticker(actors.Actor):
        async def started(self) -> None:
            self.timer = self.ctx.every(1.0, "tick")  # from a class actor, through self.ctx

        async def handle(self, message: Any) -> None:
            received.append((message, trio.current_time()))
            await trio.sleep(0.4)  # work that a fixed-delay timer would add to the period

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            await system.spawn(Ticker)
            await trio.sleep(5.5)

            # Deadlines are start + n, not the previous handling's end + 1.
            assert received == [("tick", start + n) for n in range(1, 6)]
            (timer,) = [t for t in _timers_of(system)]
            assert (timer.delivered, timer.missed) == (5, 0)
            assert timer.deadline == start + 6


async def test_every_with_a_first_delay_ticks_in_its_own_phase(autojump_clock: Any) -> None:
    received: Received = []

    async def worker(ctx: actors.Context) -> None:
        ctx.every(1.0, "phased", first=0.25)
        ctx.every(1.0, "default")
        async for message in ctx:
            received.append((message, trio.current_time()))

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            ref = await system.spawn(worker)
            await trio.sleep_until(start + 2.5)
            assert received == [
                ("phased", start + 0.25),
                ("default", start + 1),
                ("phased", start + 1.25),
                ("default", start + 2),
                ("phased", start + 2.25),
            ]
            with pytest.raises(ValueError, match="first"):
                system.timers.every(ref, 1.0, "never", first=-1.0)


async def test_a_late_timer_service_keeps_the_schedule_and_counts_the_ticks_it_slept_through(
    autojump_clock: Any,
) -> None:
    received: Received = []
    timers: list[actors.Timer] = []

    async def worker(ctx: actors.Context) -> None:
        timers.append(ctx.every(1.0, "tick"))
        async for message in ctx:
            received.append((message, trio.current_time()))

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            await system.spawn(worker)
            await trio.sleep(0.9)
            # The process stalls (a long computation, say) from 0.9 to 1.4:
            # the tick due at 1 goes out late, and the next is still due at 2.
            autojump_clock.jump(0.5)
            await trio.sleep_until(start + 2.5)
            # Another stall from 2.5 to 5.2: those due at 3, 4 and 5 find the
            # service asleep; one goes out, two are missed; the next is due at 6.
            autojump_clock.jump(2.7)
            await trio.sleep_until(start + 6.5)

            assert received == [
                ("tick", start + 1.4),
                ("tick", start + 2),
                ("tick", pytest.approx(start + 5.2)),
                ("tick", start + 6),
            ]
            assert (timers[0].delivered, timers[0].missed) == (4, 2)


async def test_a_slow_actor_has_one_tick_queued_at_most_and_the_rest_are_counted_missed(
    autojump_clock: Any,
) -> None:
    received: Received = []
    depths: list[int] = []
    timers: list[actors.Timer] = []

    async def slow(ctx: actors.Context) -> None:
        timers.append(ctx.every(1.0, "tick"))
        async for message in ctx:
            received.append((message, trio.current_time()))
            if len(received) == 1:
                # Busy for 3.5 s: the ticks due at 2, 3 and 4 find it working.
                for _ in range(7):
                    await trio.sleep(0.5)
                    depths.append(ctx.ref.mailbox_depth)

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            await system.spawn(slow)
            await trio.sleep(5.5)

            (timer,) = timers
            # The tick due at 2 waited in the mailbox; those due at 3 and 4 were
            # missed (counted, not queued); the schedule kept its rate.
            assert received == [("tick", start + 1), ("tick", start + 4.5), ("tick", start + 5)]
            assert max(depths) == 1
            assert (timer.delivered, timer.missed) == (3, 2)


@pytest.mark.parametrize("overflow", list(Overflow), ids=lambda overflow: overflow.value)
async def test_a_tick_goes_past_a_full_mailbox_and_no_policy_drops_it(
    autojump_clock: Any, overflow: Overflow
) -> None:
    received: list[Any] = []
    busy = trio.Event()
    release = trio.Event()
    timers: list[actors.Timer] = []

    async def blocked(ctx: actors.Context) -> None:
        timers.append(ctx.send_after(1, "tick"))
        async for message in ctx:
            received.append(message)
            if message == "block":
                busy.set()
                await release.wait()

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            ref = await system.spawn(
                blocked, mailbox_capacity=1, overflow=overflow, conflate_key=lambda m: m
            )
            ref.send_nowait("block")
            await busy.wait()
            ref.send_nowait("fill")  # the mailbox is full now
            await trio.sleep(2)  # the tick is due meanwhile
            assert ref.mailbox_depth == 2
            for _ in range(3):
                try:
                    ref.send_nowait("more")  # refused, or a policy drops around the tick
                except MailboxFullError:
                    assert overflow in (Overflow.WAIT, Overflow.FAIL)
            release.set()
            await trio.testing.wait_all_tasks_blocked()

            assert "tick" in received
            assert timers[0].delivered == 1


async def test_cancel_stops_a_timer_for_good(autojump_clock: Any) -> None:
    received: Received = []
    timers: dict[str, actors.Timer] = {}

    async def worker(ctx: actors.Context) -> None:
        timers["every"] = ctx.every(1, "tick")
        timers["once"] = ctx.send_after(5, "once")
        timers["never"] = ctx.send_after(1, "never")
        timers["never"].cancel()
        async for message in ctx:
            received.append((message, trio.current_time()))
            if len(received) == 2:
                timers["every"].cancel()
                timers["once"].cancel()

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            start = trio.current_time()
            ref = await system.spawn(worker)
            await trio.sleep(20)

            assert received == [("tick", start + 1), ("tick", start + 2)]
            assert not any(timer.active for timer in timers.values())
            assert timers["every"].delivered == 2
            assert timers["once"].delivered == timers["never"].delivered == 0
            timers["every"].cancel()  # twice is harmless
            assert len(system.timers) == 0
            assert ref.alive

            # Cancelled entries do not pile up in the heap until their deadlines:
            # it never holds more than twice what it serves.
            far = [system.timers.send_after(ref, 100 + n, n) for n in range(10)]
            for timer in far[:-1]:
                timer.cancel()
                assert len(system.timers._heap) <= 2 * len(system.timers)
            far[-1].cancel()
            assert system.timers._heap == []


async def test_a_cancelled_timer_leaves_a_queued_tick_in_place(autojump_clock: Any) -> None:
    received: list[Any] = []
    busy = trio.Event()
    release = trio.Event()

    async def worker(ctx: actors.Context) -> None:
        async for message in ctx:
            received.append(message)
            if message == "block":
                busy.set()
                await release.wait()

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            ref = await system.spawn(worker)
            timer = system.timers.every(ref, 1, "tick")
            ref.send_nowait("block")
            await busy.wait()
            await trio.sleep(3.5)  # one tick queued, two missed
            timer.cancel()
            release.set()
            await trio.sleep(5)

            assert received == ["block", "tick"]  # as a Down after demonitor
            assert (timer.delivered, timer.missed) == (1, 2)


async def test_timers_end_with_their_actor_and_nothing_of_them_is_kept(
    autojump_clock: Any,
) -> None:
    received: list[Any] = []
    stopping = trio.Event()
    timers: list[actors.Timer] = []
    payloads = [Payload(), Payload()]
    freed = [weakref.ref(payload) for payload in payloads]

    class Ticker(actors.Actor):
        async def started(self) -> None:
            timers.append(self.ctx.every(1, payloads[0]))
            timers.append(self.ctx.send_after(100, payloads[1]))

        async def handle(self, message: Any) -> None:
            received.append(message)

        async def stopped(self, reason: actors.ExitReason) -> None:
            stopping.set()
            await trio.sleep(5)  # ticks come due while it stops: none goes in

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            bystander = await system.spawn(Ticker)  # its timers must outlive the other's
            ref = await system.spawn(Ticker, id="ticker")
            await trio.sleep(2.5)
            assert len(received) == 4  # two ticks each

            async with trio.open_nursery() as nursery:
                nursery.start_soon(system.root.stop_child, "ticker")
                await stopping.wait()
                delivered = timers[2].delivered
                await trio.sleep(2)
                assert ref.alive  # still stopping, but its mailbox is closed:
                assert timers[2].delivered == delivered  # a tick came due, and went nowhere,
                assert not timers[2].active  # and ended the timer
            assert not ref.alive
            assert [timer.active for timer in timers] == [True, True, False, False]
            assert len(system.timers) == 2
            ended = timers[2:]
            delivered = [timer.delivered for timer in ended]
            await trio.sleep(200)  # past every deadline the ended actor's timers had
            assert [timer.delivered for timer in ended] == delivered

            # The heap keeps no entry of theirs, so once nobody else holds them
            # the timers, and the messages they carried, are freed.
            assert len(system.timers._heap) == len(system.timers)
            freed_timers = [weakref.ref(timer) for timer in ended]
            del ended, timers[2:], payloads[:]
            received.clear()
            gc.collect()
            assert [ref() for ref in freed_timers] == [None, None]
            assert freed[0]() is not None  # the bystander's own timers still hold theirs
            assert bystander.alive
    timers.clear()
    gc.collect()
    assert [ref() for ref in freed] == [None, None]


async def test_a_restarted_actor_starts_without_its_predecessors_timers(
    autojump_clock: Any,
) -> None:
    received: Received = []

    async def ticker(ctx: actors.Context) -> None:
        ctx.every(1, ("tick", ctx.ref))
        async for message in ctx:
            received.append((message, trio.current_time()))
            if len(received) == 2:
                raise RuntimeError("crash on the second tick")

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            first = await system.spawn(ticker, restart=actors.Restart.TRANSIENT)
            await first.wait_exit()
            await trio.sleep(3.5)
            # Only the new incarnation's ticks, one per second from its start.
            assert {message[1] for message, _ in received[2:]} == {
                info.ref for info in system.root.which_children()
            }
            assert len(system.timers) == 1


async def test_many_actors_with_timers_cost_no_task_each(autojump_clock: Any) -> None:
    actors_count = 2_000
    ticks: dict[actors.ActorRef, int] = {}

    async def ticker(ctx: actors.Context) -> None:
        ctx.every(0.05, "tick")  # 20 Hz, as a game loop
        ctx.send_after(60, "once")
        ticks[ctx.ref] = 0
        async for _message in ctx:
            ticks[ctx.ref] += 1

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            supervisor = await system.start_supervisor(id="tickers")
            with_system = live_tasks()
            start = trio.current_time()
            spec = actors.ChildSpec(None, ticker, restart=actors.Restart.TEMPORARY)
            for _ in range(actors_count):
                await supervisor.start_child(spec)
            assert trio.current_time() == start
            assert live_tasks() == with_system + actors_count  # the actors, and nothing more
            assert len(system.timers) == 2 * actors_count

            await trio.sleep(1.025)
            assert set(ticks.values()) == {20}


async def test_timers_check_their_arguments_and_their_actor(system: actors.System) -> None:
    ref = await system.spawn(_idle)
    for bad in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="delay"):
            system.timers.send_after(ref, bad, "x")
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="interval"):
            system.timers.every(ref, bad, "x")
    timer = system.timers.send_after(ref, 0, "now")  # due at once: delivered on the next pass
    await trio.testing.wait_all_tasks_blocked()
    assert timer.delivered == 1
    assert "once" in repr(timer) and "done" in repr(timer)

    await system.root.stop_child(system.root.which_children()[0].id)
    with pytest.raises(ActorExitedError):
        system.timers.every(ref, 1, "x")
    assert len(system.timers) == 0


async def _idle(ctx: actors.Context) -> None:
    async for _message in ctx:
        pass


def _timers_of(system: actors.System) -> list[actors.Timer]:
    """The active timers in the system's heap."""
    return [entry[2] for entry in system.timers._heap if entry[2] is not None]
