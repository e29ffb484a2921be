"""Supervisors: strategies, restart types, intensity, backoff, dynamic children, stopping."""

from __future__ import annotations

import functools
import math
import random
from typing import Any

import pytest
import trio
import trio.testing
from actors_support import (
    TEST_SECONDS,
    BoomError,
    Log,
    Recorder,
    child_info,
    child_refs,
    crash_on_message,
    idle,
    recorder,
    starts,
    stops,
)

import actors
from actors import (
    ActorExitedError,
    Backoff,
    ChildSpec,
    Crashed,
    DuplicateChildError,
    NoSuchChildError,
    Restart,
    RestartBudget,
    RestartIntensityError,
    Strategy,
    Supervisor,
)

NAMES = ["a", "b", "c", "d"]


async def crash(ref: actors.ActorRef | None) -> None:
    """Make a Recorder crash, and wait until its supervisor has dealt with it."""
    assert ref is not None
    ref.send_nowait("crash")
    await ref.wait_exit()
    await trio.testing.wait_all_tasks_blocked()


# --- strategies --------------------------------------------------------------------------


@pytest.mark.parametrize("crashed", [0, 2, 3], ids=["first", "middle", "last"])
@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda strategy: strategy.value)
async def test_a_strategy_restarts_exactly_its_children_in_order(
    system: actors.System, strategy: Strategy, crashed: int
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor(
        [recorder(name, log) for name in NAMES], strategy=strategy
    )
    assert starts(log) == NAMES
    before = child_refs(supervisor)
    log.clear()

    await crash(before[NAMES[crashed]])

    match strategy:
        case Strategy.ONE_FOR_ONE:
            restarted = [NAMES[crashed]]
        case Strategy.ONE_FOR_ALL:
            restarted = NAMES
        case Strategy.REST_FOR_ONE:
            restarted = NAMES[crashed:]
    stopped_by_supervisor = [name for name in reversed(restarted) if name != NAMES[crashed]]

    # The crashed child's own stop hook, then the others stopped in reverse
    # start order, then every restarted child started again in start order.
    assert log[0][:2] == ("stop", NAMES[crashed])
    assert isinstance(log[0][2], Crashed)
    assert log[1:] == [
        *(("stop", name, actors.SHUTDOWN) for name in stopped_by_supervisor),
        *(("start", name) for name in restarted),
    ]

    after = child_refs(supervisor)
    assert list(after) == NAMES  # the start order is kept
    for name in NAMES:
        if name in restarted:
            assert after[name] is not before[name], f"{name} should have been restarted"
            assert after[name] is not None and after[name].alive
        else:
            assert after[name] is before[name], f"{name} should have kept running"
            assert after[name] is not None and after[name].alive
    infos = {info.id: info for info in supervisor.which_children()}
    assert infos[NAMES[crashed]].restarts == 1
    for name in NAMES:
        if name not in restarted:
            assert infos[name].restarts == 0
    old = before[NAMES[crashed]]
    assert old is not None and isinstance(old.exit_reason, Crashed)
    for name in stopped_by_supervisor:
        old = before[name]
        assert old is not None and old.exit_reason is actors.SHUTDOWN


async def test_temporary_siblings_taken_down_by_a_restart_are_removed(
    system: actors.System,
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor(
        [
            recorder("a", log),
            recorder("temp", log, restart=Restart.TEMPORARY),
            recorder("trans", log, restart=Restart.TRANSIENT),
        ],
        strategy=Strategy.ONE_FOR_ALL,
    )
    log.clear()

    await crash(child_refs(supervisor)["a"])

    assert [info.id for info in supervisor.which_children()] == ["a", "trans"]
    assert starts(log) == ["a", "trans"]


# --- restart types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "ending", "restarted"),
    [
        (Restart.PERMANENT, "stop", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "stop", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "stop", False),
        (Restart.TEMPORARY, "crash", False),
    ],
)
async def test_a_restart_type_decides_whether_an_ended_child_comes_back(
    system: actors.System, restart: Restart, ending: str, restarted: bool
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor(
        [recorder("other", log), recorder("child", log, restart=restart)]
    )
    ref = child_refs(supervisor)["child"]
    assert ref is not None
    log.clear()

    ref.send_nowait(ending)  # "stop" ends it with NORMAL, "crash" with Crashed
    await ref.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    refs = child_refs(supervisor)
    if restarted:
        assert starts(log) == ["child"]
        assert refs["child"] is not ref and refs["child"] is not None
        assert child_info(supervisor, "child").restarts == 1
    else:
        assert starts(log) == []
        assert "child" not in refs  # reported, then forgotten
    assert refs["other"] is not None and refs["other"].alive


# --- restart intensity -----------------------------------------------------------------------


async def test_exceeding_the_intensity_fails_the_supervisor_and_its_parent_restarts_it(
    system: actors.System,
) -> None:
    log: Log = []
    parent = await system.start_supervisor(
        [
            recorder("sibling", log),
            Supervisor.spec(
                "inner",
                [recorder("w", log), recorder("v", log)],
                budget=RestartBudget(max_restarts=2, window_seconds=60),
            ),
        ]
    )
    inner_ref = child_refs(parent)["inner"]
    assert inner_ref is not None
    inner = system.supervisor_of(inner_ref)
    assert inner is not None
    sibling = child_refs(parent)["sibling"]

    await crash(child_refs(inner)["w"])
    await crash(child_refs(inner)["w"])  # two restarts: within the budget
    assert inner_ref.alive
    assert child_info(inner, "w").restarts == 2
    log.clear()

    await crash(child_refs(inner)["w"])  # the third is one too many

    reason = inner_ref.exit_reason
    assert isinstance(reason, Crashed)
    assert type(reason.error) is RestartIntensityError
    assert reason.error.max_restarts == 2
    assert reason.error.window_seconds == 60
    # The failing supervisor stopped its remaining child, then its parent
    # (one_for_one) started it again, with fresh children.
    assert log[1:] == [("stop", "v", actors.SHUTDOWN), ("start", "w"), ("start", "v")]
    new_inner_ref = child_refs(parent)["inner"]
    assert new_inner_ref is not None and new_inner_ref is not inner_ref
    assert child_info(parent, "inner").restarts == 1
    assert child_refs(parent)["sibling"] is sibling  # untouched
    new_inner = system.supervisor_of(new_inner_ref)
    assert new_inner is not None
    assert child_info(new_inner, "w").restarts == 0  # a new supervisor, a new budget


async def test_at_the_root_the_intensity_error_is_raised_out_of_open_system() -> None:
    reached_the_end = False
    refs: list[actors.ActorRef] = []
    with trio.fail_after(10), pytest.raises(RestartIntensityError):
        async with actors.open_system(
            handle_signals=False, budget=RestartBudget(max_restarts=1)
        ) as system:
            refs.append(await system.spawn(idle, id="bystander"))
            refs.append(
                await system.spawn(crash_on_message, id="crasher", restart=Restart.PERMANENT)
            )
            refs[-1].send_nowait("first")
            await refs[-1].wait_exit()
            await trio.testing.wait_all_tasks_blocked()
            refs.append(child_refs(system.root)["crasher"])
            refs[-1].send_nowait("second")
            await trio.sleep_forever()  # the body is cancelled when the root fails
            reached_the_end = True
    assert not reached_the_end
    assert all(not ref.alive for ref in refs)
    assert refs[0].exit_reason is actors.SHUTDOWN


async def test_restarts_outside_the_window_do_not_add_up(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder("w", log)], budget=RestartBudget(max_restarts=1, window_seconds=10)
            )
            supervisor_ref = system.root.which_children()[0].ref
            for _ in range(4):
                await crash(child_refs(supervisor)["w"])
                await trio.sleep(11)  # let the window pass
            assert supervisor_ref is not None and supervisor_ref.alive
            assert child_info(supervisor, "w").restarts == 4

            await crash(child_refs(supervisor)["w"])
            await crash(child_refs(supervisor)["w"])  # two within 10 s: over budget
            assert not supervisor_ref.alive


async def test_a_child_failing_to_start_during_a_restart_counts_as_a_restart(
    system: actors.System,
) -> None:
    attempts: list[int] = []

    class FailsAfterFirstStart(actors.Actor):
        async def started(self) -> None:
            attempts.append(len(attempts))
            if len(attempts) > 1:
                raise BoomError("cannot start again")

        async def handle(self, message: Any) -> None:
            raise BoomError(message)

    supervisor_ref = (
        await system.start_supervisor(
            [ChildSpec("w", FailsAfterFirstStart)],
            budget=RestartBudget(max_restarts=3),
            restart=Restart.TEMPORARY,  # so that the root leaves it down
        )
    ).ctx.ref
    ref = child_refs(system.supervisor_of(supervisor_ref))["w"]
    assert ref is not None
    ref.send_nowait("crash")

    reason = await supervisor_ref.wait_exit()
    assert isinstance(reason, Crashed)
    assert isinstance(reason.error, RestartIntensityError)
    assert len(attempts) == 1 + 3  # the first start, then three failed restarts


# --- backoff ------------------------------------------------------------------------------


async def test_a_restart_waits_for_its_backoff(autojump_clock: Any) -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, multiplier=3.0, jitter=0.5)
    budget = RestartBudget(max_restarts=10, window_seconds=100, backoff=backoff)
    seed = 1234
    expected = random.Random(seed)  # draws what the supervisor's rng will draw
    send_start, receive_start = trio.open_memory_channel[tuple[actors.ActorRef, float]](10)

    async def timed(ctx: actors.Context) -> None:
        send_start.send_nowait((ctx.ref, trio.current_time()))
        async for message in ctx:
            raise BoomError(message)

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            await system.start_child(
                ChildSpec(
                    "backing-off",
                    functools.partial(
                        Supervisor, [ChildSpec("w", timed)], budget=budget, rng=random.Random(seed)
                    ),
                    shutdown=math.inf,
                )
            )
            ref, _ = receive_start.receive_nowait()

            for attempt in (1, 2, 3):
                crashed_at = trio.current_time()
                ref.send_nowait("crash")
                # The clock jumps ahead only when every task waits: to the restart.
                ref, started_at = await receive_start.receive()
                delay = backoff.delay(attempt, expected)
                base = backoff.initial * backoff.multiplier ** (attempt - 1)
                assert base * 0.5 <= delay <= base * 1.5
                assert started_at - crashed_at == pytest.approx(delay)


# A backoff without jitter: the n-th restart of a child within the window
# waits 10 * 2**(n-1) seconds.
STEADY_BACKOFF = Backoff(initial=10.0, maximum=100.0, multiplier=2.0, jitter=0.0)


async def sleep_past(seconds: float) -> None:
    """Sleep `seconds`, then let whatever came due at that moment finish."""
    await trio.sleep(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def test_start_child_and_stop_child_go_ahead_during_a_backoff(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder("crasher", log), recorder("other", log)],
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            crashed_at = trio.current_time()
            await crash(child_refs(supervisor)["crasher"])
            assert child_refs(supervisor)["crasher"] is None  # waiting out its backoff

            # The supervisor holds no lock meanwhile: these do not wait 10 s.
            new = await supervisor.start_child(recorder("new", log))
            await supervisor.stop_child("other")
            assert trio.current_time() == crashed_at
            assert new.alive

            await sleep_past(10)
            refs = child_refs(supervisor)
            assert list(refs) == ["crasher", "new"]
            assert refs["crasher"] is not None and refs["crasher"].alive
            assert starts(log) == ["crasher", "other", "new", "crasher"]


async def test_a_supervisor_asked_to_stop_during_a_backoff_stops_at_once(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder("other", log), recorder("crasher", log)],
                id="sup",
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            supervisor_ref = supervisor.ctx.ref
            await crash(child_refs(supervisor)["crasher"])
            log.clear()
            stop_at = trio.current_time()

            await system.root.stop_child("sup")

            assert trio.current_time() == stop_at  # the backoff was not waited out
            assert supervisor_ref.exit_reason is actors.SHUTDOWN
            assert log == [("stop", "other", actors.SHUTDOWN)]  # "crasher" never came back
            assert len(system.timers) == 0  # the restart's timer went with the supervisor
            await sleep_past(60)
            assert log == [("stop", "other", actors.SHUTDOWN)]


@pytest.mark.parametrize(
    "strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE], ids=lambda strategy: strategy.value
)
async def test_a_restart_with_a_backoff_stops_at_once_and_starts_in_order_after_it(
    autojump_clock: Any, strategy: Strategy
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder(name, log) for name in NAMES],
                strategy=strategy,
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            log.clear()
            crashed_at = trio.current_time()
            await crash(child_refs(supervisor)["b"])

            restarted = NAMES if strategy is Strategy.ONE_FOR_ALL else NAMES[1:]
            stopped = [name for name in reversed(restarted) if name != "b"]
            assert stops(log) == ["b", *stopped]  # at once, in reverse start order
            assert starts(log) == []
            assert [name for name, ref in child_refs(supervisor).items() if ref is None] == (
                restarted
            )

            await sleep_past(10)
            assert starts(log) == restarted  # after the backoff, in start order
            assert all(ref is not None for ref in child_refs(supervisor).values())
            assert trio.current_time() == crashed_at + 10


async def test_a_later_restart_takes_over_the_children_of_one_still_backing_off(
    autojump_clock: Any,
) -> None:
    # rest_for_one: "b" crashes (it and "c" are to start again in 10 s), then
    # "a" crashes for the second time (20 s). "b" and "c" must not start
    # before "a": they wait for the later restart, which starts all three.
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder(name, log) for name in ("a", "b", "c")],
                strategy=Strategy.REST_FOR_ONE,
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            await crash(child_refs(supervisor)["a"])
            await sleep_past(10)  # "a", "b" and "c" are back
            log.clear()

            await crash(child_refs(supervisor)["b"])
            await crash(child_refs(supervisor)["a"])
            await sleep_past(10)
            assert starts(log) == []  # "b"'s restart was taken over
            await sleep_past(10)

            assert starts(log) == ["a", "b", "c"]
            assert child_info(supervisor, "a").restarts == 2
            assert child_info(supervisor, "b").restarts == 1
            assert all(ref is not None and ref.alive for ref in child_refs(supervisor).values())
            await sleep_past(60)
            assert starts(log) == ["a", "b", "c"]


async def test_a_child_stopped_during_its_backoff_is_not_started_again(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []
            supervisor = await system.start_supervisor(
                [recorder("w", log)],
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            await crash(child_refs(supervisor)["w"])
            await supervisor.stop_child("w")
            replacement = await supervisor.start_child(recorder("w", log))  # the same id, anew
            log.clear()

            await sleep_past(30)  # past the first "w"'s backoff

            assert log == []  # nothing started, nothing stopped
            assert child_refs(supervisor) == {"w": replacement}
            assert replacement.alive


async def test_a_stopping_supervisor_starts_nothing_whose_backoff_ended_meanwhile(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: Log = []

            class SlowToRestart(Recorder):
                async def started(self) -> None:
                    if "slow" in starts(self.log):
                        await trio.sleep(20)
                    await super().started()

            supervisor = await system.start_supervisor(
                [ChildSpec("slow", SlowToRestart, args=("slow", log)), recorder("w", log)],
                id="sup",
                budget=RestartBudget(max_restarts=10, window_seconds=100, backoff=STEADY_BACKOFF),
            )
            start = trio.current_time()
            await crash(child_refs(supervisor)["slow"])  # back at 10, ready at 30
            await sleep_past(5)
            await crash(child_refs(supervisor)["w"])  # due at 15, while the supervisor is busy
            await sleep_past(15)
            log.clear()

            await system.root.stop_child("sup")  # asked at 20, stopped once "slow" is ready

            assert trio.current_time() == start + 30
            assert starts(log) == ["slow"]  # "w" was due before the stop, but not started
            assert stops(log) == ["slow"]


def test_backoff_grows_is_capped_and_jitters_within_its_fraction() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=0.25)
    rng = random.Random(7)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        for _ in range(50):
            assert base * 0.75 <= backoff.delay(attempt, rng) <= base * 1.25
    steady = Backoff(initial=0.5, jitter=0.0)
    assert steady.delay(1, rng) == 0.5
    assert steady.delay(3, rng) == 2.0


# --- dynamic children --------------------------------------------------------------------


async def test_start_child_and_stop_child(system: actors.System) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("static", log)])

    ref = await supervisor.start_child(recorder("dyn", log))
    assert ref.alive
    anonymous = await supervisor.start_child(ChildSpec(None, idle, label="conn"))
    infos = supervisor.which_children()
    assert [info.id for info in infos] == ["static", "dyn", "conn-1"]
    assert [info.dynamic for info in infos] == [False, True, True]
    assert infos[2].ref is anonymous
    assert supervisor.count_children() == 3

    await supervisor.stop_child("dyn")
    assert ref.exit_reason is actors.SHUTDOWN
    assert ("stop", "dyn", actors.SHUTDOWN) in log
    assert [info.id for info in supervisor.which_children()] == ["static", "conn-1"]

    await supervisor.stop_child("static")  # static children can be stopped too
    assert [info.id for info in supervisor.which_children()] == ["conn-1"]


async def test_duplicate_and_unknown_child_ids_are_errors(system: actors.System) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("static", log)])
    await supervisor.start_child(recorder("dyn", log))

    for taken in ("static", "dyn"):
        with pytest.raises(DuplicateChildError) as caught:
            await supervisor.start_child(ChildSpec(taken, idle))
        assert caught.value.child_id == taken
        assert repr(taken) in str(caught.value)
    with pytest.raises(NoSuchChildError, match="'nobody'"):
        await supervisor.stop_child("nobody")
    await supervisor.stop_child("dyn")
    with pytest.raises(NoSuchChildError):
        await supervisor.stop_child("dyn")
    assert starts(log) == ["static", "dyn"]  # the refused duplicates never started
    with pytest.raises(ValueError, match="unique"):
        Supervisor([ChildSpec("x", idle), ChildSpec("x", idle)])


async def test_a_stopping_supervisor_refuses_new_children(autojump_clock: Any) -> None:
    # A child let in now would be missed by the stop and keep the system from ending.
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            stopping = trio.Event()
            release = trio.Event()

            class SlowToStop(actors.Actor):
                async def stopped(self, reason: actors.ExitReason) -> None:
                    stopping.set()
                    await release.wait()

            supervisor = await system.start_supervisor([ChildSpec("slow", SlowToStop)], id="sup")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(system.root.stop_child, "sup")
                await stopping.wait()  # the supervisor is now stopping "slow"
                with pytest.raises(ActorExitedError):
                    await supervisor.start_child(ChildSpec("late", idle))
                release.set()
            assert supervisor.count_children() == 0


# --- starting and stopping in order ----------------------------------------------------------


async def test_children_start_in_order_each_ready_before_the_next(
    system: actors.System,
) -> None:
    log: Log = []
    proceed = trio.Event()

    class SlowStarter(Recorder):
        async def started(self) -> None:
            self.log.append(("begin", self.name))
            await proceed.wait()
            await super().started()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                system.start_supervisor,
                [
                    recorder("a", log),
                    ChildSpec("slow", SlowStarter, args=("slow", log)),
                    recorder("c", log),
                ],
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert log == [("start", "a"), ("begin", "slow")]  # c waits for slow
        proceed.set()
    assert log == [("start", "a"), ("begin", "slow"), ("start", "slow"), ("start", "c")]


async def test_a_tree_stops_in_reverse_start_order(system: actors.System) -> None:
    log: Log = []
    await system.start_supervisor(
        [
            recorder("a", log),
            Supervisor.spec("inner", [recorder("x", log), recorder("y", log)]),
            recorder("c", log),
        ],
        id="tree",
    )
    assert starts(log) == ["a", "x", "y", "c"]

    await system.root.stop_child("tree")

    assert stops(log) == ["c", "y", "x", "a"]
    assert all(entry[2] is actors.SHUTDOWN for entry in log if entry[0] == "stop")


async def test_a_child_ignoring_the_stop_is_cancelled_after_its_shutdown_time(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            cancelled_at: list[float] = []

            async def deaf(ctx: actors.Context) -> None:
                ctx.ready()
                try:
                    await trio.sleep_forever()  # never reads its mailbox
                finally:
                    cancelled_at.append(trio.current_time())

            supervisor = await system.start_supervisor(
                [ChildSpec("deaf", deaf, shutdown=3), ChildSpec("instant", deaf, shutdown=0)]
            )
            deaf_ref = child_refs(supervisor)["deaf"]
            instant_ref = child_refs(supervisor)["instant"]

            start = trio.current_time()
            await supervisor.stop_child("instant")
            assert cancelled_at == [start]  # shutdown=0: cancelled at once

            await supervisor.stop_child("deaf")
            assert cancelled_at == [start, start + 3]
            assert trio.current_time() == start + 3
            assert deaf_ref is not None and deaf_ref.exit_reason is actors.SHUTDOWN
            assert instant_ref is not None and instant_ref.exit_reason is actors.SHUTDOWN


async def test_a_slow_stop_is_waited_for_before_the_next_sibling_stops(
    autojump_clock: Any,
) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            log: list[tuple[str, float]] = []

            class Timed(actors.Actor):
                def __init__(self, name: str, cleanup: float) -> None:
                    self.name = name
                    self.cleanup = cleanup

                async def stopped(self, reason: actors.ExitReason) -> None:
                    log.append((f"{self.name} stopping", trio.current_time()))
                    await trio.sleep(self.cleanup)
                    log.append((f"{self.name} stopped", trio.current_time()))

            async def shielded(ctx: actors.Context) -> None:
                try:
                    async for _message in ctx:
                        pass
                finally:
                    log.append(("shielded stopping", trio.current_time()))
                    with trio.CancelScope(shield=True):
                        await trio.sleep(1.5)
                    log.append(("shielded stopped", trio.current_time()))

            await system.start_supervisor(
                [
                    ChildSpec("first", Timed, args=("first", 0), shutdown=5),
                    ChildSpec("shielded", shielded, shutdown=5),
                    ChildSpec("slow", Timed, args=("slow", 2), shutdown=5),
                ],
                id="sup",
            )
            start = trio.current_time()
            await system.root.stop_child("sup")

            assert log == [
                ("slow stopping", start),
                ("slow stopped", start + 2),  # its whole cleanup, within its 5 s
                ("shielded stopping", start + 2),
                ("shielded stopped", start + 3.5),
                ("first stopping", start + 3.5),
                ("first stopped", start + 3.5),
            ]


async def test_draining_and_the_stop_hook_share_one_shutdown_time(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            hook: list[str] = []

            class Slow(actors.Actor):
                async def handle(self, message: Any) -> None:
                    await trio.sleep(4)  # handling what was queued takes 4 s...

                async def stopped(self, reason: actors.ExitReason) -> None:
                    try:
                        await trio.sleep(10)  # ...and the stop hook would take 10
                        hook.append("finished")
                    except trio.Cancelled:
                        hook.append(f"cancelled at {trio.current_time()}")
                        raise

            supervisor = await system.start_supervisor([ChildSpec("slow", Slow, shutdown=5)])
            ref = child_refs(supervisor)["slow"]
            assert ref is not None
            ref.send_nowait("work")
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()

            await supervisor.stop_child("slow")

            assert trio.current_time() - start == 5
            assert hook == [f"cancelled at {start + 5}"]
            assert ref.exit_reason is actors.SHUTDOWN


# --- nesting -------------------------------------------------------------------------------


async def test_a_crash_in_a_nested_supervisor_stays_inside_it(system: actors.System) -> None:
    log: Log = []
    outer = await system.start_supervisor(
        [
            recorder("a", log),
            Supervisor.spec(
                "inner", [recorder("x", log), recorder("y", log)], strategy=Strategy.ONE_FOR_ALL
            ),
            recorder("c", log),
        ],
        strategy=Strategy.ONE_FOR_ALL,
    )
    outer_before = child_refs(outer)
    inner = system.supervisor_of(outer_before["inner"])
    assert inner is not None
    log.clear()

    await crash(child_refs(inner)["x"])

    assert child_refs(outer) == outer_before  # the outer one_for_all did not fire
    assert starts(log) == ["x", "y"]
    assert child_info(outer, "inner").supervisor is inner
    assert child_info(outer, "a").supervisor is None


async def test_a_registered_child_is_found_by_name_across_its_restarts() -> None:
    with trio.fail_after(10):
        async with actors.open_system("registered", handle_signals=False) as system:
            supervisor = await system.start_supervisor(
                [actors.ChildSpec(id="worker", start=crash_on_message, register="worker")]
            )
            first = system.registry.whereis("worker")
            assert first is not None and first is child_refs(supervisor)["worker"]
            await first.send("boom")  # crashes; the supervisor restarts it
            await first.wait_exit()
            while (second := system.registry.whereis("worker")) in (None, first):
                await trio.testing.wait_all_tasks_blocked()
            assert second is child_refs(supervisor)["worker"] and second.alive
