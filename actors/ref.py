"""Actor references, exit reasons and calls.

An `ActorRef` is the one handle the rest of a program holds to an actor: it
sends, casts and calls, and it learns when the actor is gone. It is also where
the runtime keeps what must be told when the actor ends (monitors, links,
the registry, pending calls), so that an idle actor costs one small object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import attrs
import outcome
import trio

from .errors import ActorExitedError, CallTimeoutError, MailboxFullError
from .mailbox import Envelope, Mailbox
from .tables import compacted

# How long `call` waits for a reply unless told otherwise, in seconds.
DEFAULT_CALL_TIMEOUT: Final = 5.0


@attrs.frozen
class Normal:
    """The actor finished its work and returned."""

    def __str__(self) -> str:
        return "normal"


@attrs.frozen
class Shutdown:
    """The actor was asked to stop (by its supervisor, or the system ending)."""

    def __str__(self) -> str:
        return "shutdown"


@attrs.frozen
class Crashed:
    """The actor raised `error`."""

    error: BaseException = attrs.field(eq=False)

    def __str__(self) -> str:
        return f"crashed: {self.error!r}"


ExitReason: TypeAlias = Normal | Shutdown | Crashed
NORMAL: Final = Normal()
SHUTDOWN: Final = Shutdown()

ExitCallback: TypeAlias = Callable[["ActorRef", ExitReason], None]


@attrs.define(eq=False, repr=False)
class ActorRef:
    """A handle to one actor: send to it, call it, learn that it has ended.

    Refs compare by identity and are hashable. Holding a ref keeps nothing
    alive: once the actor has ended, every send and call raises
    ActorExitedError at once.
    """

    id: int
    label: str
    _mailbox: Mailbox
    _exit_reason: ExitReason | None = None
    # key -> callback run once, synchronously, when the actor ends. Created on
    # first use: most actors are never watched by anyone but their supervisor.
    _watchers: dict[object, ExitCallback] | None = None
    # The supervisor's callback runs after every other watcher, so that names
    # are free and monitors told before a restart can happen.
    _on_exit: ExitCallback | None = None
    _scope: trio.CancelScope | None = None
    _stopping: bool = False
    _kill_reason: ExitReason | None = None
    _links: set[ActorRef] | None = None
    trap_exits: bool = False

    def __repr__(self) -> str:
        state = "alive" if self._exit_reason is None else f"exited: {self._exit_reason}"
        return f"<ActorRef {self.name} {state}>"

    @property
    def name(self) -> str:
        return f"{self.label}#{self.id}"

    @property
    def alive(self) -> bool:
        return self._exit_reason is None

    @property
    def state(self) -> str:
        """`running`; `stopping` once asked to stop or killed; then `crashed` or `exited`."""
        if self._exit_reason is None:
            return "stopping" if self._stopping or self._kill_reason is not None else "running"
        return "crashed" if isinstance(self._exit_reason, Crashed) else "exited"

    @property
    def exit_reason(self) -> ExitReason | None:
        """Why the actor ended, or None while it runs."""
        return self._exit_reason

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    @property
    def mailbox_capacity(self) -> int:
        return self._mailbox.capacity

    @property
    def dropped(self) -> int:
        """Messages the mailbox's overflow policy has dropped so far."""
        return self._mailbox.dropped

    # --- sending -----------------------------------------------------------

    async def send(self, message: Any) -> bool:
        """Deliver `message`, waiting for room if the actor's policy is WAIT.

        Returns False if the actor's overflow policy dropped it. Raises
        ActorExitedError if the actor has ended or is stopping, and
        MailboxFullError if its policy is FAIL and the mailbox is full.
        """
        return await self._mailbox.send(message)

    def send_nowait(self, message: Any) -> bool:
        """Deliver `message` without waiting; see `send`.

        A full mailbox whose policy is WAIT raises MailboxFullError here.
        """
        return self._mailbox.send_nowait(message)

    def notify(self, message: Any) -> bool:
        """Deliver `message` past the mailbox's capacity, never dropped or refused.

        For the few messages an actor must see whatever its load, as it sees
        a `Down` (a client leaving a topic, say): use it sparingly, since it
        is not bounded. Returns False if the actor has ended or is stopping.
        """
        if self._exit_reason is not None or self._mailbox.closed:
            return False
        self._mailbox.deliver_system(message)
        return True

    def cast(self, message: Any) -> bool:
        """Deliver `message` if it can be done now; never wait, never raise.

        For notifications the sender does not care to follow up: returns
        whether the message was queued (False if the actor has ended or its
        mailbox refused it).
        """
        try:
            return self._mailbox.send_nowait(message)
        except Exception:
            # Cast is fire-and-forget by definition: the caller asked not to
            # hear about a full or closed mailbox, and the return value says it.
            return False

    async def call(self, request: Any, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        """Send `request` and wait for the actor's reply.

        Raises CallTimeoutError if no reply arrives within `timeout` seconds,
        or by the deadline of the caller's own cancel scopes if that comes
        first (the callee sees the earlier deadline as `call.deadline`; the
        wait for mailbox room counts), ActorExitedError if the actor
        has ended or ends before replying, and MailboxFullError if the
        actor's overflow policy refuses or drops the call. A reply that comes late is dropped,
        never delivered to anyone; the callee can see the deadline, and the
        runtime cancels work on a call whose caller gave up.
        """
        if self._exit_reason is not None:
            raise ActorExitedError(self.name, self._exit_reason)
        # The caller's own deadline travels with the call: a call made while
        # answering a call with 1 s left gets at most that 1 s, so the callee
        # sees it and the whole chain is cancelled at once when it passes.
        deadline = min(trio.current_time() + timeout, trio.current_effective_deadline())
        call = Call(request, deadline)
        self._watch(call, call._callee_exited)
        try:
            with trio.move_on_at(deadline):
                if not await self._mailbox.send(call):
                    # Dropped on arrival (DROP_NEWEST): say so now, not at the timeout.
                    raise MailboxFullError(self.name, self._mailbox.capacity)
                return await call._wait()
            raise CallTimeoutError(self.name, request, timeout)
        finally:
            call._abandon()
            self._unwatch(call)

    async def wait_exit(self) -> ExitReason:
        """Wait until the actor has ended and return why (at once if it has)."""
        if self._exit_reason is None:
            ended = trio.Event()
            key = object()
            self._watch(key, lambda _ref, _reason: ended.set())
            try:
                await ended.wait()
            finally:
                self._unwatch(key)
        else:
            await trio.lowlevel.checkpoint()
        assert self._exit_reason is not None
        return self._exit_reason

    def kill(self, error: BaseException | None = None) -> None:
        """End the actor now, whatever it is doing (Erlang's exit/2).

        Its work is cancelled and it ends with Crashed(error), or SHUTDOWN
        when no error is given; its stop hook still runs. Its supervisor then
        applies the restart policy as for any end. Killing an ended actor does
        nothing. Returns at once; `wait_exit` waits for the end.
        """
        self._kill(Crashed(error) if error is not None else SHUTDOWN)

    # --- the runtime's side ------------------------------------------------

    def _watch(self, key: object, callback: ExitCallback) -> None:
        """Run `callback(ref, reason)` when the actor ends; at once if it has."""
        if self._exit_reason is not None:
            callback(self, self._exit_reason)
            return
        if self._watchers is None:
            self._watchers = {}
        self._watchers[key] = callback

    def _unwatch(self, key: object) -> None:
        if self._watchers is not None:
            self._watchers.pop(key, None)
            self._watchers = compacted(self._watchers)

    def _request_stop(self) -> None:
        """Ask the actor to finish: it drains its mailbox, then ends with SHUTDOWN."""
        self._stopping = True
        self._mailbox.close(SHUTDOWN)

    def _kill(self, reason: ExitReason) -> None:
        """End the actor now: cancel whatever it is doing; it ends with `reason`."""
        if self._exit_reason is not None:
            return
        if self._kill_reason is None:
            self._kill_reason = reason
        self._mailbox.close(reason)
        if self._scope is not None:
            self._scope.cancel()

    def _exit(self, reason: ExitReason) -> None:
        """Record that the actor has ended and tell everyone who asked."""
        if self._exit_reason is not None:
            return
        self._exit_reason = reason
        self._mailbox.close(reason)
        watchers = self._watchers
        self._watchers = None
        if watchers:
            for callback in watchers.values():
                callback(self, reason)
        if self._on_exit is not None:
            on_exit = self._on_exit
            self._on_exit = None
            on_exit(self, reason)


# What `Call.reply` gives a caller that is no longer waiting.
_NOBODY_WAITING: Final = object()


@attrs.define(eq=False, repr=False, slots=True)
class Call(Envelope):
    """A request that expects a reply; what `ActorRef.call` puts in a mailbox.

    The callee answers with `reply(value)` or `fail(error)`, at most once.
    `deadline` is the caller's, on trio's clock; `abandoned` turns true when
    the caller stops waiting, and then a reply goes nowhere.
    """

    request: Any
    deadline: float = math.inf
    _waiter: trio.lowlevel.Task | None = None
    _result: Any = _NOBODY_WAITING
    _done: bool = False
    _abandoned: bool = False
    # Set by the runtime while a class actor handles this call, so that the
    # work is cancelled when the caller gives up.
    _scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Call {self.request!r}>"

    @property
    def abandoned(self) -> bool:
        """True once the caller has given up (timed out, cancelled, or callee ended)."""
        return self._abandoned or self._done

    def reply(self, value: Any) -> bool:
        """Send `value` to the caller; return False if it is no longer waiting."""
        return self._settle(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        """Raise `error` in the caller; return False if it is no longer waiting."""
        return self._settle(outcome.Error(error))

    def _settle(self, result: outcome.Outcome[Any]) -> bool:
        if self._done or self._abandoned:
            return False
        self._done = True
        self._result = result
        if self._waiter is not None:
            waiter = self._waiter
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        return True

    def _dropped(self, error: Exception) -> None:
        self._settle(outcome.Error(error))

    def _callee_exited(self, callee: ActorRef, reason: ExitReason) -> None:
        self._settle(outcome.Error(ActorExitedError(callee.name, reason)))

    def _abandon(self) -> None:
        self._abandoned = True
        if self._scope is not None and not self._done:
            self._scope.cancel()

    async def _wait(self) -> Any:
        if not self._done:
            self._waiter = trio.lowlevel.current_task()

            def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        result: outcome.Outcome[Any] = self._result
        return result.unwrap()
