"""Behaviours: how an actor is written, and the loop that runs it.

An actor is either a subclass of `Actor` (hooks `started`, `handle`,
`handle_call`, `stopped`) or a plain async function `async def f(ctx, *args)`
that reads its own mailbox through `ctx`. Either way it runs as one trio task
in its supervisor's nursery and ends with a reason: NORMAL, SHUTDOWN, or
Crashed(exception).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .errors import UnexpectedMessageError
from .mailbox import DEFAULT_BATCH_SIZE, Mailbox, Overflow
from .monitor import Monitor, demonitor, link, monitor, unlink
from .ref import NORMAL, SHUTDOWN, ActorRef, Call, Crashed, ExitReason
from .timers import Timer

if TYPE_CHECKING:
    from .system import System

# How long an actor's `stopped` hook may run when nothing else bounds it.
DEFAULT_STOP_HOOK_SECONDS: Final = 5.0


class _NoReply:
    def __repr__(self) -> str:
        return "NO_REPLY"


#: Returned by `Actor.handle_call` to say "I will reply later with call.reply()".
NO_REPLY: Final = _NoReply()


@attrs.define(eq=False, repr=False)
class Context:
    """What a running actor holds of itself: its ref, mailbox and system."""

    ref: ActorRef
    system: System
    _mailbox: Mailbox
    _task_status: Any = None
    _stop_requested: bool = False

    def __repr__(self) -> str:
        return f"<Context of {self.ref.name}>"

    @property
    def name(self) -> str:
        return self.ref.name

    # --- readiness and reading -----------------------------------------------

    def ready(self) -> None:
        """Tell whoever started this actor that it is ready (idempotent).

        Function actors are ready at their first read of the mailbox, or when
        they call this; class actors when `started` returns.
        """
        task_status = self._task_status
        if task_status is not None:
            self._task_status = None
            task_status.started(self.ref)

    async def receive(self) -> Any:
        """Take the next message, waiting for one.

        Raises trio.EndOfChannel once the actor has been asked to stop and its
        mailbox is drained; the runtime counts that as a SHUTDOWN, not a crash.
        """
        self.ready()
        return await self._mailbox.receive()

    async def receive_batch(self, max_messages: int = DEFAULT_BATCH_SIZE) -> list[Any]:
        """Take up to `max_messages` queued messages, waiting for the first."""
        self.ready()
        return await self._mailbox.receive_batch(max_messages)

    async def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate over messages until the actor is asked to stop, or calls `stop()`.

        Messages are taken in batches (one wake-up per burst).
        """
        self.ready()
        mailbox = self._mailbox
        while True:
            try:
                batch = await mailbox.receive_batch()
            except trio.EndOfChannel:
                return
            for message in batch:
                yield message
                if self._stop_requested:
                    # As in Actor.run: the rest of the batch is never handled.
                    return
            # Not kept while waiting for the next batch (see Actor.run).
            del batch, message

    def stop(self) -> None:
        """End this actor with NORMAL after the message being handled."""
        self._stop_requested = True

    # --- timers ------------------------------------------------------------

    def send_after(self, delay: float, message: Any) -> Timer:
        """Deliver `message` to this actor once, `delay` seconds from now.

        The timer is this actor's: it ends when the actor ends, and never
        fires after. `cancel()` on the returned Timer stops it. The message
        goes in past the mailbox's capacity; see `actors.Timer`.
        """
        return self.system.timers.send_after(self.ref, delay, message)

    def every(self, interval: float, message: Any, *, first: float | None = None) -> Timer:
        """Deliver `message` to this actor every `interval` seconds, at a fixed rate.

        The first tick comes `first` seconds from now (`interval` by default:
        a `first` per timer spreads timers of one rate over the interval);
        each deadline is the previous one plus `interval`. At most one tick waits in the mailbox:
        a tick due while the previous one is still queued is not delivered
        but counted in the Timer's `missed`. The timer ends with the actor.
        """
        return self.system.timers.every(self.ref, interval, message, first=first)

    # --- monitors, links, names ------------------------------------------

    def monitor(self, target: ActorRef) -> Monitor:
        """Receive `Down(target, reason)` when `target` ends (at once if it has)."""
        return monitor(self.ref, target)

    def demonitor(self, handle: Monitor, *, flush: bool = False) -> None:
        """Stop watching; with `flush`, drop a Down already queued for `handle`."""
        demonitor(handle, flush=flush)

    def link(self, other: ActorRef) -> None:
        """Share fates with `other`; see `actors.link`."""
        link(self.ref, other)

    def unlink(self, other: ActorRef) -> None:
        unlink(self.ref, other)

    @property
    def trap_exits(self) -> bool:
        return self.ref.trap_exits

    @trap_exits.setter
    def trap_exits(self, value: bool) -> None:
        """When true, a linked actor's end arrives as an `Exit` message instead of ending us."""
        self.ref.trap_exits = value

    def register(self, name: Hashable) -> None:
        """Register this actor under a unique `name` in its system's registry."""
        self.system.registry.register(name, self.ref)

    def join(self, group: Hashable) -> None:
        """Join process group `group`; left automatically when this actor ends."""
        self.system.registry.join(group, self.ref)

    def leave(self, group: Hashable) -> None:
        self.system.registry.leave(group, self.ref)


class Actor:
    """Base class for actors written as a class.

    The runtime calls `started()` once (the actor counts as ready when it
    returns), then `handle(message)` for each message and
    `handle_call(request, call)` for each call, one at a time in mailbox
    order, and finally `stopped(reason)`. `self.ctx` is set before `started`.
    Class attributes give the mailbox's defaults; a ChildSpec can override them.

    A subclass may declare `__slots__` (an actor that exists once per client
    saves its instance dict); one that does not works as any class does.
    """

    __slots__ = ("__dict__", "__weakref__", "ctx")

    #: Mailbox capacity and policy unless the spec says otherwise.
    mailbox_capacity: int | None = None
    overflow: Overflow | None = None
    conflate_key: Callable[[Any], Hashable] | None = None
    #: How many queued messages one wake-up handles at most.
    batch_size: int = DEFAULT_BATCH_SIZE

    ctx: Context

    @property
    def ref(self) -> ActorRef:
        return self.ctx.ref

    async def started(self) -> None:
        """Prepare state; runs before any message. Raising here fails the start."""

    async def handle(self, message: Any) -> None:
        """Handle one message sent with send / send_nowait / cast."""
        raise UnexpectedMessageError(self.ctx.name, message)

    async def handle_call(self, request: Any, call: Call) -> Any:
        """Handle one call and return the reply.

        Return NO_REPLY to answer later with `call.reply(value)`. Runs inside a
        cancel scope with the caller's deadline: if the caller gives up, this
        work is cancelled and nothing is sent back.
        """
        raise UnexpectedMessageError(self.ctx.name, request)

    async def stopped(self, reason: ExitReason) -> None:
        """Tidy up; runs once whatever the reason, shielded, for a bounded time."""

    async def run(self) -> None:
        """The actor's loop: handle messages in batches until asked to stop.

        Override only for full control (a supervisor does); call
        `self.ctx.ready()` when ready.
        """
        ctx = self.ctx
        mailbox = ctx._mailbox
        await self.started()
        ctx.ready()
        batch_size = self.batch_size
        while True:
            try:
                batch = await mailbox.receive_batch(batch_size)
            except trio.EndOfChannel:
                return
            for message in batch:
                if type(message) is Call:
                    await self._dispatch_call(message)
                else:
                    await self.handle(message)
                if ctx._stop_requested:
                    # The rest of the batch is never handled: callers among
                    # it learn of the exit through their watch on this actor.
                    return
            # Not kept while waiting for the next batch: an idle actor would
            # keep its last messages alive, and whatever they hold (a
            # supervisor, the sessions whose exits it last handled).
            del batch, message

    async def _dispatch_call(self, call: Call) -> None:
        if call.abandoned or call.deadline <= trio.current_time():
            return  # the caller has given up; its CallTimeoutError is already raised
        with trio.CancelScope(deadline=call.deadline) as scope:
            call._scope = scope
            result = await self.handle_call(call.request, call)
            if result is not NO_REPLY:
                call.reply(result)
        call._scope = None


def _is_function_behaviour(start: Callable[..., Any]) -> bool:
    """Tell an async function (or an object with an async __call__) from a factory."""
    if isinstance(start, type):
        return False
    return inspect.iscoroutinefunction(start) or inspect.iscoroutinefunction(type(start).__call__)


async def run_actor(
    ref: ActorRef,
    system: System,
    start: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    stop_hook_seconds: float = DEFAULT_STOP_HOOK_SECONDS,
    task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED,
) -> ExitReason:
    """Run one actor to its end and return why it ended.

    `start` is an Actor subclass or factory (called with `args`), or an async
    function called as `start(ctx, *args)`. Reports ready through
    `task_status` (with the ref). An exception before the actor is ready is
    raised to the starter; after that, an exception is the exit reason and is
    not raised. Cancellation from outside is raised after the bookkeeping.
    """
    ctx = Context(ref, system, ref._mailbox, task_status)
    # The task status holds trio's starting nursery alive; once ctx has it,
    # this frame must not, or every running actor keeps ~1 KiB of it.
    del task_status
    reason: ExitReason | None = None
    actor: Actor | None = None
    try:
        with trio.CancelScope() as scope:
            ref._scope = scope
            try:
                if _is_function_behaviour(start):
                    await start(ctx, *args)
                else:
                    actor = start(*args)
                    if not isinstance(actor, Actor):
                        raise TypeError(
                            f"{start!r} returned {actor!r}, not an Actor; a child's start "
                            "must be an Actor subclass, a factory of Actors, or an async "
                            "function taking (ctx, *args)"
                        )
                    actor.ctx = ctx
                    await actor.run()
            except trio.EndOfChannel:
                if not ref._stopping:
                    raise
        if scope.cancelled_caught or ref._kill_reason is not None:
            # Killed, even if the kill's closing of the mailbox ended the body
            # (an idle actor leaves its loop) before the cancellation reached it.
            reason = ref._kill_reason or SHUTDOWN
        elif ref._stopping:
            reason = SHUTDOWN
        else:
            reason = NORMAL
    except Exception as error:
        reason = ref._kill_reason or Crashed(_sole_error(error))
        if ctx._task_status is not None:
            # Not ready yet: the starter gets the exception; the supervisor
            # must not also take it for the death of a running child.
            ref._on_exit = None
            ref._exit(reason)
            raise
    finally:
        if reason is None:
            # Cancelled from outside (the system is going down) or a
            # KeyboardInterrupt: the actor did not choose this.
            reason = ref._kill_reason or SHUTDOWN
        try:
            if actor is not None and ctx._task_status is None:
                reason = await _run_stop_hook(actor, ref, reason, stop_hook_seconds)
        finally:
            # Whatever the hook did, the actor has ended: tell everyone.
            ref._scope = None
            ref._exit(reason)
    ctx.ready()
    return reason


async def _run_stop_hook(
    actor: Actor, ref: ActorRef, reason: ExitReason, seconds: float
) -> ExitReason:
    """Run `actor.stopped(reason)` shielded and bounded; return the final reason.

    A hook that raises makes the end a crash (unless it was one already):
    the error is the actor's, never its supervisor's.
    """
    try:
        with trio.move_on_after(seconds, shield=True) as hook_scope:
            # A kill (its shutdown time has run out) cancels the hook too:
            # draining the mailbox and the hook share the one bound.
            ref._scope = hook_scope
            await actor.stopped(reason)
    except Exception as error:
        if not isinstance(reason, Crashed):
            return Crashed(_sole_error(error))
    return reason


def new_mailbox(
    label: str,
    start: Callable[..., Any],
    *,
    capacity: int | None,
    overflow: Overflow | None,
    conflate_key: Callable[[Any], Hashable] | None,
    default_capacity: int,
) -> Mailbox:
    """Build a mailbox from a spec's settings, falling back to the Actor class's."""
    if isinstance(start, functools.partial):
        start = start.func
    if isinstance(start, type) and issubclass(start, Actor):
        capacity = capacity if capacity is not None else start.mailbox_capacity
        overflow = overflow if overflow is not None else start.overflow
        conflate_key = conflate_key if conflate_key is not None else start.conflate_key
    return Mailbox(
        capacity=capacity if capacity is not None else default_capacity,
        overflow=overflow if overflow is not None else Overflow.WAIT,
        key=conflate_key,
        owner=label,
    )


def _sole_error(error: Exception) -> Exception:
    """The one exception inside nested groups of one, else `error` itself.

    An actor that runs a nursery of its own (a reader beside its loop) gets
    its crash wrapped by trio in a group of one; the exit reason names the
    error itself.
    """
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
