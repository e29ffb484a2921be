"""Registry and groups: unique names, lookups, sends by name, groups, cleanup on exit."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from actors_support import TEST_SECONDS, BoomError, crash_on_message, idle

import actors
from actors import ActorExitedError, NameTakenError, NoSuchActorError


async def collector(ctx: actors.Context, name: str, inbox: list[Any]) -> None:
    ctx.register(name)
    async for message in ctx:
        if message == "quit":
            return
        inbox.append(message)


async def test_register_whereis_and_send_by_name(system: actors.System) -> None:
    inbox: list[Any] = []
    ref = await system.spawn(collector, "mailroom", inbox)
    registry = system.registry

    assert registry.whereis("mailroom") is ref
    assert registry.lookup("mailroom") is ref
    assert registry.names() == {"mailroom": ref}
    assert await registry.send("mailroom", "first") is True
    assert registry.send_nowait("mailroom", "second") is True
    await trio.testing.wait_all_tasks_blocked()

    assert inbox == ["first", "second"]


async def test_an_unknown_name_is_none_or_an_error(system: actors.System) -> None:
    registry = system.registry
    assert registry.whereis("nobody") is None
    with pytest.raises(NoSuchActorError, match="'nobody'"):
        registry.lookup("nobody")
    with pytest.raises(NoSuchActorError):
        await registry.send("nobody", "hello")
    with pytest.raises(NoSuchActorError):
        registry.send_nowait("nobody", "hello")


async def test_a_name_held_by_a_live_actor_is_taken(system: actors.System) -> None:
    holder = await system.spawn(idle)
    other = await system.spawn(idle)
    registry = system.registry
    registry.register("unique", holder)
    registry.register("unique", holder)  # again, by the holder: a no-op

    with pytest.raises(NameTakenError) as caught:
        registry.register("unique", other)

    assert caught.value.name == "unique"
    assert caught.value.holder == holder.name
    assert holder.name in str(caught.value) and "'unique'" in str(caught.value)
    assert registry.whereis("unique") is holder


async def test_an_actor_can_hold_several_names_and_unregister_one(system: actors.System) -> None:
    ref = await system.spawn(idle, id="holder")
    registry = system.registry
    registry.register("first", ref)
    registry.register("second", ref)

    registry.unregister("first")
    registry.unregister("never registered")  # ignored

    assert registry.names() == {"second": ref}
    other = await system.spawn(idle)
    registry.register("first", other)  # free again
    await system.root.stop_child("holder")
    assert registry.names() == {"first": other}


@pytest.mark.parametrize("ending", ["normal", "crash", "shutdown"])
async def test_a_name_frees_itself_when_its_actor_ends(system: actors.System, ending: str) -> None:
    inbox: list[Any] = []
    ref = await system.spawn(collector, "name", inbox, id="holder")

    match ending:
        case "normal":
            ref.send_nowait("quit")
        case "crash":
            ref.kill(BoomError("crash"))
        case "shutdown":
            await system.root.stop_child("holder")
    reason = await ref.wait_exit()
    assert {"normal": actors.Normal, "crash": actors.Crashed, "shutdown": actors.Shutdown}[
        ending
    ] is type(reason)

    assert system.registry.whereis("name") is None
    assert system.registry.names() == {}
    successor = await system.spawn(collector, "name", inbox)
    assert system.registry.whereis("name") is successor


async def test_a_restarted_child_registers_its_name_again(system: actors.System) -> None:
    class Named(actors.Actor):
        async def started(self) -> None:
            self.ctx.register("service")  # NameTakenError here would fail the restart

        async def handle(self, message: Any) -> None:
            raise BoomError(message)

    supervisor = await system.start_supervisor([actors.ChildSpec("service", Named)])
    first = system.registry.whereis("service")
    assert first is not None and first is supervisor.which_children()[0].ref

    first.send_nowait("crash")
    await first.wait_exit()
    await trio.testing.wait_all_tasks_blocked()

    second = system.registry.whereis("service")
    assert second is not None and second is not first and second.alive
    assert supervisor.which_children()[0].ref is second
    assert supervisor.which_children()[0].restarts == 1


async def test_an_ended_actor_cannot_take_a_name_or_join_a_group(system: actors.System) -> None:
    ref = await system.spawn(idle, id="gone")
    await system.root.stop_child("gone")
    with pytest.raises(ActorExitedError):
        system.registry.register("late", ref)
    with pytest.raises(ActorExitedError):
        system.registry.join("late group", ref)
    assert system.registry.names() == {}
    assert system.registry.groups() == []


# --- groups --------------------------------------------------------------------------


async def test_groups_join_leave_and_members_in_join_order(system: actors.System) -> None:
    registry = system.registry
    first, second, third = [await system.spawn(idle) for _ in range(3)]
    registry.join("room", second)
    registry.join("room", first)
    registry.join("room", third)
    registry.join("room", second)  # joining twice is a no-op
    registry.join("lobby", first)

    assert registry.members("room") == (second, first, third)
    assert sorted(registry.groups()) == ["lobby", "room"]

    registry.leave("room", first)
    registry.leave("room", first)  # not a member any more: ignored
    registry.leave("nowhere", first)
    assert registry.members("room") == (second, third)

    registry.leave("lobby", first)
    assert registry.members("lobby") == ()
    assert registry.groups() == ["room"]  # an empty group is gone


async def test_ctx_join_and_leave(system: actors.System) -> None:
    async def member(ctx: actors.Context) -> None:
        ctx.join("a")
        ctx.join("b")
        async for message in ctx:
            if message == "leave":
                ctx.leave("a")

    ref = await system.spawn(member)
    assert system.registry.members("a") == (ref,)
    ref.send_nowait("leave")
    await trio.testing.wait_all_tasks_blocked()
    assert system.registry.members("a") == ()
    assert system.registry.members("b") == (ref,)


async def test_members_leave_their_groups_when_they_crash(system: actors.System) -> None:
    registry = system.registry
    stays = await system.spawn(idle)
    crasher = await system.spawn(crash_on_message)
    for group in ("room", "solo"):
        registry.join(group, crasher)
    registry.join("room", stays)
    registry.register("crasher", crasher)

    crasher.send_nowait("boom")
    await crasher.wait_exit()

    assert registry.members("room") == (stays,)
    assert registry.members("solo") == ()
    assert registry.groups() == ["room"]
    assert registry.whereis("crasher") is None


async def test_two_systems_do_not_see_each_others_names(autojump_clock: Any) -> None:
    with trio.fail_after(TEST_SECONDS):
        async with (
            actors.open_system("one", handle_signals=False) as one,
            actors.open_system("two", handle_signals=False) as two,
        ):
            in_one = await one.spawn(idle)
            in_two = await two.spawn(idle)
            one.registry.register("service", in_one)
            two.registry.register("service", in_two)  # no NameTakenError
            one.registry.join("group", in_one)

            assert one.registry.whereis("service") is in_one
            assert two.registry.whereis("service") is in_two
            assert two.registry.members("group") == ()
            assert one.registry is not two.registry
