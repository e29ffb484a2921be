"""Supervisors: children declared as data, restarted by policy, stopped in order.

A supervisor is an actor whose task owns a nursery; each child is one task in
that nursery. Children start in order, each ready before the next, and stop
in reverse order, each given its shutdown time and then cancelled.
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import attrs
import trio

from .actor import Actor, new_mailbox, run_actor
from .errors import (
    ActorExitedError,
    DuplicateChildError,
    NoSuchChildError,
    RestartIntensityError,
    StartError,
    UnexpectedMessageError,
)
from .mailbox import DEFAULT_MAILBOX_CAPACITY, Overflow
from .ref import SHUTDOWN, ActorRef, Crashed, ExitReason
from .tables import compacted

logger = logging.getLogger(__name__)

# How long a worker may take to stop once asked before it is cancelled, in seconds.
DEFAULT_SHUTDOWN_SECONDS: Final = 5.0

# Dynamic children have no order among themselves (like OTP's
# simple_one_for_one) and are stopped concurrently, this many at a time, so
# that 10,000 connections close in a few rounds rather than one by one.
DEFAULT_SHUTDOWN_BATCH: Final = 1000


class Restart(enum.Enum):
    """When a child that ended is started again."""

    #: Always, whatever the reason it ended.
    PERMANENT = "permanent"
    #: Only if it crashed; a normal end or a shutdown is final.
    TRANSIENT = "transient"
    #: Never; its end is reported, not repaired (connections).
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children a restart takes with it."""

    #: Restart only the child that ended.
    ONE_FOR_ONE = "one_for_one"
    #: Stop every other child (reverse order) and start them all again in order.
    ONE_FOR_ALL = "one_for_all"
    #: Stop the children started after the one that ended (reverse order) and
    #: start it and them again in order.
    REST_FOR_ONE = "rest_for_one"


@attrs.frozen
class Backoff:
    """Wait before a restart: `initial * multiplier**(n-1)`, capped, +/- jitter.

    n counts this child's restarts within the budget's window, so a child
    that keeps crashing waits longer each time and one that recovers starts
    again from `initial`. A restart that takes siblings along (one_for_all,
    rest_for_one) waits once, as long as the child that ended; they are
    stopped at once and started, in order, when it is over. The wait is a
    timer: meanwhile the supervisor goes on (other children's ends,
    `start_child`, `stop_child`), and a stop does not wait for it.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    #: Fraction of the delay added or taken at random, so that many children
    #: restarting together do not retry in lockstep.
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * rng.uniform(-1.0, 1.0)))


@attrs.frozen
class RestartBudget:
    """At most `max_restarts` restarts in any `window_seconds`, by trio's clock.

    One more and the supervisor stops its children and fails with
    RestartIntensityError, so its own parent decides. Backoff is off unless given.
    """

    max_restarts: int = 3
    window_seconds: float = 5.0
    backoff: Backoff | None = None


@attrs.frozen
class ChildSpec:
    """How to start one child, and what to do when it ends.

    `start` is an Actor subclass (or a factory of Actors) called with `args`,
    or an async function called as `start(ctx, *args)`. `id` names the child
    under its supervisor; None lets a dynamic child get a generated id.
    """

    id: Hashable
    start: Callable[..., Any]
    args: tuple[Any, ...] = ()
    restart: Restart = Restart.PERMANENT
    #: Seconds the child may take to stop when asked (draining its mailbox and
    #: running its stop hook) before it is cancelled. 0 cancels at once.
    shutdown: float = DEFAULT_SHUTDOWN_SECONDS
    mailbox_capacity: int | None = None
    overflow: Overflow | None = None
    conflate_key: Callable[[Any], Hashable] | None = None
    #: A name for logs and errors; defaults to the id.
    label: str | None = None
    #: Register each incarnation under this name in the system's registry, from
    #: before it starts until it ends (Erlang's registered child): whoever
    #: looks it up by name finds the running one, restarts included.
    register: Hashable | None = None


@attrs.define(eq=False)
class _Child:
    id: Hashable
    spec: ChildSpec
    dynamic: bool
    ref: ActorRef | None = None
    restarts: int = 0
    # When this child was restarted within the budget's window; created on
    # its first restart (an idle child should cost little).
    restart_times: deque[float] | None = None
    # Set while the supervisor itself is stopping this child, so that its
    # end is not taken for a failure.
    stopping: bool = False
    # The restart waiting out its backoff that will start this child again;
    # a later restart that takes this child along replaces it.
    restart_due: _RestartDue | None = None


@attrs.frozen
class _ChildExited:
    child: _Child
    ref: ActorRef
    reason: ExitReason


@attrs.frozen(eq=False)
class _RestartDue:
    """A restart's backoff is over: start `children` again, in order.

    A child that has been stopped, or taken along by a later restart, since
    the restart was decided is left alone.
    """

    children: tuple[_Child, ...]


@attrs.frozen
class ChildInfo:
    """What `Supervisor.which_children` reports of one child."""

    id: Hashable
    ref: ActorRef | None
    restart: Restart
    restarts: int
    dynamic: bool
    supervisor: Supervisor | None
    #: The child's ended actor while its restart is due (a backoff, say);
    #: None while it runs. `ref` is None then.
    ended: ActorRef | None = None


class Supervisor(Actor):
    """An actor that starts, watches and restarts children by policy.

    Build one with its children, strategy and budget, and start it like any
    actor: under another supervisor with `Supervisor.spec(...)`, or as the
    system's tree with `System.start_supervisor`. `start_child` and
    `stop_child` change the children at run time.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget | None = None,
        shutdown_batch: int = DEFAULT_SHUTDOWN_BATCH,
        rng: random.Random | None = None,
    ) -> None:
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"child ids must be unique, got {ids!r}")
        self._initial = tuple(children)
        self.strategy = strategy
        self.budget = budget or RestartBudget()
        self._shutdown_batch = shutdown_batch
        self._rng = rng or random.Random()
        self._children: dict[Hashable, _Child] = {}
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._lock = trio.StrictFIFOLock()
        self._dynamic_ids = itertools.count(1)
        self._closing = False

    @classmethod
    def spec(
        cls,
        id: Hashable,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        budget: RestartBudget | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown: float = math.inf,
    ) -> ChildSpec:
        """A ChildSpec that starts a nested supervisor with these children.

        A supervisor's shutdown time defaults to infinity: it takes as long as
        its own children's shutdown times add up to.
        """
        return ChildSpec(
            id=id,
            start=functools.partial(cls, children, strategy=strategy, budget=budget),
            restart=restart,
            shutdown=shutdown,
        )

    # --- the public side -----------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        """Start a child at run time and return its ref once it is ready.

        Raises DuplicateChildError if the id is taken, StartError if the
        child fails before it is ready (it is then not kept), and
        ActorExitedError once the supervisor is stopping.
        """
        async with self._lock:
            if self._closing:
                raise ActorExitedError(self.ctx.name, SHUTDOWN)
            if spec.id is None:
                spec = attrs.evolve(spec, id=f"{spec.label or 'child'}-{next(self._dynamic_ids)}")
            if spec.id in self._children:
                raise DuplicateChildError(self.ctx.name, spec.id)
            # The id is taken now; the start itself runs outside the lock, so
            # that one child slow to get ready (a `started` that waits on a
            # database) holds up no other start, stop or restart.
            child = _Child(spec.id, spec, dynamic=True)
            self._children[spec.id] = child
        return await self._start_new(child)

    async def stop_child(self, child_id: Hashable) -> None:
        """Stop a child (given its shutdown time, then cancelled) and forget it.

        Other starts and stops go on meanwhile. If this is cancelled, the
        child is killed at once and forgotten all the same.
        """
        async with self._lock:
            child = self._children.get(child_id)
            if child is None:
                raise NoSuchChildError(self.ctx.name, child_id)
        try:
            await self._stop(child)
        finally:
            if child.ref is not None and child.ref.alive:
                child.ref._kill(SHUTDOWN)
            if self._children.get(child_id) is child:
                del self._children[child_id]
                self._children = compacted(self._children)

    def which_children(self, limit: int | None = None) -> list[ChildInfo]:
        """The current children in start order (the first `limit` of them, if given)."""
        children = self._children.values()
        return [
            ChildInfo(
                id=child.id,
                ref=child.ref if child.ref is not None and child.ref.alive else None,
                restart=child.spec.restart,
                restarts=child.restarts,
                dynamic=child.dynamic,
                supervisor=self._supervisor_of(child),
                ended=child.ref if child.ref is not None and not child.ref.alive else None,
            )
            for child in (children if limit is None else itertools.islice(children, limit))
        ]

    def count_children(self) -> int:
        return len(self._children)

    # --- the actor ---------------------------------------------------------

    async def run(self) -> None:
        ctx = self.ctx
        supervisors = ctx.system._supervisors
        supervisors[ctx.ref] = self
        # The supervisor's own failure (RestartIntensityError, say) is raised
        # after the nursery, as itself: raised inside, it would come out wrapped
        # in the nursery's ExceptionGroup. Children never raise into the nursery.
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                async with self._lock:
                    for spec in self._initial:
                        await self._start_new(_Child(spec.id, spec, dynamic=False))
                ctx.ready()
                async for message in ctx:
                    await self._handle(message)
                    # Not kept while the supervisor waits: the last exit would
                    # keep its child's actor (a departed client's session) alive.
                    del message
            except Exception as error:
                failure = error
            finally:
                try:
                    await self._stop_all()
                finally:
                    supervisors.pop(ctx.ref, None)
        if failure is not None:
            raise failure

    async def _handle(self, message: object) -> None:
        match message:
            case _ChildExited(child=child, ref=ref, reason=reason):
                async with self._lock:
                    await self._child_exited(child, ref, reason)
            case _RestartDue() as due:
                async with self._lock:
                    await self._start_again(self._still_due(due))
            case _:
                raise UnexpectedMessageError(self.ctx.name, message)

    # --- starting ------------------------------------------------------------

    async def _start_new(self, child: _Child) -> ActorRef:
        """Start a child not yet in the tree; a child that fails to start is not kept."""
        self._children[child.id] = child
        try:
            return await self._start(child)
        except BaseException:
            if self._children.get(child.id) is child:
                del self._children[child.id]
            raise

    async def _start(self, child: _Child) -> ActorRef:
        assert self._nursery is not None
        spec = child.spec
        system = self.ctx.system
        label = spec.label or str(spec.id)
        actor_id = system._next_id()
        mailbox = new_mailbox(
            f"{label}#{actor_id}",
            spec.start,
            capacity=spec.mailbox_capacity,
            overflow=spec.overflow,
            conflate_key=spec.conflate_key,
            default_capacity=DEFAULT_MAILBOX_CAPACITY,
        )
        ref = ActorRef(actor_id, label, mailbox)
        ref._on_exit = functools.partial(self._on_child_exit, child)
        if spec.register is not None:
            system.registry.register(spec.register, ref)
        child.ref = ref
        child.stopping = False
        child.restart_due = None
        run = functools.partial(run_actor, stop_hook_seconds=spec.shutdown)
        try:
            await self._nursery.start(run, ref, system, spec.start, spec.args)
        except Exception as error:
            raise StartError(spec.id, error) from error
        return ref

    def _on_child_exit(self, child: _Child, ref: ActorRef, reason: ExitReason) -> None:
        # Runs synchronously in the child's task as it ends; the decision is
        # taken in the supervisor's own task, one exit at a time.
        if child.ref is not ref:
            return
        if child.stopping:
            # Being stopped on purpose: nothing to decide, but a crash on the
            # way out (a failing stop hook, say) is still a bug to report.
            if isinstance(reason, Crashed):
                self._log_crash(ref, child, reason)
            return
        self.ctx._mailbox.deliver_system(_ChildExited(child, ref, reason))

    def _log_crash(self, ref: ActorRef, child: _Child, reason: Crashed) -> None:
        """Log a child's crash once, with its traceback, and keep its report."""
        self.ctx.system._report_crash(ref, self.ctx.name, child.spec.restart, reason.error)
        logger.error(
            "%s crashed under %s (%s restart)",
            ref.name,
            self.ctx.name,
            child.spec.restart.value,
            exc_info=reason.error,
        )

    # --- restarting ------------------------------------------------------------

    async def _child_exited(self, child: _Child, ref: ActorRef, reason: ExitReason) -> None:
        if self._children.get(child.id) is not child or child.ref is not ref:
            return  # stale: already stopped or restarted on purpose
        if isinstance(reason, Crashed):
            # A crash is a bug: logged once, here, with its traceback.
            self._log_crash(ref, child, reason)
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (
            restart is Restart.TRANSIENT and not isinstance(reason, Crashed)
        ):
            del self._children[child.id]
            # A thousand clients gone at once leave a table sized for them.
            self._children = compacted(self._children)
            return
        self._count_restart(child)
        children = list(self._children.values())
        match self.strategy:
            case Strategy.ONE_FOR_ONE:
                group = [child]
            case Strategy.ONE_FOR_ALL:
                group = children
            case Strategy.REST_FOR_ONE:
                group = children[children.index(child) :]
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
        for other in group:
            if other is not child and other.spec.restart is Restart.TEMPORARY:
                # Temporary children are never restarted, not even by a sibling's fall.
                del self._children[other.id]
        await self._restart(
            [other for other in group if self._children.get(other.id) is other], child
        )

    def _count_restart(self, child: _Child) -> None:
        """Record one restart; raise RestartIntensityError if over budget."""
        now = trio.current_time()
        budget = self.budget
        if child.restart_times is None:
            child.restart_times = deque()
        for times in (self._restart_times, child.restart_times):
            times.append(now)
            while times and times[0] <= now - budget.window_seconds:
                times.popleft()
        child.restarts += 1
        if len(self._restart_times) > budget.max_restarts:
            raise RestartIntensityError(self.ctx.name, budget.max_restarts, budget.window_seconds)

    async def _restart(self, group: Sequence[_Child], cause: _Child) -> None:
        """Start `group` again in order, after the backoff `cause`'s restarts call for."""
        if not self._back_off(group, cause):
            await self._start_again(group)

    async def _start_again(self, group: Sequence[_Child]) -> None:
        """Start `group` in order, each ready before the next.

        A child that fails to start counts as a restart of its own, and is
        tried again (after its backoff, if any) before the rest. A supervisor
        asked to stop starts nothing more.
        """
        for index, child in enumerate(group):
            while True:
                if self.ctx._mailbox.closed:
                    return
                try:
                    await self._start(child)
                    break
                except StartError:
                    self._count_restart(child)
                    if self._back_off(group[index:], child):
                        return

    def _still_due(self, due: _RestartDue) -> list[_Child]:
        """The children of `due` to start now: not stopped, nor taken by a later restart."""
        return [
            child
            for child in due.children
            if child.restart_due is due and self._children.get(child.id) is child
        ]

    def _back_off(self, group: Sequence[_Child], cause: _Child) -> bool:
        """Have `group` started again when `cause`'s backoff is over; False if none is set.

        The wait is a timer, not a sleep: meanwhile the supervisor holds no
        lock and goes on with its work (other children's ends, start_child,
        stop_child, and its own stop, which does not wait for the timer).
        """
        backoff = self.budget.backoff
        if backoff is None:
            return False
        due = _RestartDue(tuple(group))
        for child in group:
            child.restart_due = due
        self.ctx.send_after(backoff.delay(len(cause.restart_times or ()), self._rng), due)
        return True

    # --- stopping --------------------------------------------------------------

    async def _stop(self, child: _Child) -> None:
        """Ask `child` to stop; cancel it when its shutdown time is up; wait for its end.

        A child that shields itself from cancellation can still delay this:
        trio has no way to end a task that will not end.
        """
        ref = child.ref
        if ref is None or not ref.alive:
            return
        child.stopping = True
        ref._request_stop()
        with trio.move_on_after(child.spec.shutdown):
            await ref.wait_exit()
        if ref.alive:
            ref._kill(SHUTDOWN)
            await ref.wait_exit()

    async def _stop_all(self) -> None:
        """Stop every child: dynamic ones concurrently in batches, then the rest in reverse."""
        # From here on start_child refuses: a child started now would be
        # missed below and keep the nursery, and so the supervisor, open.
        self._closing = True
        children = list(self._children.values())
        dynamic = [child for child in children if child.dynamic]
        static = [child for child in children if not child.dynamic]
        batch = max(1, self._shutdown_batch)
        for end in range(len(dynamic), 0, -batch):
            async with trio.open_nursery() as nursery:
                for child in dynamic[max(0, end - batch) : end]:
                    nursery.start_soon(self._stop, child)
        for child in reversed(static):
            await self._stop(child)
        self._children.clear()

    def _supervisor_of(self, child: _Child) -> Supervisor | None:
        """The Supervisor object a child runs, if it is one (for introspection)."""
        ref = child.ref
        if ref is None or not ref.alive:
            return None
        return self.ctx.system._supervisors.get(ref)
