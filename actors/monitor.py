"""Monitors and links: learning that another actor has ended, or sharing its fate."""

from __future__ import annotations

import attrs

from .errors import ActorExitedError, LinkedActorExitedError
from .ref import ActorRef, Crashed, ExitReason, Normal


@attrs.define(eq=False, repr=False)
class Monitor:
    """One watcher's watch on one target; the handle `demonitor` takes.

    It is also what the target calls when it ends (no closure per watch:
    a hub keeps two monitors per client and topic).
    """

    watcher: ActorRef
    target: ActorRef

    def __repr__(self) -> str:
        return f"<Monitor {self.watcher.name} -> {self.target.name}>"

    def __call__(self, ref: ActorRef, reason: ExitReason) -> None:
        self.watcher._mailbox.deliver_system(Down(ref, reason, self))


@attrs.frozen
class Down:
    """A monitored actor has ended. Delivered to the watcher's mailbox once."""

    ref: ActorRef
    reason: ExitReason
    monitor: Monitor = attrs.field(eq=False, repr=False)


@attrs.frozen
class Exit:
    """A linked actor has ended; what an actor that traps exits receives."""

    ref: ActorRef
    reason: ExitReason


def monitor(watcher: ActorRef, target: ActorRef) -> Monitor:
    """Deliver `Down(target, reason)` to `watcher` when `target` ends.

    If the target has already ended, the Down is delivered at once with the
    reason it ended with. Down goes in past the mailbox's capacity: it is
    never dropped by an overflow policy. Watching twice gives two Downs.
    """
    handle = Monitor(watcher, target)
    target._watch(handle, handle)
    return handle


def demonitor(handle: Monitor, *, flush: bool = False) -> None:
    """Stop watching: no Down for `handle` is delivered after this call.

    With `flush`, a Down that was already delivered but not yet received is
    removed from the watcher's mailbox too.
    """
    handle.target._unwatch(handle)
    if flush:
        handle.watcher._mailbox.remove_if(
            lambda message: isinstance(message, Down) and message.monitor is handle
        )


def link(a: ActorRef, b: ActorRef) -> None:
    """Tie the fates of `a` and `b`.

    When either ends for any reason but normal, the other is ended too (with
    a Crashed(LinkedActorExitedError) reason), unless it traps exits: then it
    receives an `Exit(ref, reason)` message instead, for normal ends as well.
    Linking to an actor that has already ended raises ActorExitedError.
    """
    for ref in (a, b):
        if ref.exit_reason is not None:
            raise ActorExitedError(ref.name, ref.exit_reason)
    if a is b:
        return
    for this, other in ((a, b), (b, a)):
        if this._links is None:
            this._links = set()
        if other not in this._links:
            this._links.add(other)
            this._watch(("link", other), _ExitSignal(other))


def unlink(a: ActorRef, b: ActorRef) -> None:
    """Untie `a` and `b`; neither learns of the other's end any more."""
    for this, other in ((a, b), (b, a)):
        if this._links is not None:
            this._links.discard(other)
        this._unwatch(("link", other))


@attrs.define(eq=False)
class _ExitSignal:
    """What an ending actor does to one linked peer."""

    peer: ActorRef

    def __call__(self, ended: ActorRef, reason: ExitReason) -> None:
        peer = self.peer
        if peer._links is not None:
            peer._links.discard(ended)
        peer._unwatch(("link", ended))
        if peer.exit_reason is not None:
            return
        if peer.trap_exits:
            peer._mailbox.deliver_system(Exit(ended, reason))
        elif not isinstance(reason, Normal):
            peer._kill(Crashed(LinkedActorExitedError(ended.name, reason)))
