"""Bounded mailboxes with a declared overflow policy.

A mailbox has one reader, the actor that owns it, and any number of writers.
It is a deque guarded by trio's low-level wake-up primitives rather than a
trio memory channel: a memory channel cannot drop its oldest message or
conflate by key, and an idle actor should cost as little memory as we can make
it (see docs/benchmarks.md).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs
import trio

from .errors import ActorExitedError, MailboxFullError

# How many messages an actor's mailbox holds unless its spec says otherwise.
# A sender that outruns the actor by this much meets the overflow policy.
DEFAULT_MAILBOX_CAPACITY = 1024

# How many messages one wake-up of the actor takes at most. A burst costs one
# wake-up per batch, while a full mailbox still lets other tasks run between
# batches.
DEFAULT_BATCH_SIZE = 64


class Overflow(enum.Enum):
    """What a full mailbox does with one more message."""

    #: `send` waits for room (backpressure); `send_nowait` raises MailboxFullError.
    WAIT = "wait"
    #: Both `send` and `send_nowait` raise MailboxFullError at once.
    FAIL = "fail"
    #: The incoming message is dropped and counted.
    DROP_NEWEST = "drop_newest"
    #: The oldest queued message is dropped, and counted, to make room.
    DROP_OLDEST = "drop_oldest"
    #: Only the latest message per key is kept: a message whose key is already
    #: queued replaces the queued one in its place (counted as a drop). A new
    #: key arriving at a full mailbox drops the oldest key's message.
    CONFLATE = "conflate"


# The queue of an empty mailbox: a deque costs 760 bytes even when empty, so
# an idle actor holds this shared empty tuple instead and gets a deque on its
# first message back (see docs/benchmarks.md for what an idle actor costs).
_EMPTY: tuple[()] = ()

# What a lookup in the runtime messages returns for "not there" (a runtime
# message may itself be None).
_ABSENT: Any = object()


class Envelope:
    """A message the runtime built around a request (a call).

    A mailbox never conflates one (it has no key of the user's), and tells
    it when an overflow policy drops it, so that its sender hears of it at
    once instead of waiting out a timeout.
    """

    __slots__ = ()

    def _dropped(self, error: Exception) -> None:
        """The mailbox dropped this message; `error` says why."""


class Delivery:
    """A runtime message that stands in the queue for another (a timer's tick).

    It goes in with `deliver_system`. When it leaves the queue, read or
    removed, the mailbox calls `_taken()` once, and a reader gets `payload`
    in its place: so the runtime learns when what it delivered has been
    taken, and one object can carry the same payload again and again
    without ever being queued twice.
    """

    __slots__ = ()

    @property
    def payload(self) -> Any:
        """What the reader receives in this delivery's place."""
        return self

    def _taken(self) -> None:
        """This delivery has left the queue (read, removed or cleared)."""


# No validation on assignment: the capacity is checked once, at construction,
# and the hot path (every send and receive sets a few fields) must not pay
# attrs' per-assignment hook.
@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Mailbox:
    """A bounded FIFO of messages for one actor.

    Messages from one sender arrive in the order they were sent. System
    messages (monitors' `Down`, links' `Exit`, a supervisor's child reports,
    timers' ticks) go in with `deliver_system`, past the capacity, so that
    the runtime never loses one; there is at most one queued per monitor,
    link, child or timer.
    """

    capacity: int = attrs.field(default=DEFAULT_MAILBOX_CAPACITY)
    overflow: Overflow = Overflow.WAIT
    #: For CONFLATE: the key of a message; None means "never conflate this one".
    key: Callable[[Any], Hashable] | None = None
    owner: str = "actor"
    #: Messages dropped by the overflow policy, all kinds together.
    dropped: int = 0
    _queue: Any = attrs.field(init=False)
    _receiver: trio.lowlevel.Task | None = attrs.field(init=False, default=None)
    _senders: trio.lowlevel.ParkingLot | None = attrs.field(init=False, default=None)
    _closed_reason: Any = attrs.field(init=False, default=None)
    # The runtime messages queued now, by id(), so that no overflow policy
    # drops one; holding each keeps its id from being reused meanwhile.
    # Created on first use, like the queue.
    _runtime: dict[int, Any] | None = attrs.field(init=False, default=None)

    @capacity.validator
    def _check_capacity(self, _attribute: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"mailbox capacity must be at least 1, not {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.overflow is Overflow.CONFLATE:
            if self.key is None:
                raise ValueError("a conflating mailbox needs a key function: key=lambda m: ...")
            self._queue = OrderedDict()
        else:
            self._queue = _EMPTY

    def __repr__(self) -> str:
        return (
            f"<Mailbox of {self.owner} {len(self._queue)}/{self.capacity} "
            f"{self.overflow.value} dropped={self.dropped}>"
        )

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    # --- writing -----------------------------------------------------------

    def send_nowait(self, message: Any) -> bool:
        """Put `message` in the mailbox without waiting.

        Returns False if the overflow policy dropped the message. Raises
        MailboxFullError when the mailbox is full and its policy is WAIT or
        FAIL, and ActorExitedError when the mailbox is closed.
        """
        if self._closed_reason is not None:
            raise ActorExitedError(self.owner, self._closed_reason)
        if self.overflow is Overflow.CONFLATE:
            return self._put_conflated(message)
        queue = self._queue
        if queue is _EMPTY:
            queue = self._queue = deque()
        elif len(queue) >= self.capacity:
            overflow = self.overflow
            if overflow is Overflow.DROP_NEWEST:
                self.dropped += 1
                return False
            if overflow is Overflow.DROP_OLDEST:
                self._drop_oldest()
            else:
                raise MailboxFullError(self.owner, self.capacity)
        queue.append(message)
        if self._receiver is not None:
            self._wake_receiver()
        return True

    def _put_conflated(self, message: Any) -> bool:
        queue: OrderedDict[Any, Any] = self._queue
        assert self.key is not None
        key = None if isinstance(message, Envelope) else self.key(message)
        if key is None:
            key = object()
        elif key in queue:
            queue[key] = message
            self.dropped += 1
            return True
        if len(queue) >= self.capacity:
            self._drop_oldest()
        queue[key] = message
        if self._receiver is not None:
            self._wake_receiver()
        return True

    def _drop_oldest(self) -> None:
        """Drop the oldest message that is not a runtime message, and count it.

        If only runtime messages are queued, nothing is dropped: they are past
        the capacity, and the new message takes the room they leave.
        """
        queue = self._queue
        runtime = self._runtime
        if not runtime:
            if self.overflow is Overflow.CONFLATE:
                message = queue.popitem(last=False)[1]
            else:
                message = queue.popleft()
        elif self.overflow is Overflow.CONFLATE:
            key = next((k for k, m in queue.items() if id(m) not in runtime), None)
            if key is None:
                return
            message = queue.pop(key)
        else:
            index = next((i for i, m in enumerate(queue) if id(m) not in runtime), None)
            if index is None:
                return
            message = queue[index]
            del queue[index]
        self.dropped += 1
        if isinstance(message, Envelope):
            message._dropped(MailboxFullError(self.owner, self.capacity))

    def _take_runtime(self, batch: list[Any]) -> None:
        """Note that `batch` has left the queue to be read; open the deliveries in it.

        A delivery is replaced, in place, by its payload.
        """
        runtime = self._runtime
        assert runtime is not None
        for index, message in enumerate(batch):
            if runtime.pop(id(message), _ABSENT) is not _ABSENT and isinstance(message, Delivery):
                batch[index] = message.payload
                message._taken()
            if not runtime:
                break
        if not runtime:
            self._runtime = None

    def _discard_runtime(self, kept: Iterable[Any]) -> None:
        """Forget the runtime messages not in `kept`: tell the deliveries among them."""
        runtime = self._runtime
        assert runtime is not None
        still = {id(m): m for m in kept if id(m) in runtime}
        for key, message in runtime.items():
            if key not in still and isinstance(message, Delivery):
                message._taken()
        self._runtime = still or None

    async def send(self, message: Any) -> bool:
        """Put `message` in the mailbox, waiting for room if the policy is WAIT.

        Other policies never wait: they behave as `send_nowait`. Raises
        ActorExitedError if the mailbox closes, even while waiting; if the
        wait is cancelled the message was not delivered.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.overflow is Overflow.WAIT:
            while len(self._queue) >= self.capacity and self._closed_reason is None:
                if self._senders is None:
                    self._senders = trio.lowlevel.ParkingLot()
                await self._senders.park()
        delivered = self.send_nowait(message)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return delivered

    def deliver_system(self, message: Any) -> None:
        """Put a runtime message in, past the capacity; a closed mailbox ignores it.

        Once the mailbox is closed its actor reads no more messages, so there
        is nobody left to tell.
        """
        if self._closed_reason is not None:
            return
        if self._runtime is None:
            self._runtime = {}
        self._runtime[id(message)] = message
        if self.overflow is Overflow.CONFLATE:
            self._queue[object()] = message
        else:
            if self._queue is _EMPTY:
                self._queue = deque()
            self._queue.append(message)
        if self._receiver is not None:
            self._wake_receiver()

    def close(self, reason: Any) -> None:
        """Take no more messages; the reader still drains what is queued.

        Waiting senders are woken and raise ActorExitedError. Closing twice
        keeps the first reason.
        """
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        if self._receiver is not None:
            self._wake_receiver()
        if self._senders is not None:
            self._senders.unpark_all()

    def clear(self) -> int:
        """Discard every queued message; return how many there were."""
        count = len(self._queue)
        if self._runtime:
            self._discard_runtime(())
        if self._queue is not _EMPTY:
            self._queue.clear()
        self._wake_senders()
        return count

    def remove_if(self, predicate: Callable[[Any], bool]) -> int:
        """Discard queued messages for which `predicate` is true; return how many.

        `predicate` sees each message as the reader would receive it.
        """
        before = len(self._queue)
        if not before:
            return 0

        def matches(message: Any) -> bool:
            return predicate(message.payload if isinstance(message, Delivery) else message)

        if self.overflow is Overflow.CONFLATE:
            for key in [k for k, m in self._queue.items() if matches(m)]:
                del self._queue[key]
        else:
            self._queue = deque(m for m in self._queue if not matches(m))
        if self._runtime:
            kept = self._queue.values() if isinstance(self._queue, dict) else self._queue
            self._discard_runtime(kept)
        removed = before - len(self._queue)
        if removed:
            self._wake_senders()
        return removed

    # --- reading -----------------------------------------------------------

    def _wake_receiver(self) -> None:
        task = self._receiver
        self._receiver = None
        assert task is not None
        trio.lowlevel.reschedule(task)

    def _wake_senders(self) -> None:
        if self._senders is not None and self._senders:
            self._senders.unpark(count=self.capacity - len(self._queue))

    def _pop(self) -> Any:
        if self.overflow is Overflow.CONFLATE:
            message = self._queue.popitem(last=False)[1]
        else:
            message = self._queue.popleft()
            if not self._queue:
                self._queue = _EMPTY
        if self._runtime:
            batch = [message]
            self._take_runtime(batch)
            message = batch[0]
        return message

    def _become_receiver(self) -> None:
        if self._receiver is not None:
            raise RuntimeError(f"mailbox of {self.owner} has one reader; another task is waiting")
        self._receiver = trio.lowlevel.current_task()

    def _abort_receive(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def receive(self) -> Any:
        """Take the oldest message, waiting for one.

        Raises trio.EndOfChannel once the mailbox is closed and drained.
        """
        return (await self.receive_batch(1))[0]

    async def receive_batch(self, max_messages: int = DEFAULT_BATCH_SIZE) -> list[Any]:
        """Take up to `max_messages` messages: wait for the first, take the rest as queued.

        A burst costs one wake-up. Raises trio.EndOfChannel once the mailbox
        is closed and drained.

        A checkpoint either way, as trio's channels: a reader that finds
        messages queued yields once (cancel-shielded) before it returns; a
        reader that waited returns in the very task step it was woken in,
        so a message's wake-up costs the reader one pass of trio's scheduler,
        not two.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not self._queue:
            if self._closed_reason is not None:
                raise trio.EndOfChannel
            waited = True
            self._become_receiver()
            await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
        queue = self._queue
        if self.overflow is Overflow.CONFLATE:
            count = min(len(queue), max_messages)
            batch = [queue.popitem(last=False)[1] for _ in range(count)]
        elif len(queue) <= max_messages:
            batch = list(queue)
            self._queue = _EMPTY
        else:
            popleft = queue.popleft
            batch = [popleft() for _ in range(max_messages)]
        if self._runtime:
            self._take_runtime(batch)
        self._wake_senders()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    def receive_nowait(self) -> Any:
        """Take the oldest message if there is one; raise trio.WouldBlock if not.

        Raises trio.EndOfChannel once the mailbox is closed and drained.
        """
        if not self._queue:
            if self._closed_reason is not None:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        message = self._pop()
        self._wake_senders()
        return message
