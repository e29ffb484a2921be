"""Scale: ten thousand dynamic children come and go without leaking a task."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from actors_support import live_tasks

import actors
from actors import ChildSpec

CHILDREN = 10_000
STOPPED_ONE_BY_ONE = 2_500

# Ten thousand starts and stops take about a second on a 2-core machine; this
# bound (on the real clock) catches a quadratic slip long before pytest-timeout.
SCALE_SECONDS = 20


async def connection(ctx: actors.Context) -> None:
    """A stand-in for a connection actor: it waits for messages until told to stop."""
    async for _message in ctx:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("rest_stopped_by", ["supervisor", "system"])
async def test_ten_thousand_children_start_and_stop_without_leaking_tasks(
    rest_stopped_by: str,
) -> None:
    baseline = live_tasks()
    refs: list[actors.ActorRef] = []
    with trio.fail_after(SCALE_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            supervisor = await system.start_supervisor(id="connections")
            with_system = live_tasks()

            spec = ChildSpec(None, connection, restart=actors.Restart.TEMPORARY, label="conn")
            for _ in range(CHILDREN):
                refs.append(await supervisor.start_child(spec))  # ids conn-1, conn-2...
            assert supervisor.count_children() == CHILDREN
            assert live_tasks() == with_system + CHILDREN  # one task per child

            for info in supervisor.which_children()[:STOPPED_ONE_BY_ONE]:
                await supervisor.stop_child(info.id)
            assert supervisor.count_children() == CHILDREN - STOPPED_ONE_BY_ONE
            assert live_tasks() == with_system + CHILDREN - STOPPED_ONE_BY_ONE
            assert all(not ref.alive for ref in refs[:STOPPED_ONE_BY_ONE])
            assert all(ref.alive for ref in refs[STOPPED_ONE_BY_ONE:])

            if rest_stopped_by == "supervisor":
                await system.root.stop_child("connections")
                assert live_tasks() == with_system - 1  # the supervisor's task too
            # else: leaving the block stops the rest

    assert all(ref.exit_reason is actors.SHUTDOWN for ref in refs)
    assert live_tasks() == baseline
    await trio.testing.wait_all_tasks_blocked()


@pytest.mark.slow
async def test_stopping_many_children_is_done_in_concurrent_batches(autojump_clock: Any) -> None:
    """A supervisor stops its dynamic children together: slow stops overlap."""

    class SlowToStop(actors.Actor):
        async def stopped(self, reason: actors.ExitReason) -> None:
            await trio.sleep(1)  # each takes a second to say goodbye

    with trio.fail_after(SCALE_SECONDS):
        async with actors.open_system(handle_signals=False) as system:
            supervisor = await system.start_supervisor(id="connections")
            for _ in range(3_000):
                await supervisor.start_child(ChildSpec(None, SlowToStop))
            start = trio.current_time()
            await system.root.stop_child("connections")
            # Three batches of 1,000 (DEFAULT_SHUTDOWN_BATCH), one second each;
            # one by one it would take 3,000 seconds.
            assert trio.current_time() - start == pytest.approx(3)
