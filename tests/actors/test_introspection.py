"""What the runtime tells an observer: each actor's state, crash reports, and bounded snapshots."""

from __future__ import annotations

import trio
import trio.testing
from actors_support import Log, child_refs, idle, recorder

import actors
from actors import Backoff, ChildSpec, RestartBudget


async def test_a_ref_says_running_then_stopping_then_how_it_ended(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor(
        [recorder("calm", log), recorder("doomed", log)], id="pair"
    )
    refs = child_refs(supervisor)
    calm, doomed = refs["calm"], refs["doomed"]
    assert calm is not None and doomed is not None
    assert (calm.state, doomed.state) == ("running", "running")

    doomed.send_nowait("crash")
    await doomed.wait_exit()
    assert doomed.state == "crashed"

    killed = await system.spawn(idle)
    killed.kill()  # asked to end, and not ended yet: this task has not yielded
    assert killed.state == "stopping"
    await killed.wait_exit()
    assert killed.state == "exited"


async def test_a_crash_is_reported_once_with_its_traceback(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    supervisor = await system.start_supervisor([recorder("fragile", log)], id="keeper")
    fragile = child_refs(supervisor)["fragile"]
    assert fragile is not None
    assert system.crash_reports == ()

    fragile.send_nowait("crash")
    await fragile.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    (report,) = system.crash_reports
    assert report.actor == fragile.name
    assert report.supervisor.startswith("keeper#")
    assert report.restart == "permanent"
    assert report.error == "BoomError('fragile')"
    assert "Traceback (most recent call last)" in report.traceback
    assert report.traceback.rstrip().endswith("BoomError: fragile")
    assert report.wall_time > 0


async def test_crash_reports_keep_only_the_last_ones(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    budget = RestartBudget(max_restarts=1000, window_seconds=1.0)
    supervisor = await system.start_supervisor([recorder("w", log)], id="s", budget=budget)
    for _ in range(actors.CRASH_REPORTS_KEPT + 5):
        ref = child_refs(supervisor)["w"]
        assert ref is not None
        ref.send_nowait("crash")
        await ref.wait_exit()
        await trio.testing.wait_all_tasks_blocked()
    reports = system.crash_reports
    assert len(reports) == actors.CRASH_REPORTS_KEPT
    assert [report.time for report in reports] == sorted(report.time for report in reports)


async def test_a_child_waiting_out_its_backoff_shows_as_crashed(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    budget = RestartBudget(backoff=Backoff(initial=10.0, jitter=0.0))
    supervisor = await system.start_supervisor([recorder("slowpoke", log)], budget=budget)
    ref = child_refs(supervisor)["slowpoke"]
    assert ref is not None
    ref.send_nowait("crash")
    await ref.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    (info,) = supervisor.which_children()
    assert info.ref is None and info.ended is ref
    (tree,) = system.snapshot().children
    (child,) = tree.children
    assert (child.name, child.state, child.alive, child.restarts) == (
        ref.name,
        "crashed",
        False,
        1,
    )

    await trio.sleep(11.0)
    (child,) = system.snapshot().children[0].children
    assert (child.state, child.alive, child.restarts) == ("running", True, 1)
    assert child.name != ref.name


async def test_a_snapshot_can_list_a_few_children_and_count_the_rest(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    crowd = await system.start_supervisor([], id="crowd")
    for _ in range(7):
        await crowd.start_child(ChildSpec(None, idle, label="member"))

    whole = system.snapshot()
    (tree,) = whole.children
    assert (len(tree.children), tree.more_children) == (7, 0)

    bounded = system.snapshot(max_children=3)
    (tree,) = bounded.children
    assert [info.child_id for info in tree.children] == ["member-1", "member-2", "member-3"]
    assert tree.more_children == 4


async def test_a_supervisor_started_with_an_id_is_named_after_it(
    system: actors.System, autojump_clock: trio.testing.MockClock
) -> None:
    named = await system.start_supervisor([], id="workers")
    anonymous = await system.start_supervisor([])
    assert named.ctx.name.startswith("workers#")
    assert anonymous.ctx.name.startswith("supervisor#")
    assert [info.name for info in system.snapshot().children] == [
        named.ctx.name,
        anonymous.ctx.name,
    ]
