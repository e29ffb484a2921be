"""The system: the root supervisor, the registry, timers, and a clean end on exit or Ctrl+C."""

from __future__ import annotations

import functools
import itertools
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from .actor import run_actor
from .mailbox import Mailbox, Overflow
from .ref import ActorRef, Crashed
from .registry import Registry
from .supervisor import (
    DEFAULT_SHUTDOWN_SECONDS,
    ChildSpec,
    Restart,
    RestartBudget,
    Strategy,
    Supervisor,
)
from .timers import TimerService

# Crash reports a system keeps (`System.crash_reports`), the newest last.
CRASH_REPORTS_KEPT: Final = 20


@attrs.frozen
class ActorInfo:
    """One actor in a snapshot of the tree."""

    id: int
    name: str
    child_id: Hashable
    kind: str  # "supervisor" or "worker"
    alive: bool
    mailbox_depth: int
    mailbox_capacity: int
    dropped: int
    restarts: int
    supervisor: str | None
    children: tuple[ActorInfo, ...] = ()
    #: `running`, `stopping`, or, for a child whose restart is due, `crashed` or `exited`.
    state: str = "running"
    #: Children left out of `children` by the snapshot's `max_children`.
    more_children: int = 0

    def walk(self) -> Iterator[ActorInfo]:
        """This actor and everything under it, depth first in start order."""
        yield self
        for child in self.children:
            yield from child.walk()


@attrs.frozen
class CrashReport:
    """One crash, as its supervisor saw it: who, under whom, when, and the traceback."""

    #: The actor's name (`flaky#7`).
    actor: str
    #: Its supervisor's name.
    supervisor: str
    #: The child's restart type (`permanent`, `transient`, `temporary`).
    restart: str
    #: When, by trio's clock.
    time: float
    #: When, in seconds since the epoch (for people).
    wall_time: float
    #: `repr` of the exception.
    error: str
    #: The formatted traceback, as the log shows it.
    traceback: str


@attrs.define(eq=False)
class System:
    """One actor system: its root supervisor and its registry.

    Nothing is global: two systems in one process share nothing. Get one
    from `open_system`.
    """

    name: str
    registry: Registry = attrs.Factory(Registry)
    #: Every timer of the system's actors, served by one task.
    timers: TimerService = attrs.Factory(TimerService)
    #: The signal that ended the system, if one did (with handle_signals).
    stopped_by_signal: int | None = None
    _ids: Iterator[int] = attrs.Factory(lambda: itertools.count(1))
    _supervisors: dict[ActorRef, Supervisor] = attrs.Factory(dict)
    _root_ref: ActorRef | None = None
    _crashes: deque[CrashReport] = attrs.Factory(lambda: deque(maxlen=CRASH_REPORTS_KEPT))

    def _next_id(self) -> int:
        return next(self._ids)

    @property
    def crash_reports(self) -> tuple[CrashReport, ...]:
        """The last crashes in the tree (at most CRASH_REPORTS_KEPT), oldest first."""
        return tuple(self._crashes)

    def _report_crash(
        self, ref: ActorRef, supervisor: str, restart: Restart, error: BaseException
    ) -> None:
        # The traceback is formatted now, so that the report holds no frames
        # (and their locals) alive.
        self._crashes.append(
            CrashReport(
                actor=ref.name,
                supervisor=supervisor,
                restart=restart.value,
                time=trio.current_time(),
                wall_time=time.time(),
                error=repr(error),
                traceback="".join(traceback.format_exception(error)),
            )
        )

    @property
    def root(self) -> Supervisor:
        """The root supervisor (one_for_one): everything the system runs is under it."""
        assert self._root_ref is not None, "the system is not running"
        return self._supervisors[self._root_ref]

    async def spawn(
        self,
        start: Callable[..., Any],
        *args: Any,
        id: Hashable = None,
        restart: Restart = Restart.TEMPORARY,
        shutdown: float = DEFAULT_SHUTDOWN_SECONDS,
        mailbox_capacity: int | None = None,
        overflow: Overflow | None = None,
        conflate_key: Callable[[Any], Hashable] | None = None,
        label: str | None = None,
    ) -> ActorRef:
        """Start an actor under the root supervisor and return its ref once ready.

        Temporary by default: an actor spawned this way is not restarted
        unless `restart` says so.
        """
        if label is None:
            label = getattr(start, "__name__", None) or type(start).__name__
        spec = ChildSpec(
            id=id,
            start=start,
            args=args,
            restart=restart,
            shutdown=shutdown,
            mailbox_capacity=mailbox_capacity,
            overflow=overflow,
            conflate_key=conflate_key,
            label=label,
        )
        return await self.root.start_child(spec)

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        """Start `spec` under the root supervisor."""
        return await self.root.start_child(spec)

    async def start_supervisor(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        id: Hashable = None,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget | None = None,
        restart: Restart = Restart.PERMANENT,
    ) -> Supervisor:
        """Start a supervisor with `children` under the root and return it once ready.

        It is named after its `id` (`workers#2`), or `supervisor` without one.
        """
        spec = Supervisor.spec(id, children, strategy=strategy, budget=budget, restart=restart)
        label = "supervisor" if id is None else str(id)
        ref = await self.root.start_child(attrs.evolve(spec, label=label))
        return self._supervisors[ref]

    def supervisor_of(self, ref: ActorRef) -> Supervisor | None:
        """The Supervisor object behind `ref`, if `ref` is a running supervisor."""
        return self._supervisors.get(ref)

    def shutdown(self) -> None:
        """Ask the whole tree to stop, in reverse start order; returns at once."""
        if self._root_ref is not None:
            self._root_ref._request_stop()

    def snapshot(self, *, max_children: int | None = None) -> ActorInfo:
        """A picture of the tree now: each actor, its mailbox, drops, restarts and state.

        A child whose restart is due appears with its ended actor (state
        `crashed` or `exited`). With `max_children`, each supervisor lists
        at most that many children, the first started, and counts the rest
        in `more_children` (a supervisor of 10,000 connections stays cheap
        to picture).
        """
        assert self._root_ref is not None, "the system is not running"
        return self._describe(self._root_ref, self.name, 0, None, max_children)

    def _describe(
        self,
        ref: ActorRef,
        child_id: Hashable,
        restarts: int,
        parent: str | None,
        max_children: int | None = None,
    ) -> ActorInfo:
        supervisor = self._supervisors.get(ref)
        children: tuple[ActorInfo, ...] = ()
        more_children = 0
        if supervisor is not None:
            listed = supervisor.which_children(max_children)
            more_children = supervisor.count_children() - len(listed)
            children = tuple(
                self._describe(child_ref, info.id, info.restarts, ref.name, max_children)
                for info in listed
                if (child_ref := info.ref or info.ended) is not None
            )
        return ActorInfo(
            id=ref.id,
            name=ref.name,
            child_id=child_id,
            kind="supervisor" if supervisor is not None else "worker",
            alive=ref.alive,
            mailbox_depth=ref.mailbox_depth,
            mailbox_capacity=ref.mailbox_capacity,
            dropped=ref.dropped,
            restarts=restarts,
            supervisor=parent,
            children=children,
            state=ref.state,
            more_children=more_children,
        )


@asynccontextmanager
async def open_system(
    name: str = "system",
    *,
    budget: RestartBudget | None = None,
    handle_signals: bool = True,
) -> AsyncIterator[System]:
    """Run an actor system for the body of an `async with`.

    On leaving the block, every actor is stopped in reverse start order. With
    `handle_signals` (the default; it applies only in the main thread), SIGINT
    and SIGTERM do the same: the body is cancelled, the tree stopped in
    order, and `system.stopped_by_signal` tells which signal it was.
    If the root supervisor itself fails (a restart budget exceeded all the way
    up), the body is cancelled and that error is raised from the block.
    """
    system = System(name)
    root_ref = ActorRef(system._next_id(), name, Mailbox(owner=name))
    system._root_ref = root_ref
    failures: list[BaseException] = []
    body = trio.CancelScope()

    def root_exited(_ref: ActorRef, reason: object) -> None:
        if isinstance(reason, Crashed):
            failures.append(reason.error)
        body.cancel()

    # What the program starts at the top (spawn, start_supervisor) it starts in
    # dependency order, so the root stops even its dynamic children one at a
    # time, in reverse: batches of one. Connection-sized crowds of dynamic
    # children belong under a supervisor of their own, which stops them together.
    root = functools.partial(Supervisor, budget=budget, shutdown_batch=1)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(system.timers.serve)
            await nursery.start(run_actor, root_ref, system, root, ())
            root_ref._watch(system, root_exited)
            if handle_signals and threading.current_thread() is threading.main_thread():
                await nursery.start(_serve_signals, system, body)
            try:
                with body:
                    yield system
            finally:
                root_ref._request_stop()
                with trio.CancelScope(shield=True):
                    await root_ref.wait_exit()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The system's own tasks never raise, so a group holds what the body
        # raised: give it back as it was raised, not wrapped by our nursery.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failures:
        raise failures[0]


async def _serve_signals(
    system: System,
    body: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            system.stopped_by_signal = signum
            body.cancel()
            return
