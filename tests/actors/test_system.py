"""The system: spawning, the snapshot, an orderly end, and nothing left behind."""

from __future__ import annotations

import functools
import math
import os
import signal
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing
from actors_support import (
    TEST_SECONDS,
    Log,
    Recorder,
    child_refs,
    idle,
    live_tasks,
    recorder,
    stops,
)

import actors
from actors import ChildSpec, Overflow, Restart, Supervisor


class LoggedSupervisor(Supervisor):
    """A supervisor that writes its own stop into a log, after its children's."""

    def __init__(self, log: Log, name: str, children: Sequence[ChildSpec], **options: Any) -> None:
        super().__init__(children, **options)
        self.log = log
        self.name = name

    async def stopped(self, reason: actors.ExitReason) -> None:
        self.log.append(("stop", self.name, reason))


def logged_supervisor(log: Log, name: str, children: Sequence[ChildSpec]) -> ChildSpec:
    return ChildSpec(
        name, functools.partial(LoggedSupervisor, log, name, children), shutdown=math.inf
    )


async def start_tree(system: actors.System, log: Log) -> list[actors.ActorRef]:
    """Spawn s1, start tree[a, inner[x, y], c], spawn s2; return every ref started."""
    refs = [await system.spawn(Recorder, "s1", log)]
    tree_ref = await system.start_child(
        logged_supervisor(
            log,
            "tree",
            [
                recorder("a", log),
                logged_supervisor(log, "inner", [recorder("x", log), recorder("y", log)]),
                recorder("c", log),
            ],
        )
    )
    tree = system.supervisor_of(tree_ref)
    assert tree is not None
    inner = system.supervisor_of(child_refs(tree)["inner"])
    assert inner is not None
    refs += [tree_ref, *child_refs(tree).values(), *child_refs(inner).values()]
    refs.append(await system.spawn(Recorder, "s2", log))
    return refs


EXPECTED_STOP_ORDER = ["s2", "c", "y", "x", "inner", "a", "tree", "s1"]


async def test_leaving_the_block_stops_everything_in_reverse_start_order(
    autojump_clock: Any,
) -> None:
    log: Log = []
    baseline = live_tasks()
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system("ordered", handle_signals=False) as system:
            refs = await start_tree(system, log)
            assert [entry[1] for entry in log] == ["s1", "a", "x", "y", "c", "s2"]
            assert live_tasks() > baseline
            log.clear()

    assert stops(log) == EXPECTED_STOP_ORDER
    assert all(entry[2] is actors.SHUTDOWN for entry in log)
    assert all(not ref.alive for ref in refs)
    assert live_tasks() == baseline  # no task left behind
    await trio.testing.wait_all_tasks_blocked()


async def test_system_shutdown_stops_the_tree_in_order_and_ends_the_body(
    autojump_clock: Any,
) -> None:
    log: Log = []
    reached_the_end = False
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            refs = await start_tree(system, log)
            log.clear()
            system.shutdown()
            await trio.sleep_forever()  # cancelled once the tree has stopped
            reached_the_end = True

    assert not reached_the_end
    assert stops(log) == EXPECTED_STOP_ORDER
    assert all(not ref.alive for ref in refs)
    assert system.stopped_by_signal is None


async def test_an_actor_ignoring_the_end_is_cancelled_after_its_shutdown_time(
    autojump_clock: Any,
) -> None:
    cancelled: list[float] = []

    async def deaf(ctx: actors.Context) -> None:
        ctx.ready()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(trio.current_time())

    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            ref = await system.spawn(deaf, shutdown=4)
            leaving = trio.current_time()
    assert cancelled == [leaving + 4]
    assert ref.exit_reason is actors.SHUTDOWN


async def test_snapshot_shows_the_tree(system: actors.System) -> None:
    log: Log = []
    gate = trio.Event()

    async def backlogged(ctx: actors.Context) -> None:
        ctx.ready()
        await gate.wait()
        async for _message in ctx:
            pass

    supervisor = await system.start_supervisor(
        [
            recorder("a", log),
            Supervisor.spec(
                "inner",
                [ChildSpec("w", backlogged, mailbox_capacity=4, overflow=Overflow.DROP_NEWEST)],
            ),
        ],
        id="tree",
    )
    spawned = await system.spawn(idle, label="loner")
    inner = system.supervisor_of(child_refs(supervisor)["inner"])
    assert inner is not None
    worker = child_refs(inner)["w"]
    assert worker is not None
    for message in range(6):
        worker.send_nowait(message)
    a = child_refs(supervisor)["a"]
    assert a is not None
    a.send_nowait("crash")
    await a.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    root = system.snapshot()

    assert (root.kind, root.name, root.child_id, root.supervisor) == (
        "supervisor",
        system.root.ctx.ref.name,
        "test",
        None,
    )
    assert [info.child_id for info in root.children] == ["tree", spawned.label + "-1"]
    tree, loner = root.children
    assert (tree.kind, tree.supervisor, tree.restarts) == ("supervisor", root.name, 0)
    assert (loner.kind, loner.name, loner.alive) == ("worker", spawned.name, True)
    a_info, inner_info = tree.children
    assert (a_info.child_id, a_info.kind, a_info.restarts) == ("a", "worker", 1)
    assert a_info.mailbox_capacity == actors.DEFAULT_MAILBOX_CAPACITY
    assert a_info.supervisor == tree.name
    assert (inner_info.kind, inner_info.supervisor) == ("supervisor", tree.name)
    (w_info,) = inner_info.children
    assert (w_info.name, w_info.kind, w_info.supervisor) == (worker.name, "worker", inner_info.name)
    assert (w_info.mailbox_depth, w_info.mailbox_capacity, w_info.dropped) == (4, 4, 2)
    assert [info.child_id for info in root.walk()] == ["test", "tree", "a", "inner", "w", "loner-1"]
    assert all(info.alive for info in root.walk())
    gate.set()


async def test_spawn_gives_temporary_actors_labelled_after_their_start(
    system: actors.System,
) -> None:
    ref = await system.spawn(idle)
    assert ref.name.startswith("idle#")
    (info,) = system.root.which_children()
    assert info.restart is Restart.TEMPORARY
    assert info.dynamic
    permanent = await system.spawn(idle, id="kept", restart=Restart.PERMANENT, label="keeper")
    assert permanent.label == "keeper"
    assert system.root.which_children()[1].restart is Restart.PERMANENT


async def test_start_supervisor_returns_the_running_supervisor(system: actors.System) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("a", log)], id="sup")
    ref = system.root.which_children()[0].ref
    assert ref is supervisor.ctx.ref
    assert system.supervisor_of(ref) is supervisor
    assert system.supervisor_of(child_refs(supervisor)["a"]) is None
    assert isinstance(system.root, Supervisor)


async def test_two_systems_share_nothing(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system("one", handle_signals=False) as one:
            async with actors.open_system("two", handle_signals=False) as two:
                in_one = await one.spawn(idle)
                in_two = await two.spawn(idle)
                assert in_one.id == in_two.id  # each system counts its own ids
                assert [info.ref for info in one.root.which_children()] == [in_one]
                assert [info.ref for info in two.root.which_children()] == [in_two]
            assert not in_two.alive
            assert in_one.alive  # the end of one system is not the end of the other


@pytest.mark.parametrize("children", [0, 1, 50])
async def test_no_task_is_left_behind(autojump_clock: Any, children: int) -> None:
    baseline = live_tasks()
    refs = []
    with trio.fail_after(TEST_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            supervisor = await system.start_supervisor()
            for number in range(children):
                refs.append(await supervisor.start_child(ChildSpec(number, idle)))
                refs.append(await system.spawn(idle))
    assert all(not ref.alive for ref in refs)
    assert live_tasks() == baseline
    await trio.testing.wait_all_tasks_blocked()


async def test_an_error_in_the_body_comes_out_as_raised_not_in_a_group() -> None:
    class BodyError(Exception):
        pass

    with trio.fail_after(10), pytest.raises(BodyError, match="from the body"):
        async with actors.open_system(handle_signals=False) as system:
            await system.spawn(_idle_forever)
            raise BodyError("from the body")


async def _idle_forever(ctx: actors.Context) -> None:
    async for _ in ctx:
        pass


async def test_send_errors_name_the_actor_with_its_id() -> None:
    with trio.fail_after(10):
        async with actors.open_system(handle_signals=False) as system:
            ref = await system.spawn(_idle_forever, label="idle")
            ref.kill()
            await ref.wait_exit()
            with pytest.raises(actors.ActorExitedError, match=f"idle#{ref.id}"):
                ref.send_nowait("hello")


async def test_sigint_stops_the_tree_in_order_and_ends_the_block_cleanly() -> None:
    order: list[str] = []

    class Worker(actors.Actor):
        def __init__(self, name: str) -> None:
            self.name = name

        async def stopped(self, reason: actors.ExitReason) -> None:
            order.append(f"{self.name}:{reason}")

    with trio.fail_after(10):
        async with actors.open_system(handle_signals=True) as system:
            await system.spawn(Worker, "first")
            await system.spawn(Worker, "second")
            os.kill(os.getpid(), signal.SIGINT)
            await trio.sleep_forever()  # the signal cancels the body
        assert system.stopped_by_signal == signal.SIGINT
        assert order == ["second:shutdown", "first:shutdown"]
