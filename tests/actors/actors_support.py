"""Small actors and helpers shared by the actor runtime's tests."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import trio

import actors

# The bound on a test that runs its own system, on trio's clock: with the
# autojump clock a hang fails at once instead of waiting for pytest-timeout.
TEST_SECONDS = 600


class BoomError(Exception):
    """What test actors raise when told to crash."""


# What test actors write down, in order; a Recorder's entries are
# ("start", name), ("handle", name, message) and ("stop", name, reason).
Log = list[Any]


class Recorder(actors.Actor):
    """A worker that writes its life into `log`.

    Messages: "crash" raises BoomError(name); "stop" ends it with NORMAL;
    anything else is logged.
    """

    def __init__(self, name: str, log: Log) -> None:
        self.name = name
        self.log = log

    async def started(self) -> None:
        self.log.append(("start", self.name))

    async def handle(self, message: Any) -> None:
        match message:
            case "crash":
                raise BoomError(self.name)
            case "stop":
                self.ctx.stop()
            case _:
                self.log.append(("handle", self.name, message))

    async def handle_call(self, request: Any, call: actors.Call) -> Any:
        return (self.name, request)

    async def stopped(self, reason: actors.ExitReason) -> None:
        self.log.append(("stop", self.name, reason))


def recorder(name: Hashable, log: Log, **spec: Any) -> actors.ChildSpec:
    """A ChildSpec for a Recorder whose id and name are `name`."""
    return actors.ChildSpec(name, Recorder, args=(str(name), log), **spec)


async def idle(ctx: actors.Context) -> None:
    """A function actor that reads and ignores messages until asked to stop."""
    async for _message in ctx:
        pass


async def crash_on_message(ctx: actors.Context) -> None:
    """A function actor that crashes with BoomError on its first message."""
    async for message in ctx:
        raise BoomError(message)


def starts(log: Log) -> list[Any]:
    """The names of the "start" entries of `log`, in order."""
    return [entry[1] for entry in log if entry[0] == "start"]


def stops(log: Log) -> list[Any]:
    """The names of the "stop" entries of `log`, in order."""
    return [entry[1] for entry in log if entry[0] == "stop"]


def child_refs(supervisor: actors.Supervisor) -> dict[Hashable, actors.ActorRef | None]:
    """Child id -> current ref (None if not running), in start order."""
    return {info.id: info.ref for info in supervisor.which_children()}


def child_info(supervisor: actors.Supervisor, child_id: Hashable) -> actors.ChildInfo:
    for info in supervisor.which_children():
        if info.id == child_id:
            return info
    raise KeyError(child_id)


def live_tasks() -> int:
    """How many trio tasks are alive now, the root task and system tasks included."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return count(trio.lowlevel.current_root_task())


def take_queued(mailbox: actors.Mailbox) -> list[Any]:
    """Take everything queued in a mailbox, without waiting."""
    messages = []
    while True:
        try:
            messages.append(mailbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return messages
