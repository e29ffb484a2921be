"""Timers: a message delivered to an actor later, once or at a fixed rate.

One `TimerService` per system keeps the next deadline of every timer in one
heap, and one task in the system's nursery serves it, asleep until the
earliest deadline: a timer costs a heap entry and a small handle, never a
task. A timer belongs to the actor it delivers to and ends with it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Any, TypeAlias

import attrs
import trio

from .errors import ActorExitedError
from .mailbox import Delivery
from .ref import ActorRef, ExitReason

# One heap entry: [deadline, sequence number, timer]. The sequence number
# keeps timers due at the same moment in the order they were set, and stops
# a comparison before it reaches the timer. A cancelled timer leaves its
# entry behind with None in the timer's place (a tombstone, holding nothing
# of the actor): heapq cannot remove from the middle cheaply.
_Entry: TypeAlias = list[Any]


@attrs.define(eq=False, repr=False)
class Timer(Delivery):
    """One timer, as `Context.send_after` and `Context.every` return it.

    While its message waits in the owner's mailbox, the timer itself stands
    in the queue (the actor receives `message`), so it knows when the
    message is taken: a repeating timer never has more than one tick queued.
    Its message goes in past the mailbox's capacity, like a monitor's Down,
    and no overflow policy drops or conflates it.
    """

    #: The actor the timer delivers to, and belongs to.
    owner: ActorRef
    message: Any
    #: Seconds between ticks of a repeating timer; None for a one-shot one.
    interval: float | None
    #: When the next message is due, on trio's clock.
    deadline: float
    #: Messages put in the owner's mailbox so far.
    delivered: int = 0
    #: Ticks that were due but not delivered: the previous tick was still
    #: waiting in the mailbox (the actor is behind), or the system was so
    #: busy that more than one deadline passed before the timer's turn.
    #: A missed tick is never delivered later: the schedule keeps its rate.
    missed: int = 0
    #: When the message delivered last was due (its lateness is the time
    #: the owner takes it minus this).
    due: float = 0.0
    _service: TimerService | None = None
    _entry: _Entry | None = None
    # A repeating timer's deadlines are _start + n * interval, n = 1, 2...;
    # _tick is the n of the next one. Computed, not summed, so they never drift.
    _start: float = 0.0
    _tick: int = 0
    # Whether this timer is in the owner's mailbox now.
    _queued: bool = False

    def __repr__(self) -> str:
        kind = "once" if self.interval is None else f"every {self.interval} s"
        state = "active" if self.active else "done"
        return (
            f"<Timer {kind} -> {self.owner.name} {state} "
            f"delivered={self.delivered} missed={self.missed}>"
        )

    @property
    def active(self) -> bool:
        """True until the timer is cancelled, its actor ends, or a one-shot timer fires."""
        return self._service is not None

    @property
    def payload(self) -> Any:
        return self.message

    def cancel(self) -> None:
        """Stop the timer: it delivers nothing after this call. Idempotent.

        A message it delivered before stays in the mailbox, as a Down does
        after `demonitor`.
        """
        service = self._service
        if service is None:
            return
        self._service = None
        self.owner._unwatch(self)
        service._remove(self)

    def _taken(self) -> None:
        self._queued = False

    def _owner_exited(self, _ref: ActorRef, _reason: ExitReason) -> None:
        self.cancel()

    def _fire(self, now: float) -> None:
        """Deliver the message due at `self.deadline`, and find the next deadline."""
        mailbox = self.owner._mailbox
        if mailbox.closed:
            # The owner is stopping: it takes no more messages, ever.
            self.cancel()
            return
        delivered = not self._queued
        if delivered:
            self._queued = True
            self.delivered += 1
            self.due = self.deadline
            mailbox.deliver_system(self)
        interval = self.interval
        if interval is None:
            self.cancel()  # a one-shot timer is done
            return
        tick = max(self._tick + 1, math.floor((now - self._start) / interval) + 1)
        # Float division can land one either side of the boundary: settle on
        # the first deadline after now.
        while self._start + tick * interval <= now:
            tick += 1
        while tick - 1 > self._tick and self._start + (tick - 1) * interval > now:
            tick -= 1
        # The ticks from this one to `tick` (not included) were all due by now;
        # one went in, unless the previous tick was still waiting.
        self.missed += tick - self._tick - (1 if delivered else 0)
        self._tick = tick
        self.deadline = self._start + tick * interval


def _check_delay(name: str, seconds: float, *, zero_ok: bool) -> None:
    if not (0 <= seconds < math.inf) or (seconds == 0 and not zero_ok):
        bound = "at least 0" if zero_ok else "more than 0"
        raise ValueError(f"a timer's {name} must be finite and {bound}, not {seconds!r}")


@attrs.define(eq=False, repr=False)
class TimerService:
    """Every timer of one system: a heap of deadlines served by one task.

    `open_system` runs `serve` in the system's nursery; a timer set before it
    runs waits for it. `len(service)` is how many timers are active.
    """

    _heap: list[_Entry] = attrs.Factory(list)
    _sequence: Iterator[int] = attrs.Factory(itertools.count)
    _active: int = 0
    # Entries of cancelled timers still in the heap.
    _tombstones: int = 0
    # The serving task's sleep, whose deadline an earlier timer brings forward.
    _sleep: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<TimerService {self._active} active, {len(self._heap)} in the heap>"

    def __len__(self) -> int:
        return self._active

    def send_after(self, ref: ActorRef, delay: float, message: Any) -> Timer:
        """Deliver `message` to `ref` once, `delay` seconds from now.

        The timer belongs to `ref`: it is cancelled when that actor ends.
        Raises ActorExitedError if it has ended already, ValueError for a
        negative or infinite delay.
        """
        _check_delay("delay", delay, zero_ok=True)
        return self._add(Timer(ref, message, None, trio.current_time() + delay))

    def every(
        self, ref: ActorRef, interval: float, message: Any, *, first: float | None = None
    ) -> Timer:
        """Deliver `message` to `ref` every `interval` seconds, first in `first` (or `interval`).

        `first` sets the timer's phase: many timers of one rate, each with its
        own `first` within the interval, come due spread out, not all at once.

        Fixed rate: each deadline is the previous one plus `interval`, however
        late a tick was taken. A tick due while the previous one still waits
        in the mailbox is not delivered but counted in `Timer.missed`. The
        timer belongs to `ref`, as for `send_after`.
        """
        _check_delay("interval", interval, zero_ok=False)
        if first is not None:
            _check_delay("first", first, zero_ok=True)
        now = trio.current_time()
        start = now + (interval if first is None else first) - interval
        return self._add(Timer(ref, message, interval, start + interval, start=start, tick=1))

    def _add(self, timer: Timer) -> Timer:
        owner = timer.owner
        if owner.exit_reason is not None:
            raise ActorExitedError(owner.name, owner.exit_reason)
        timer._service = self
        self._active += 1
        owner._watch(timer, timer._owner_exited)
        self._push(timer)
        return timer

    def _push(self, timer: Timer) -> None:
        entry = [timer.deadline, next(self._sequence), timer]
        timer._entry = entry
        heapq.heappush(self._heap, entry)
        sleep = self._sleep
        if sleep is not None and timer.deadline < sleep.deadline:
            sleep.deadline = timer.deadline

    def _remove(self, timer: Timer) -> None:
        """Forget a cancelled or finished timer."""
        self._active -= 1
        entry = timer._entry
        if entry is None:
            return  # out of the heap already: it is being fired
        timer._entry = None
        entry[2] = None
        self._tombstones += 1
        if self._tombstones * 2 > len(self._heap):
            # More tombstones than timers: rebuild without them. Each rebuild
            # follows at least as many cancellations as it keeps entries, so
            # a cancellation costs O(1) on average, and the heap is never more
            # than twice the size of what it serves.
            self._heap = [entry for entry in self._heap if entry[2] is not None]
            heapq.heapify(self._heap)
            self._tombstones = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver each timer's message when it is due; return only when cancelled."""
        task_status.started()
        try:
            while True:
                heap = self._heap
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                    self._sleep = sleep
                    await trio.sleep_forever()
                self._sleep = None
                self._fire_due(trio.current_time())
        finally:
            self._sleep = None

    def _fire_due(self, now: float) -> None:
        """Fire every timer due by `now`, in deadline order."""
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            timer: Timer | None = entry[2]
            if timer is None:
                self._tombstones -= 1
                continue
            timer._entry = None
            timer._fire(now)
            if timer.active:
                self._push(timer)
