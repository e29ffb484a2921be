"""What an idle actor keeps of the messages it has handled: nothing.

A long-lived actor that waits for its next batch must not keep its last
one: a hub's sessions supervisor would keep the last few hundred departed
sessions alive (each exit it handled holds its child's spec, and the spec
the session), and a topic actor the last messages of departed members.
Freed by reference counting, at once: no garbage collection is asked for.
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import ChildSpec, Restart


class Held:
    """Something a message refers to (as a session's exit refers to the session)."""


class Handles(actors.Actor):
    """A class actor that looks at every message and keeps none."""

    def __init__(self, handled: trio.Event) -> None:
        super().__init__()
        self.handled = handled

    async def handle(self, message: Any) -> None:
        assert isinstance(message, Held)
        self.handled.set()


async def iterates(ctx: actors.Context, handled: trio.Event) -> None:
    """A function actor, reading its mailbox with `async for` (and letting go of each)."""
    async for message in ctx:
        assert isinstance(message, Held)
        handled.set()
        del message


async def ends_at_once(ctx: actors.Context, held: Held) -> None:
    ctx.ready()


@pytest.mark.parametrize(
    "actor", [Handles, iterates], ids=["a class actor", "a function actor iterating its mailbox"]
)
async def test_an_actor_waiting_for_its_next_batch_keeps_no_message(
    system: actors.System, actor: Any
) -> None:
    handled = trio.Event()
    ref = await system.spawn(actor, handled)
    held = Held()
    gone = weakref.ref(held)
    ref.send_nowait(held)
    del held
    await handled.wait()
    await trio.testing.wait_all_tasks_blocked()

    assert ref.alive
    assert gone() is None


async def test_a_supervisor_keeps_no_ended_temporary_child(system: actors.System) -> None:
    supervisor = await system.start_supervisor([])
    held = Held()
    gone = weakref.ref(held)
    spec = ChildSpec("child", ends_at_once, args=(held,), restart=Restart.TEMPORARY)
    child = await supervisor.start_child(spec)
    del held, spec
    await child.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    assert supervisor.which_children() == []
    assert gone() is None
